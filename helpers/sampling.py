"""Choosing the next token from a vector of logits: greedy, temperature, top-k, top-p.

Plain functions of a logit tensor, nothing else of the book: the generation loops
that call them are in ``generation``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


def check_sampling_args(temperature: float | None, top_k: int | None, top_p: float | None) -> None:
    """Reject settings that have no meaning, with the range that does."""
    if temperature is not None and not (
        isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(
            f"temperature must be a finite number > 0 (got {temperature}); leave it unset for greedy decoding"
        )
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (got {top_k})")
    if top_p is not None and not (isinstance(top_p, int | float) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (got {top_p})")


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """The most likely token: (..., V) -> (...)"""
    return logits.argmax(dim=-1)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """The softmax of the logits, in float64: (..., V) -> (..., V).

    A float32 softmax over 128,256 logits sums to 1 only within about 1e-4, by an amount
    that depends on the processor (its vector width sets the order of the additions); in
    float64 it is below 1e-10 on every machine, so a sampled token, a nucleus and a
    printed probability are the same everywhere.
    """
    return torch.softmax(logits.double(), dim=-1)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide logits by T: T < 1 sharpens the distribution, T > 1 flattens it."""
    check_sampling_args(temperature, None, None)
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits, set the rest to -inf. (..., V) -> (..., V)"""
    check_sampling_args(None, k, None)
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches p.

    The most likely token is always kept. (..., V) -> (..., V)
    """
    check_sampling_args(None, None, p)
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = probabilities(sorted_logits)
    # Probability of all strictly more likely tokens: a token stays while that is below p.
    before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next_token(
    logits: torch.Tensor,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """One token id from a (V,) logit vector: greedy when temperature is None, else sampled.

    Order: temperature, then top-k, then top-p, then a draw from the softmax.
    """
    check_sampling_args(temperature, top_k, top_p)
    refuse_nan(logits)
    if temperature is None:
        return int(greedy(logits))
    # float64 (as ``probabilities``), so that a temperature as small as 1e-300 still divides; shifting
    # by the maximum changes no probability, and keeps a tiny T from overflowing to inf.
    logits = logits.double().cpu()  # the draw uses a CPU generator
    logits = apply_temperature(logits - logits.max(), temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = probabilities(logits)
    refuse_nan(probs)  # infinite logits (an overflow) give NaN here
    return int(torch.multinomial(probs, 1, generator=generator))


def refuse_nan(scores: torch.Tensor) -> None:
    """No token can be chosen from NaN logits or probabilities: say so instead of picking token 0."""
    if torch.isnan(scores).any():
        raise ValueError("the logits hold NaN, so no token can be chosen: the weights or the input are broken")


@dataclass(frozen=True)
class Sampling:
    """How a generation loop picks each token: greedy (no temperature), or a draw at
    ``temperature`` after the top-k and top-p filters, from a generator seeded with ``seed``
    (None: PyTorch's global one). Settings with no meaning are refused when it is made."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        check_sampling_args(self.temperature, self.top_k, self.top_p)

    def sampler(self) -> Callable[[torch.Tensor], int]:
        """logits (V,) -> the next id; one generation's draws, from a generator of its own."""
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        return lambda logits: sample_next_token(logits, self.temperature, self.top_k, self.top_p, generator)


GREEDY = Sampling()
