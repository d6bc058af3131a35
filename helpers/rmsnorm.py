"""RMSNorm: scale each vector to unit root-mean-square, then by a learned gain."""

from __future__ import annotations

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm(x) = x / sqrt(mean(x^2) + eps) * weight, over the last dimension.

    x: (..., d); weight: (d,) -> (..., d). eps sits inside the square root, as in
    Meta's code. The statistics are computed in float32 even for bf16 inputs.
    """
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return normed.type_as(x) * weight
