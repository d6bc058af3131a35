"""Chapter 09: the KV cache."""

import torch

from helpers import KVCache, check, forward, precompute_freqs_cis


def my_prefill_in_chunks(tokens, sd, cfg, chunk: int) -> torch.Tensor:
    cache, freqs = KVCache(cfg, len(tokens)), precompute_freqs_cis(cfg, len(tokens))
    rows = [forward(tokens[s : s + chunk], sd, cfg, freqs, cache, s) for s in range(0, len(tokens), chunk)]
    return torch.cat(rows)


def my_cache_bytes(cfg, n_tokens: int, dtype: torch.dtype) -> int:
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * cfg.n_layers * n_tokens * cfg.n_kv_heads * cfg.head_dim * element


def my_tokens_that_fit(cfg, budget: int, dtype: torch.dtype) -> int:
    return budget // my_cache_bytes(cfg, 1, dtype)


EXERCISES = [
    (check.prefill_in_chunks, my_prefill_in_chunks),
    (check.cache_bytes, my_cache_bytes),
    (check.tokens_that_fit, my_tokens_that_fit),
]
