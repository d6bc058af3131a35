"""Rotary position embedding (RoPE) with Llama 3's frequency scaling.

Each head vector of size head_dim is read as head_dim/2 complex numbers, pairs
(x[2i], x[2i+1]) -- Meta's interleaved layout. Position m rotates pair i by the
angle m * freq_i, freq_i = theta^(-2i/head_dim).
"""

from __future__ import annotations

import math

import torch

from .config import ModelConfig
from .rmsnorm import at_least_float32


def rope_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """Theta_k = theta^(-2k/head_dim) for pairs k = 0 .. head_dim/2 - 1, in radians per position. -> (head_dim/2,)"""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))


def scale_frequencies(
    freqs: torch.Tensor,
    factor: float,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    original_context: int = 8192,
) -> torch.Tensor:
    """Llama 3 RoPE scaling: three bands by wavelength 2*pi/freq.

    - wavelength < original_context / high_freq_factor (fast rotations): unchanged;
    - wavelength > original_context / low_freq_factor (slow rotations): divided by ``factor``;
    - in between: a smooth interpolation of the two.
    Llama 3.2 uses factor 32 (Llama 3.1: 8). (head_dim/2,) -> (head_dim/2,)
    """
    low_freq_wavelen = original_context / low_freq_factor
    high_freq_wavelen = original_context / high_freq_factor
    wavelen = 2 * math.pi / freqs
    smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    interpolated = (1 - smooth) * freqs / factor + smooth * freqs
    scaled = torch.where(wavelen > low_freq_wavelen, freqs / factor, interpolated)
    return torch.where(wavelen < high_freq_wavelen, freqs, scaled)


def precompute_freqs_cis(cfg: ModelConfig, end: int) -> torch.Tensor:
    """e^(j * i * Theta_k) (j = sqrt(-1)) for positions i = 0 .. end-1 and pairs k. -> complex64 (end, head_dim/2)"""
    freqs = rope_frequencies(cfg.head_dim, cfg.rope_theta)
    if cfg.use_scaled_rope:
        freqs = scale_frequencies(
            freqs,
            cfg.rope_scale_factor,
            cfg.rope_low_freq_factor,
            cfg.rope_high_freq_factor,
            cfg.rope_original_context,
        )
    angles = torch.outer(torch.arange(end, dtype=torch.float32), freqs)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rotary_emb(xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries and keys by their positions.

    xq: (..., N, n_heads, head_dim); xk: (..., N, n_kv_heads, head_dim);
    freqs_cis: (N, head_dim/2) complex -> tensors shaped like xq, xk.
    """

    def rotate(x: torch.Tensor) -> torch.Tensor:
        pairs = torch.view_as_complex(at_least_float32(x).reshape(*x.shape[:-1], -1, 2))  # (..., N, H, head_dim/2)
        rotated = pairs * freqs_cis.unsqueeze(-2)  # broadcast over heads
        return torch.view_as_real(rotated).flatten(-2).type_as(x)

    return rotate(xq), rotate(xk)
