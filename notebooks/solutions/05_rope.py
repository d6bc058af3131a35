"""Chapter 05: RoPE."""

import math

import torch

from helpers import check


def my_rope(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2k], x[2k+1]) with cosines and sines only. x (N, H, hd); freqs_cis (N, hd/2)."""
    cos, sin = freqs_cis.real[:, None, :], freqs_cis.imag[:, None, :]  # (N, 1, hd/2)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def my_scaling(freqs: torch.Tensor, factor: float) -> torch.Tensor:
    low, high, context = 1.0, 4.0, 8192
    wavelength = 2 * math.pi / freqs
    smooth = (context / wavelength - low) / (high - low)
    blended = (1 - smooth) * freqs / factor + smooth * freqs
    out = torch.where(wavelength > context / low, freqs / factor, blended)
    return torch.where(wavelength < context / high, freqs, out)


def my_turn_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle of each pair of b minus that of a, wrapped into (-pi, pi]."""
    angle_a = torch.atan2(a[1::2], a[0::2])
    angle_b = torch.atan2(b[1::2], b[0::2])
    turned = torch.remainder(angle_b - angle_a + math.pi, 2 * math.pi) - math.pi
    return torch.where(turned <= -math.pi + 1e-12, turned + 2 * math.pi, turned)


EXERCISES = [(check.rope, my_rope), (check.rope_scaling, my_scaling), (check.turn_angles, my_turn_angles)]
