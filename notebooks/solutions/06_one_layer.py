"""Chapter 06: one layer."""

import torch
import torch.nn.functional as F

from helpers import attention, check, feed_forward, rms_norm


def my_feed_forward(x, w1, w2, w3):
    return (F.silu(x @ w1.T) * (x @ w3.T)) @ w2.T


def my_block(x: torch.Tensor, sd: dict, layer: int, cfg, freqs_cis) -> torch.Tensor:
    p = f"layers.{layer}."
    h = x + attention(rms_norm(x, sd[p + "attention_norm.weight"], cfg.norm_eps), sd, layer, cfg, freqs_cis)
    f = p + "feed_forward."
    h_norm = rms_norm(h, sd[p + "ffn_norm.weight"], cfg.norm_eps)
    return h + feed_forward(h_norm, sd[f + "w1.weight"], sd[f + "w2.weight"], sd[f + "w3.weight"])


def my_block_parameters(cfg) -> dict[str, int]:
    d, hd = cfg.dim, cfg.head_dim
    return {
        "attention": 2 * d * cfg.n_heads * hd + 2 * d * cfg.n_kv_heads * hd,
        "feed_forward": 3 * d * cfg.ffn_hidden_dim,
        "norms": 2 * d,
    }


EXERCISES = [
    (check.feed_forward, my_feed_forward),
    (check.block, my_block),
    (check.block_parameters, my_block_parameters),
]
