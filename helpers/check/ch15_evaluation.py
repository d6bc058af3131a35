"""Chapter 15's exercise checks: measuring a model."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import torch

from .common import _gen, equal, exercise


@exercise
def continuation_logprob(fn: Callable) -> tuple[float | None, int]:
    """fn(logprobs, ids, n_context) -> the summed log-probability of ids[n_context:], where
    logprobs (len(ids) - 1, V) holds log-softmax rows and row t predicts ids[t + 1]."""
    gen, worst, cases = _gen(15), 0.0, 0
    for n, n_context, vocab in [(6, 3, 11), (9, 1, 7), (5, 4, 13), (12, 6, 50)]:
        ids = torch.randint(0, vocab, (n,), generator=gen).tolist()
        logprobs = torch.log_softmax(torch.randn(n - 1, vocab, generator=gen, dtype=torch.float64) * 3, dim=-1)
        want = float(sum(logprobs[t, ids[t + 1]] for t in range(n_context - 1, n - 1)))
        got = fn(logprobs, ids, n_context)
        case = f"{n} tokens, the first {n_context} the context"
        if not isinstance(got, int | float) and not (isinstance(got, torch.Tensor) and got.numel() == 1):
            raise AssertionError(f"{case}: expected one number, got {type(got).__name__}")
        diff = abs(float(got) - want)
        if not math.isfinite(float(got)) or diff > 1e-9 * max(1.0, abs(want)):
            whole = float(sum(logprobs[t, ids[t + 1]] for t in range(n - 1)))
            first = float(logprobs[n_context - 1, ids[n_context]])
            hint = (
                " (that is every token after the first: score only the continuation)"
                if abs(float(got) - whole) < 1e-9
                else " (that is the first continuation token only: add them all)"
                if abs(float(got) - first) < 1e-9
                else ""
            )
            raise AssertionError(f"{case}: got {float(got):.6f}, expected {want:.6f}{hint}")
        worst, cases = max(worst, diff), cases + 1
    return worst, cases


@exercise
def acc_bytes(fn: Callable) -> tuple[float | None, int]:
    """fn(loglikelihoods, choices) -> the index of the choice with the largest log-likelihood per
    UTF-8 byte of the choice (lm-eval's acc_bytes; the first on a tie)."""
    cases = [
        ([-6.6, -5.2], ["Zürich", "Berne"], 0),  # 7 and 5 bytes: -0.94 beats -1.04; per character, Berne wins
        ([-4.4, -4.0], ["Paris", "Rome"], 0),  # per byte -0.88 vs -1.0; the raw sum picks Rome
        ([-3.0, -3.0], ["Oslo", "Bonn"], 0),  # a tie: the first
        ([-8.6, -4.1, -12.0], ["Tórshavn", "Nuuk", "Longyearbyen"], 0),  # 9, 4, 12 bytes; per character: 2
    ]
    for lls, choices, want in cases:
        got = fn(list(lls), list(choices))
        equal(f"log-likelihoods {lls} for {choices}", got, want)
    return None, len(cases)


@exercise
def resample(fn: Callable) -> tuple[float | None, int]:
    """fn(outcomes, rng) -> one bootstrap sample: len(outcomes) values drawn from outcomes WITH
    replacement, using rng (a random.Random)."""
    data = list(range(20))
    samples = [fn(list(data), random.Random(seed)) for seed in range(200)]
    for i, s in enumerate(samples):
        if not isinstance(s, list | tuple) or len(s) != len(data):
            raise AssertionError(
                f"sample {i}: expected {len(data)} values, got {len(s) if hasattr(s, '__len__') else s!r}"
            )
        if not set(s) <= set(data):
            raise AssertionError(f"sample {i}: values that are not outcomes: {sorted(set(s) - set(data))[:5]}")
    if all(sorted(s) == data for s in samples):
        raise AssertionError("every sample is a permutation of the data: draw WITH replacement (rng.choices)")
    if len({tuple(s) for s in samples}) < 150:
        raise AssertionError("different generators give the same samples: draw with the rng given")
    means = [sum(s) / len(s) for s in samples]
    centre, spread = sum(means) / len(means), math.sqrt(sum((m - 9.5) ** 2 for m in means) / len(means))
    expected = math.sqrt(sum((x - 9.5) ** 2 for x in data) / len(data) / len(data))  # sd / sqrt(n) = 1.29
    if abs(centre - 9.5) > 0.5 or not 0.75 * expected < spread < 1.25 * expected:
        raise AssertionError(
            f"200 samples' means: centre {centre:.2f} (expected 9.5), spread {spread:.2f} (expected about {expected:.2f})"
        )
    return None, len(samples)
