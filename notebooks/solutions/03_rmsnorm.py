"""Chapter 03: RMSNorm."""

import torch

from helpers import check


def my_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return (x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


def my_eps_after_scaling(eps: float, c: float) -> float:
    """c x / sqrt(c^2 ms + eps) = x / sqrt(ms + eps / c^2): scaling x by c is dividing eps by c^2."""
    return eps / c**2


def my_norm_parameters(sd: dict) -> int:
    return sum(t.numel() for name, t in sd.items() if name.endswith("norm.weight"))


EXERCISES = [
    (check.rms_norm, my_rms_norm),
    (check.eps_after_scaling, my_eps_after_scaling),
    (check.norm_parameters, my_norm_parameters),
]
