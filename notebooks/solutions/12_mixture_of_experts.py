"""Chapter 12: mixture of experts."""

import torch

from helpers import check


def my_route(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    top, experts = torch.topk(logits.float(), k, dim=-1)
    return torch.softmax(top, dim=-1), experts  # softmax over the k kept = renormalised top-k of the softmax


def my_load_balancing_loss(logits: torch.Tensor, k: int) -> torch.Tensor:
    n, e = logits.shape
    probs = torch.softmax(logits.float(), dim=-1)
    chosen = torch.topk(probs, k, dim=-1).indices
    f = torch.zeros(e).index_add_(0, chosen.reshape(-1), torch.ones(n * k)) / n
    return e * (f * probs.mean(dim=0)).sum()


def my_experts_touched(n_experts: int, k: int, batch: int) -> float:
    # an expert is skipped by one token with probability (E - k) / E, by all B tokens with its B-th power
    return n_experts * (1 - ((n_experts - k) / n_experts) ** batch)


EXERCISES = [
    (check.moe_route, my_route),
    (check.load_balance, my_load_balancing_loss),
    (check.experts_touched, my_experts_touched),
]
