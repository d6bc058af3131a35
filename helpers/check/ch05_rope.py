"""Chapter 05's exercise checks: RoPE."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..config import ModelConfig
from ..rope import apply_rotary_emb, precompute_freqs_cis, rope_frequencies, scale_frequencies
from .common import _gen, call, compare, exercise


@exercise
def rope(fn: Callable) -> tuple[float | None, int]:
    """fn(x, freqs_cis) with x (N, H, hd) -> x rotated (Meta's interleaved pairs)."""
    gen, worst = _gen(3), 0.0
    for n, h, hd in [(6, 2, 8), (3, 4, 16)]:
        cfg = ModelConfig(dim=h * hd, n_layers=1, n_heads=h, n_kv_heads=h, vocab_size=2)
        freqs = precompute_freqs_cis(cfg, n)
        x = torch.randn(n, h, hd, generator=gen)
        case = f"N={n}, H={h}, hd={hd}"
        worst = max(worst, compare(case, call(case, fn, x, freqs), apply_rotary_emb(x, x, freqs)[0]))
    return worst, 2


@exercise
def rope_scaling(fn: Callable) -> tuple[float | None, int]:
    """fn(freqs, factor) -> Llama 3 scaled frequencies (low 1, high 4, original context 8192)."""
    worst = 0.0
    for hd in (64, 128):
        freqs = rope_frequencies(hd, 500000.0)
        for factor in (8.0, 32.0):
            case = f"head_dim {hd}, factor {factor:g}"
            got = call(case, fn, freqs, factor)
            worst = max(worst, compare(case, got, scale_frequencies(freqs, factor), tol=1e-9))
    return worst, 4


@exercise
def turn_angles(fn: Callable) -> tuple[float | None, int]:
    """fn(a, b) with a, b (hd,) the same vector rotated at two positions -> the angle each pair
    turned from a to b, in (-pi, pi]: (hd/2,)."""
    gen, worst = _gen(5), 0.0
    freqs = rope_frequencies(16, 10000.0)
    for i, j in [(0, 1), (3, 7), (10, 2)]:
        x = torch.randn(1, 1, 16, generator=gen, dtype=torch.float64)
        table = torch.polar(
            torch.ones(20, 8, dtype=torch.float64), torch.outer(torch.arange(20.0).double(), freqs.double())
        )
        a, b = apply_rotary_emb(x, x, table[i : i + 1])[0][0, 0], apply_rotary_emb(x, x, table[j : j + 1])[0][0, 0]
        want = torch.remainder((j - i) * freqs.double() + math.pi, 2 * math.pi) - math.pi
        want = torch.where(want <= -math.pi + 1e-12, want + 2 * math.pi, want)
        case = f"positions {i} -> {j}"
        worst = max(worst, compare(case, torch.as_tensor(call(case, fn, a, b)).double(), want, tol=1e-6))
    return worst, 3
