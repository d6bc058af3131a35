"""Chapter 08: the LM head and sampling."""

import torch

from helpers import check


def my_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, logits.shape[-1])
    kth_largest = torch.sort(logits, descending=True).values[k - 1]
    return torch.where(logits >= kth_largest, logits, float("-inf"))


def my_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    order = torch.argsort(logits, descending=True)
    probs = torch.softmax(logits[order], dim=-1)
    keep_sorted = (torch.cumsum(probs, dim=-1) - probs) < p  # mass strictly before each token
    keep = torch.zeros_like(keep_sorted)
    keep[order] = keep_sorted
    return torch.where(keep, logits, float("-inf"))


def my_probability_at_temperature(logits: torch.Tensor, token: int, temperature: float) -> float:
    """Subtract the maximum first: softmax is unchanged, and logits / T can no longer overflow."""
    shifted = (logits.double() - logits.double().max()) / temperature
    return float(torch.softmax(shifted, dim=-1)[token])


EXERCISES = [
    (check.top_k, my_top_k),
    (check.top_p, my_top_p),
    (check.probability_at_temperature, my_probability_at_temperature),
]
