"""The SwiGLU feed-forward network of each block."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .linear import linear


def feed_forward(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    """SwiGLU: FFN(x) = (SiLU(x W1^T) * x W3^T) W2^T, each row (token) on its own.

    x: (..., d); w1, w3: (d_ff, d); w2: (d, d_ff) -> (..., d). x W1^T is the gate:
    SiLU of it decides, per hidden unit, how much of the value x W3^T passes.
    """
    return linear(F.silu(linear(x, w1)) * linear(x, w3), w2)
