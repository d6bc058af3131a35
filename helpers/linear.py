"""The projection every layer is made of: x W^T, with W stored as (out, in)."""

from __future__ import annotations

import torch


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x W^T for a weight stored as (out_features, in_features), PyTorch's ``nn.Linear`` layout.

    x: (..., in) -> (..., out). ``.mT`` transposes the last two dimensions, so a stack of
    weights (S, out, in) multiplies a stack of inputs (S, n, in) -> (S, n, out), one matrix each.
    """
    return x @ w.mT
