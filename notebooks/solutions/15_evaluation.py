"""Chapter 15: measuring a model."""

import random

import torch

from helpers import check


def my_continuation_logprob(logprobs: torch.Tensor, ids: list[int], n_context: int) -> float:
    """Row t predicts token t + 1: the continuation's tokens are predicted by rows n_context - 1 onwards."""
    rows = torch.arange(n_context - 1, len(ids) - 1)
    return float(logprobs[rows, torch.tensor(ids[n_context:])].sum())


def my_acc_bytes(loglikelihoods: list[float], choices: list[str]) -> int:
    scores = [ll / len(c.encode("utf-8")) for ll, c in zip(loglikelihoods, choices, strict=True)]
    return scores.index(max(scores))


def my_resample(outcomes: list[float], rng: random.Random) -> list[float]:
    return rng.choices(outcomes, k=len(outcomes))


EXERCISES = [
    (check.continuation_logprob, my_continuation_logprob),
    (check.acc_bytes, my_acc_bytes),
    (check.resample, my_resample),
]
