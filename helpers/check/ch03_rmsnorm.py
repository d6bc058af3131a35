"""Chapter 03's exercise checks: RMSNorm."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..checkpoint import random_state_dict
from ..config import ModelConfig
from ..rmsnorm import rms_norm as _rms_norm
from .common import _gen, call, compare, equal, exercise


@exercise
def rms_norm(fn: Callable) -> tuple[float | None, int]:
    """fn(x, weight, eps) -> RMSNorm of x over the last dimension."""
    gen, worst = _gen(0), 0.0
    for shape in [(4, 8), (2, 3, 16), (1, 64)]:
        x = torch.randn(shape, generator=gen) * 3
        w = torch.randn(shape[-1], generator=gen)
        for eps in (1e-5, 1e-2):
            case = f"x of shape {shape}, eps {eps}"
            worst = max(worst, compare(case, call(case, fn, x, w, eps), _rms_norm(x, w, eps)))
    return worst, 6


@exercise
def eps_after_scaling(fn: Callable) -> tuple[float | None, int]:
    """fn(eps, c) -> the eps' for which rms_norm(c * x, g, eps) == rms_norm(x, g, eps') for every x."""
    gen, worst = _gen(3), 0.0
    cases = [(1e-5, 1000.0), (1e-5, 0.01), (1e-2, 3.0), (0.5, 0.5)]
    for eps, c in cases:
        x, g = torch.randn(4, 32, generator=gen, dtype=torch.float64) * 0.1, torch.randn(32, dtype=torch.float64)
        case = f"eps {eps}, scale c = {c}"
        eps2 = call(case, fn, eps, c)
        want = _rms_norm(c * x, g, eps)
        worst = max(worst, compare(case, _rms_norm(x, g, eps2), want, tol=1e-5))
    return worst, len(cases)


@exercise
def norm_parameters(fn: Callable) -> tuple[float | None, int]:
    """fn(sd) -> the number of RMSNorm gain parameters in a state dict."""
    shapes = [ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, multiple_of=16)]
    shapes.append(ModelConfig(dim=48, n_layers=5, n_heads=4, n_kv_heads=1, vocab_size=70, multiple_of=16))
    for cfg in shapes:
        case = f"{cfg.n_layers} layers of width {cfg.dim}"
        equal(case, call(case, fn, random_state_dict(cfg)), (2 * cfg.n_layers + 1) * cfg.dim)
    return None, len(shapes)
