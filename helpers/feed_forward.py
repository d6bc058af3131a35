"""The SwiGLU feed-forward network of each block."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feed_forward(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    """SwiGLU: W2 (SiLU(W1 x) * W3 x).

    x: (..., d); w1, w3: (hidden, d); w2: (d, hidden) -> (..., d). W1 x is the gate:
    SiLU of it decides, per hidden unit, how much of the value W3 x passes.
    """
    return (F.silu(x @ w1.T) * (x @ w3.T)) @ w2.T
