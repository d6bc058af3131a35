"""Chapter 12's exercise checks: mixture of experts."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .common import _gen, call, compare, exercise


def _as_dense(weights: torch.Tensor, experts: torch.Tensor, n_experts: int) -> torch.Tensor:
    """(N, k) weights and expert ids -> (N, E), zero for the experts not chosen: order-free."""
    return torch.zeros(weights.shape[0], n_experts).scatter(1, torch.as_tensor(experts).long(), weights.float())


@exercise
def moe_route(fn: Callable) -> tuple[float | None, int]:
    """fn(logits (N, E), k) -> (weights (N, k), experts (N, k)): Mixtral's top k of the softmax, renormalised."""
    from ..moe import route

    gen = _gen(15)
    cases = {
        "8 tokens, 8 experts, k=2": (torch.randn(8, 8, generator=gen), 2),
        "k=1 (every weight is 1)": (torch.randn(5, 4, generator=gen), 1),
        "k=E (the plain softmax)": (torch.randn(3, 4, generator=gen), 4),
        "large logits": (torch.randn(4, 6, generator=gen) * 50, 3),
    }
    worst = 0.0
    for case, (logits, k) in cases.items():
        weights, experts = call(case, fn, logits.clone(), k)
        weights, experts = torch.as_tensor(weights), torch.as_tensor(experts)
        if weights.shape != (logits.shape[0], k) or experts.shape != (logits.shape[0], k):
            raise AssertionError(f"{case}: expected weights and experts of shape {(logits.shape[0], k)}")
        want_w, want_e = route(logits, k, "softmax")
        got = _as_dense(weights, experts, logits.shape[1])
        worst = max(worst, compare(case, got, _as_dense(want_w, want_e, logits.shape[1])))
    return worst, len(cases)


@exercise
def load_balance(fn: Callable) -> tuple[float | None, int]:
    """fn(logits (N, E), k) -> the load-balancing loss E * sum_e f_e P_e of one layer."""
    from ..moe import load_balancing_loss

    gen = _gen(16)
    collapsed = torch.zeros(20, 4)
    collapsed[:, 2] = 20.0
    cases = {
        "random logits, k=1": (torch.randn(30, 8, generator=gen), 1),
        "random logits, k=2": (torch.randn(30, 8, generator=gen) * 3, 2),
        "all tokens to expert 2": (collapsed, 1),
    }
    worst = 0.0
    for case, (logits, k) in cases.items():
        got = torch.as_tensor(call(case, fn, logits.clone(), k)).float().reshape(())
        worst = max(worst, compare(case, got, load_balancing_loss(logits, k)))
    return worst, len(cases)


@exercise
def experts_touched(fn: Callable) -> tuple[float | None, int]:
    """fn(n_experts, k, batch) -> the expected number of distinct experts a decode step at that
    batch size reads in one layer, each token choosing k different experts uniformly at random."""
    cases = [(16, 1, 1), (16, 1, 16), (8, 2, 4), (8, 2, 64), (128, 1, 64), (8, 8, 3)]
    worst = 0.0
    for e, k, b in cases:
        want = torch.tensor(e * (1 - ((e - k) / e) ** b))  # P(an expert is not among a token's k) = (E-k)/E
        case = f"E={e}, k={k}, batch {b}"
        got = torch.as_tensor(call(case, fn, e, k, b), dtype=torch.float64).float()
        worst = max(worst, compare(case, got, want.float(), tol=1e-4))
    return worst, len(cases)
