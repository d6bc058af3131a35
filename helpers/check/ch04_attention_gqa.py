"""Chapter 04's exercise checks: attention."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..attention import scaled_dot_product
from ..checkpoint import expected_shapes
from ..config import ModelConfig
from .common import _gen, call, compare, equal, exercise


@exercise
def causal_attention(fn: Callable) -> tuple[float | None, int]:
    """fn(q, k, v) with q (H, N, hd), k and v (G, N, hd) -> (H, N, hd): causal, GQA."""
    gen, worst = _gen(2), 0.0
    for h, h_kv, n, hd in [(4, 4, 5, 8), (8, 2, 6, 16), (4, 1, 3, 4)]:
        q = torch.randn(h, n, hd, generator=gen)
        k, v = torch.randn(h_kv, n, hd, generator=gen), torch.randn(h_kv, n, hd, generator=gen)
        case = f"H={h}, G={h_kv}, N={n}"
        worst = max(worst, compare(case, call(case, fn, q, k, v), scaled_dot_product(q, k, v)))
    return worst, 3


@exercise
def attention_parameters(fn: Callable) -> tuple[float | None, int]:
    """fn(d, H, G) -> parameters of one attention layer: W^Q, W^K, W^V, W^O, with G key/value heads."""
    cases = [(2048, 32, 8), (2048, 32, 32), (2048, 32, 1), (128, 8, 2), (96, 6, 3)]
    for d, h, g in cases:
        cfg = ModelConfig(dim=d, n_layers=1, n_heads=h, n_kv_heads=g, vocab_size=2)
        want = sum(math.prod(s) for k, s in expected_shapes(cfg).items() if ".attention.w" in k)
        equal(f"d={d}, H={h}, G={g}", call(f"d={d}, H={h}, G={g}", fn, d, h, g), want)
    return None, len(cases)


@exercise
def per_head_attention(fn: Callable) -> tuple[float | None, int]:
    """fn(x, wq, wk, wv, wo, H, G) -> (N, d): causal attention (no RoPE) head by head, each query
    head h reading key/value head h // (H/G), the heads concatenated and mixed by wo."""
    gen, worst = _gen(4), 0.0
    for d, h, g, n in [(32, 4, 2, 5), (48, 6, 6, 4), (24, 4, 1, 6)]:
        hd = d // h
        x = torch.randn(n, d, generator=gen)
        wq, wo = torch.randn(d, d, generator=gen) / d**0.5, torch.randn(d, d, generator=gen) / d**0.5
        wk, wv = (torch.randn(g * hd, d, generator=gen) / d**0.5 for _ in range(2))
        q, k, v = (x @ w.T for w in (wq, wk, wv))
        out = scaled_dot_product(
            q.view(n, h, hd).transpose(0, 1), k.view(n, g, hd).transpose(0, 1), v.view(n, g, hd).transpose(0, 1)
        )
        want = out.transpose(0, 1).reshape(n, d) @ wo.T
        case = f"d={d}, H={h}, G={g}, N={n}"
        worst = max(worst, compare(case, call(case, fn, x, wq, wk, wv, wo, h, g), want))
    return worst, 3
