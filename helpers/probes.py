"""Chapter 14: looking inside a model -- every head's attention weights, recomputed.

Chapter 04 computed the attention weights of one block on screen; chapter 14 draws them for
every head of a real model. ``attention_weights`` is that computation for all blocks at once,
from each block's input, and checks itself: the weights, applied to the values and mixed by
W^O, must give back the block's own attention output (``helpers.attention.attention``).
"""

from __future__ import annotations

import math

import torch

from .attention import attention, causal_mask, repeat_kv
from .config import ModelConfig
from .linear import linear
from .model import hidden_states, rope_rows
from .numerics import float32_tolerance
from .rmsnorm import rms_norm
from .rope import apply_rotary_emb


class ProbeError(AssertionError):
    """The recomputed weights do not give back the block's own output: they are not its weights."""


def attention_weights(tokens: torch.Tensor, sd: dict[str, torch.Tensor], cfg: ModelConfig) -> torch.Tensor:
    """Every block's causal attention weights for ``tokens`` (N,): (L, H, N, N), float32.

    Row i of head h in block l is softmax(q_i k_j / sqrt(hd)) over the keys j <= i, as chapters
    04-05 compute it (RoPE, GQA by repeat_kv). Raises ProbeError if, in some block, weights @ V
    mixed by W^O differs from the block's attention output by more than float32 rounding of
    that chain of products (chapter 05's projection, score, weighted mean and W^O).
    """
    n = tokens.shape[-1]
    freqs = rope_rows(cfg, None, 0, n, tokens.device)
    out = []
    with torch.no_grad():
        for layer, h in enumerate(hidden_states(tokens, sd, cfg)[:-1]):  # X^l enters block l
            p = f"layers.{layer}.attention."
            x = rms_norm(h, sd[f"layers.{layer}.attention_norm.weight"], cfg.norm_eps)
            xq = linear(x, sd[p + "wq.weight"]).view(n, cfg.n_heads, cfg.head_dim)
            xk = linear(x, sd[p + "wk.weight"]).view(n, cfg.n_kv_heads, cfg.head_dim)
            xv = linear(x, sd[p + "wv.weight"]).view(n, cfg.n_kv_heads, cfg.head_dim)
            xq, xk = apply_rotary_emb(xq, xk, freqs)
            q = xq.transpose(0, 1)  # (H, N, hd)
            k, v = (repeat_kv(t.transpose(0, 1), cfg.n_rep) for t in (xk, xv))  # (H, N, hd)
            scores = q @ k.transpose(-2, -1) / math.sqrt(cfg.head_dim) + causal_mask(n, n, tokens.device)
            weights = torch.softmax(scores.float(), dim=-1)  # (H, N, N)
            mixed = linear((weights @ v.float()).transpose(0, 1).reshape(n, cfg.dim), sd[p + "wo.weight"])
            own = attention(x, sd, layer, cfg, freqs)
            terms = cfg.dim + cfg.head_dim + n + cfg.n_heads * cfg.head_dim
            worst, tol = (mixed - own).abs().max().item(), float32_tolerance(terms, own.abs().max().item())
            if worst > tol:
                raise ProbeError(
                    f"block {layer}: the recomputed weights give its output only to {worst:.1e} (> {tol:.1e})"
                )
            out.append(weights)
    return torch.stack(out)
