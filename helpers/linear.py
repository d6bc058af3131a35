"""The projection every layer is made of: x W^T, with W stored as (out, in)."""

from __future__ import annotations

import torch


def linear(x: torch.Tensor, w) -> torch.Tensor:
    """x W^T for a weight stored as (out_features, in_features), PyTorch's ``nn.Linear`` layout.

    x: (..., in) -> (..., out). A stack of weights (E, out, in) multiplies a stack of
    inputs (E, n, in) -> (E, n, out), one matrix each: chapter 11 runs its experts so.
    A quantized weight (chapter 10) is not a tensor but an object that knows how to
    multiply by itself; every projection of the model goes through this one function,
    so the model runs unchanged on either kind.
    """
    if isinstance(w, torch.Tensor):
        return x @ w.mT
    return w.linear(x)
