"""Causal self-attention with grouped-query attention (GQA) and RoPE."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from .config import ModelConfig
from .linear import linear
from .rmsnorm import at_least_float32
from .rope import apply_rotary_emb

if TYPE_CHECKING:
    from .kv_cache import KVCache


def causal_mask(n_queries: int, n_keys: int, device: torch.device | None = None) -> torch.Tensor:
    """Additive mask: 0 where query i may look at key j, -inf where j is in its future.

    The queries are the last n_queries of the n_keys positions (with a KV cache the
    earlier keys come from the cache), so query i sits at position n_keys - n_queries + i.
    -> (n_queries, n_keys)
    """
    mask = torch.full((n_queries, n_keys), float("-inf"), device=device)
    return torch.triu(mask, diagonal=n_keys - n_queries + 1)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Give each query head its key/value head: (..., n_kv_heads, N, hd) -> (..., n_kv_heads * n_rep, N, hd).

    Query heads 0..n_rep-1 share KV head 0, the next n_rep share KV head 1, and so on.
    """
    return x if n_rep == 1 else torch.repeat_interleave(x, n_rep, dim=-3)


def scaled_dot_product(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim) + mask) v, heads first, GQA by repeat.

    q: (..., n_heads, Nq, hd); k, v: (..., n_kv_heads, Nk, hd) -> (..., n_heads, Nq, hd).
    mask: (Nq, Nk) additive; by default the causal mask of these shapes. The softmax runs
    in (at least) float32, as in Meta's reference.
    """
    n_rep = q.shape[-3] // k.shape[-3]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., H, Nq, Nk)
    if mask is None:
        mask = causal_mask(q.shape[-2], k.shape[-2], q.device)
    scores = scores + mask.to(scores.dtype)
    weights = torch.softmax(at_least_float32(scores), dim=-1).type_as(q)
    return weights @ v


def attention(
    x: torch.Tensor,
    sd: dict[str, torch.Tensor],
    layer: int,
    cfg: ModelConfig,
    freqs_cis: torch.Tensor,
    kv_cache: KVCache | None = None,
    start_pos: int = 0,
) -> torch.Tensor:
    """Multi-head causal self-attention of block ``layer``.

    x: (..., N, d) normalized input; freqs_cis: (N, head_dim/2) for positions
    start_pos .. start_pos+N-1. With a cache, this call's keys and values are
    stored at those positions and the queries attend to everything stored so far.
    -> (..., N, d)
    """
    p = f"layers.{layer}.attention."
    *lead, n, _ = x.shape
    xq = linear(x, sd[p + "wq.weight"]).view(*lead, n, cfg.n_heads, cfg.head_dim)  # (..., N, H, hd)
    xk = linear(x, sd[p + "wk.weight"]).view(*lead, n, cfg.n_kv_heads, cfg.head_dim)  # (..., N, G, hd)
    xv = linear(x, sd[p + "wv.weight"]).view(*lead, n, cfg.n_kv_heads, cfg.head_dim)  # (..., N, G, hd)
    xq, xk = apply_rotary_emb(xq, xk, freqs_cis)
    mask = None  # the causal mask of the shapes
    if kv_cache is not None:  # chapter 09: store this call's keys and values, attend to all stored so far
        xk, xv, mask = kv_cache.update(layer, start_pos, xk, xv)
    out = scaled_dot_product(xq.transpose(-3, -2), xk.transpose(-3, -2), xv.transpose(-3, -2), mask)  # heads first
    out = out.transpose(-3, -2).reshape(*lead, n, cfg.n_heads * cfg.head_dim)  # concatenate the heads
    return linear(out, sd[p + "wo.weight"])
