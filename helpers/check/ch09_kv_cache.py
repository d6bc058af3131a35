"""Chapter 09's exercise checks: the KV cache."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..checkpoint import random_state_dict
from ..kv_cache import KVCache
from ..model import forward
from .common import SMALL, _gen, call, compare, equal, exercise


@exercise
def prefill_in_chunks(fn: Callable) -> tuple[float | None, int]:
    """fn(tokens, sd, cfg, chunk) -> logits (N, V), the prompt run through a KVCache chunk by chunk."""
    cfg = SMALL[0]
    sd = random_state_dict(cfg, seed=12, std=0.2)
    tokens = torch.randint(0, cfg.vocab_size, (11,), generator=_gen(12))
    want, worst = forward(tokens, sd, cfg), 0.0
    for chunk in (1, 4, 11):
        case = f"chunks of {chunk}"
        worst = max(worst, compare(case, call(case, fn, tokens, sd, cfg, chunk), want, tol=1e-4))
    return worst, 3


@exercise
def cache_bytes(fn: Callable) -> tuple[float | None, int]:
    """fn(cfg, n_tokens, dtype) -> bytes a KV cache for n_tokens positions holds."""
    from ..config import llama_3_2_1b_config

    cases = [
        (SMALL[0], 10, torch.float32),
        (SMALL[1], 3, torch.bfloat16),
        (llama_3_2_1b_config(), 131072, torch.bfloat16),
    ]
    for cfg, n, dtype in cases:
        with torch.device("meta"):
            want = KVCache(cfg, n, dtype=dtype).nbytes
        case = f"{n} tokens, {cfg.n_layers} layers x {cfg.n_kv_heads} KV heads, {dtype}"
        equal(case, call(case, fn, cfg, n, dtype), want)
    return None, len(cases)


@exercise
def tokens_that_fit(fn: Callable) -> tuple[float | None, int]:
    """fn(cfg, budget_bytes, dtype) -> the largest number of positions whose KV cache fits in the budget."""
    import dataclasses

    from ..config import llama_3_2_1b_config
    from ..kv_cache import cache_bytes_per_token

    real = llama_3_2_1b_config()
    cases = [(real, 2**30, torch.bfloat16), (dataclasses.replace(real, n_kv_heads=32), 2**30, torch.bfloat16)]
    cases.append((SMALL[0], 10_000, torch.float32))
    for cfg, budget, dtype in cases:
        case = f"{cfg.n_kv_heads} KV heads, {budget:,} bytes"
        equal(case, call(case, fn, cfg, budget, dtype), budget // cache_bytes_per_token(cfg, dtype))
    return None, len(cases)
