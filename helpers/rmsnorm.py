"""RMSNorm: scale each vector to unit root-mean-square, then by a learned gain."""

from __future__ import annotations

import torch


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """x in float32 if it is narrower (bfloat16, float16); float32 and float64 stay as they are.

    Meta's code writes ``x.float()`` because its inputs are bfloat16. Widening only, never
    narrowing, keeps a float64 computation in float64 from end to end, as a finite-difference
    check of the gradients needs.
    """
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm(x) = x / sqrt(mean(x^2) + eps) * weight, over the last dimension.

    x: (..., d); weight: (d,) -> (..., d). eps sits inside the square root, as in
    Meta's code. The statistics are computed in at least float32, even for bf16 inputs.
    """
    xf = at_least_float32(x)
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return normed.type_as(x) * weight
