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
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Store xk, xv (..., N, n_kv_heads, hd) at start_pos..start_pos+N-1; return the keys and
        values 0..start_pos+N-1 and the attention mask, here None: the keys end at the last
        query, so the causal mask of their shapes is the right one."""
        end = start_pos + xk.shape[-3]
        if end > self.max_seq_len:
            raise ValueError(f"the KV cache holds {self.max_seq_len} positions; position {end - 1} does not fit")
        self.k[layer, ..., start_pos:end, :, :] = xk
        self.v[layer, ..., start_pos:end, :, :] = xv
        return self.k[layer, ..., :end, :, :], self.v[layer, ..., :end, :, :], None

    @property
    def nbytes(self) -> int:
        """Memory held by the cache (keys and values, all layers)."""
        return self.k.nbytes + self.v.nbytes


class StaticKVCache(KVCache):
    """The same cache with the same shapes at every step, for CUDA graphs (helpers/compiled.py).

    Positions are a tensor on the cache's device; ``update`` writes there in place and returns
    keys and values for all max_seq_len positions, with a mask that hides the positions after
    each query. A step then launches the same kernels on the same buffers every time.
    Shares the storage of the KVCache it views.
    """

    def __init__(self, cache: KVCache):
        self.k, self.v, self.max_seq_len = cache.k, cache.v, cache.max_seq_len

    def update(
        self, layer: int, start_pos: torch.Tensor, xk: torch.Tensor, xv: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Store xk, xv (..., N, n_kv_heads, hd) at positions start_pos..; return all positions and
        the (N, max_seq_len) mask: 0 up to each query's position, -inf after it."""
        queries = start_pos + torch.arange(xk.shape[-3], device=xk.device)
        self.k[layer].index_copy_(-3, queries, xk)
        self.v[layer].index_copy_(-3, queries, xv)
        keys = torch.arange(self.max_seq_len, device=self.k.device)
        return self.k[layer], self.v[layer], torch.where(keys[None, :] <= queries[:, None], 0.0, float("-inf"))


def cache_bytes_per_token(cfg: ModelConfig, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes one position adds to the cache: 2 (K and V) x layers x kv heads x head_dim x element size."""
    return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * torch.empty((), dtype=dtype).element_size()
