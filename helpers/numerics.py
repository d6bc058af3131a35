"""How far apart two float32 computations of one value may lie: the book's one rule for tolerances.

Chapter 03 derives it where the book first compares two implementations; every later check and
the tests use it. A tolerance comes from the values being compared, never from a literal: a bound
that is right for the embedded model's small activations on one processor is wrong for a real
model's larger ones, or for another processor's summation order.
"""

from __future__ import annotations

import math

import torch

from .config import ModelConfig
from .rmsnorm import rms_norm

# A float32 operation rounds its result by at most U32 = 2^-24 of it (the unit roundoff).
U32 = 2.0**-24
# A sum of n terms, added in whatever order a processor's kernels choose (vector width, threads,
# blocking), lies within n * U32 * sum|terms| of the exact sum, and with overwhelming probability
# within LAMBDA * sqrt(n) * U32 * sum|terms|: independent rounding errors add like a random walk
# (Higham and Mary, "A new approach to probabilistic rounding error analysis", SIAM J. Sci.
# Comput. 41, 2019: the bound fails with probability below 2n exp(-LAMBDA^2 / 2), under 1e-7 for
# LAMBDA = 7 and n up to 10^4).
LAMBDA = 7.0


def float32_tolerance(n_terms: int, magnitude: float, evaluations: int = 2) -> float:
    """How far apart ``evaluations`` float32 computations of one value may lie, each within the
    probabilistic bound of the exact value: sums of ``n_terms`` terms whose absolute values add
    up to ``magnitude``. For a chain of sums, ``n_terms`` is their lengths added up."""
    return evaluations * LAMBDA * math.sqrt(n_terms) * U32 * magnitude


def sum_size(a: torch.Tensor, b: torch.Tensor) -> float:
    """The size of the largest sum in the product ``a @ b``: max over (i, j) of sum_k |a_ik| |b_kj|.

    a: (..., n, k), b: (..., k, m) -> a number. It is what the rounding error of a @ b scales with:
    the sum's terms can cancel, their rounding errors do not.
    """
    with torch.no_grad():
        return float((a.abs().double() @ b.abs().double()).max())


def swiglu_size(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> float:
    """The size of a SwiGLU's last sum: max over outputs of sum_j |h_j| |W_2[i, j]|, with
    h = SiLU(x W_1^T) * (x W_3^T). Weights (F, d), (d, F), (F, d), or stacks of experts
    (E, F, d), (E, d, F), (E, F, d) (the largest over the experts)."""
    with torch.no_grad():
        x = x.reshape(-1, x.shape[-1]).expand(*w1.shape[:-2], -1, -1)  # (N, d), once per expert if stacked
        h = torch.nn.functional.silu(x @ w1.mT) * (x @ w3.mT)
        return sum_size(h, w2.mT)


def block_terms(cfg: ModelConfig, n_positions: int) -> int:
    """The summed lengths of the sums one block's output depends on in sequence: two norms' means
    (d each), a query (d), a score (head_dim), the weighted values (N), W^O (H head_dim), W_1 (d)
    and W_2 (F). The block starts with a norm, so each stage passes the relative error of the
    ones before it on at about unit gain."""
    return 4 * cfg.dim + cfg.head_dim + n_positions + cfg.n_heads * cfg.head_dim + cfg.ffn_hidden_dim


def chain_terms(cfg: ModelConfig, n_positions: int) -> int:
    """The summed lengths of the sums one logit depends on in sequence: every block's
    (``block_terms``), then the final norm and the LM head (d each)."""
    return cfg.n_layers * block_terms(cfg, n_positions) + 2 * cfg.dim


def logit_tolerance(hidden: torch.Tensor, sd: dict, cfg: ModelConfig, evaluations: int = 2) -> float:
    """``float32_tolerance`` for the logits computed from the last block's output ``hidden``
    (N, d): the whole chain of sums, at the size of the largest LM-head sum,
    max_j sum_i |RMSNorm(X^L)_i| |W_out[j, i]| (computed from the values, not assumed)."""
    h = rms_norm(hidden, sd["norm.weight"], cfg.norm_eps)
    return float32_tolerance(chain_terms(cfg, hidden.shape[-2]), sum_size(h, sd["output.weight"].mT), evaluations)
