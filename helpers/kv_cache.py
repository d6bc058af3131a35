"""A pre-allocated key/value cache, so decoding computes each position once."""

from __future__ import annotations

import torch

from .config import ModelConfig


class KVCache:
    """Keys and values of every layer for positions 0 .. max_seq_len-1.

    k, v: (n_layers, *batch, max_seq_len, n_kv_heads, head_dim). Only RoPE-rotated
    keys are stored: a key's rotation depends on its own position only (Remark 2.8),
    so it never changes once computed.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        max_seq_len: int,
        batch_shape: tuple[int, ...] = (),
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        if not 1 <= max_seq_len <= cfg.max_seq_len:
            raise ValueError(f"a KV cache of {max_seq_len} positions: the model's context holds 1..{cfg.max_seq_len}")
        shape = (cfg.n_layers, *batch_shape, max_seq_len, cfg.n_kv_heads, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_seq_len = max_seq_len

    def update(
        self, layer: int, start_pos: int, xk: torch.Tensor, xv: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store xk, xv (..., N, n_kv_heads, hd) at start_pos..start_pos+N-1; return keys and values 0..start_pos+N-1."""
        end = start_pos + xk.shape[-3]
        if end > self.max_seq_len:
            raise ValueError(f"the KV cache holds {self.max_seq_len} positions; position {end - 1} does not fit")
        self.k[layer, ..., start_pos:end, :, :] = xk
        self.v[layer, ..., start_pos:end, :, :] = xv
        return self.k[layer, ..., :end, :, :], self.v[layer, ..., :end, :, :]

    @property
    def nbytes(self) -> int:
        """Memory held by the cache (keys and values, all layers)."""
        return self.k.nbytes + self.v.nbytes


def cache_bytes_per_token(cfg: ModelConfig, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes one position adds to the cache: 2 (K and V) x layers x kv heads x head_dim x element size."""
    return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * torch.empty((), dtype=dtype).element_size()
