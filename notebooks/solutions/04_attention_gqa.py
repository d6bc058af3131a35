"""Chapter 04: attention and GQA."""

import math

import torch

from helpers import check


def my_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q (H, N, hd), k and v (G, N, hd) -> (H, N, hd): causal attention, query head h reads KV head h // (H/G)."""
    n_rep = q.shape[0] // k.shape[0]
    k, v = k.repeat_interleave(n_rep, dim=0), v.repeat_interleave(n_rep, dim=0)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    n = q.shape[1]
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def my_attention_parameters(d: int, n_heads: int, n_kv_heads: int) -> int:
    """W^Q and W^O are d x d; W^K and W^V are d x (G d_h) = d x d / (H/G)."""
    head_dim = d // n_heads
    return 2 * d * d + 2 * d * n_kv_heads * head_dim


def my_per_head_attention(x, wq, wk, wv, wo, n_heads: int, n_kv_heads: int) -> torch.Tensor:
    n, d = x.shape
    hd = d // n_heads
    mask = torch.full((n, n), float("-inf")).triu(1)
    heads = []
    for h in range(n_heads):
        g = h // (n_heads // n_kv_heads)  # the key/value head of query head h
        q = x @ wq[h * hd : (h + 1) * hd].T
        k = x @ wk[g * hd : (g + 1) * hd].T
        v = x @ wv[g * hd : (g + 1) * hd].T
        heads.append(torch.softmax(q @ k.T / math.sqrt(hd) + mask, dim=-1) @ v)
    return torch.cat(heads, dim=-1) @ wo.T


EXERCISES = [
    (check.causal_attention, my_attention),
    (check.attention_parameters, my_attention_parameters),
    (check.per_head_attention, my_per_head_attention),
]
