"""Chapter 06's exercise checks: one layer."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..checkpoint import expected_shapes, random_state_dict
from ..feed_forward import feed_forward as _feed_forward
from ..model import transformer_block
from ..rope import precompute_freqs_cis
from .common import SMALL, _gen, call, compare, equal, exercise


@exercise
def feed_forward(fn: Callable) -> tuple[float | None, int]:
    """fn(x, w1, w2, w3) -> SwiGLU feed-forward."""
    gen, worst = _gen(4), 0.0
    for n, d, f in [(3, 8, 16), (5, 16, 40)]:
        x = torch.randn(n, d, generator=gen)
        w1, w3 = torch.randn(f, d, generator=gen), torch.randn(f, d, generator=gen)
        w2 = torch.randn(d, f, generator=gen)
        case = f"N={n}, d={d}, d_ff={f}"
        worst = max(worst, compare(case, call(case, fn, x, w1, w2, w3), _feed_forward(x, w1, w2, w3), 1e-4))
    return worst, 2


@exercise
def block(fn: Callable) -> tuple[float | None, int]:
    """fn(x, sd, layer, cfg, freqs_cis) -> X^{l+1} from X^l: equations (2.1) with the helpers."""
    gen, worst = _gen(6), 0.0
    for cfg in SMALL:
        sd = random_state_dict(cfg, seed=6, std=0.2)
        x = torch.randn(7, cfg.dim, generator=gen)
        freqs = precompute_freqs_cis(cfg, 7)
        for layer in range(cfg.n_layers):
            want = transformer_block(x, sd, layer, cfg, freqs)
            case = f"d={cfg.dim}, layer {layer}"
            worst = max(worst, compare(case, call(case, fn, x, sd, layer, cfg, freqs), want))
    return worst, sum(c.n_layers for c in SMALL)


@exercise
def block_parameters(fn: Callable) -> tuple[float | None, int]:
    """fn(cfg) -> {"attention": ..., "feed_forward": ..., "norms": ...}: parameters of one block."""
    from ..config import llama_3_2_1b_config

    for cfg in [*SMALL, llama_3_2_1b_config()]:
        shapes = {k: math.prod(s) for k, s in expected_shapes(cfg).items() if k.startswith("layers.0.")}
        want = {
            "attention": sum(n for k, n in shapes.items() if ".attention.w" in k),
            "feed_forward": sum(n for k, n in shapes.items() if ".feed_forward." in k),
            "norms": sum(n for k, n in shapes.items() if k.endswith("norm.weight")),
        }
        case = f"d={cfg.dim}, d_ff={cfg.ffn_hidden_dim}, H={cfg.n_heads}, G={cfg.n_kv_heads}"
        equal(case, dict(call(case, fn, cfg)), want)
    return None, 3
