"""Chapter 08's exercise checks: LM head and sampling."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..sampling import top_k_filter, top_p_filter
from .common import _gen, call, compare, exercise


@exercise
def top_k(fn: Callable) -> tuple[float | None, int]:
    """fn(logits, k) -> logits with all but the k largest set to -inf."""
    gen = _gen(5)
    cases = 0
    for k in (1, 3, 10, 12):
        logits = torch.randn(10, generator=gen)
        got, want = call(f"k={k} of 10 logits", fn, logits.clone(), k), top_k_filter(logits, k)
        kept = int(torch.isfinite(got).sum()) if isinstance(got, torch.Tensor) else "?"
        compare(f"k={k} of 10 logits (you kept {kept}, expected {int(torch.isfinite(want).sum())})", got, want)
        cases += 1
    return None, cases


@exercise
def top_p(fn: Callable) -> tuple[float | None, int]:
    """fn(logits, p) -> logits outside the nucleus set to -inf."""
    gen = _gen(6)
    for p in (0.1, 0.5, 0.9, 1.0):
        logits = torch.randn(12, generator=gen) * 2
        got, want = call(f"p={p}", fn, logits.clone(), p), top_p_filter(logits, p)
        kept = int(torch.isfinite(got).sum()) if isinstance(got, torch.Tensor) else "?"
        compare(f"p={p} (you kept {kept} tokens, the nucleus has {int(torch.isfinite(want).sum())})", got, want)
    return None, 4


@exercise
def probability_at_temperature(fn: Callable) -> tuple[float | None, int]:
    """fn(logits, token, T) -> probability of ``token`` after dividing the logits by T, for any
    T > 0: also a T so small that logits / T overflows float32."""
    gen, worst = _gen(11), 0.0
    logits = torch.randn(50, generator=gen) * 3
    for t in (2.0, 1.0, 0.1, 1e-3, 1e-40):
        for token in (int(logits.argmax()), 7):
            want = torch.softmax((logits.double() - logits.double().max()) / t, -1)[token]
            case = f"T={t:g}, token {token}"
            got = torch.as_tensor(call(case, fn, logits, token, t), dtype=torch.float64)
            worst = max(worst, compare(case, got, want, tol=1e-5))
    return worst, 10
