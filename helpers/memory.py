"""How much memory a generation needs, and refusing one that will not fit before it starts.

``generate`` and the command line call ``check_memory`` once, before allocating the cache:
a prompt too long for this machine gets one clear error naming the longest that fits,
instead of dying in the middle of an allocation.
"""

from __future__ import annotations

import torch

from .config import ModelConfig
from .kv_cache import cache_bytes_per_token

# Prompt positions processed per forward call in ``generation.prefill``: attention then holds
# heads x PREFILL_CHUNK x N scores instead of heads x N x N, so memory grows linearly with N.
PREFILL_CHUNK = 256
FLOAT32_BYTES = 4  # scores, softmax and logits are at least float32, whatever the weights' dtype
LIVE_SCORES = 4  # (chunk x T) score tensors attention holds at once, per head


def memory_needed(
    cfg: ModelConfig,
    n_prompt: int,
    max_new_tokens: int = 0,
    dtype: torch.dtype = torch.float32,
    chunk: int = PREFILL_CHUNK,
    all_logits: bool = False,
) -> dict[str, int]:
    """Bytes that a generation (or the logits of every position) allocates, by part; weights not included.

    The KV cache grows with the length T; attention holds a few heads x chunk x T score
    tensors at a time (``prefill``); the logits are one row, or N x V with ``all_logits``.
    """
    elt = torch.empty((), dtype=dtype).element_size()
    total, c = n_prompt + max_new_tokens, min(chunk, max(n_prompt, 1))
    return {
        "KV cache": total * cache_bytes_per_token(cfg, dtype),
        # up to LIVE_SCORES score tensors (the product, scaled, masked, softmax in float32; measured on
        # a CPU: tests/test_generation.py), the mask, keys and values repeated to every head
        "attention": LIVE_SCORES * cfg.n_heads * c * total * FLOAT32_BYTES
        + c * total * FLOAT32_BYTES
        + 2 * cfg.n_heads * total * cfg.head_dim * elt,
        "activations": c * (4 * cfg.dim + 3 * cfg.ffn_hidden_dim) * max(elt, FLOAT32_BYTES),
        "logits": (n_prompt if all_logits else c) * cfg.vocab_size * FLOAT32_BYTES,
    }


def available_memory() -> int:
    """Bytes this process may still allocate: free memory, or what is left under a container's limit."""
    import psutil

    free = psutil.virtual_memory().available
    try:  # cgroup v2: a container's own limit can be far below the machine's free memory
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        used = int(open("/sys/fs/cgroup/memory.current").read())
        if limit != "max":
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free


def check_memory(
    cfg: ModelConfig,
    n_prompt: int,
    max_new_tokens: int = 0,
    dtype: torch.dtype = torch.float32,
    chunk: int = PREFILL_CHUNK,
    all_logits: bool = False,
    extra: int = 0,
    available: int | None = None,
) -> None:
    """Refuse, before allocating anything, a prompt whose generation would not fit in memory.

    ``extra``: bytes still to be allocated besides (e.g. weights about to be loaded).
    The message says how many prompt tokens would fit.
    """
    available = available_memory() if available is None else available

    def need(n: int) -> int:
        return sum(memory_needed(cfg, n, max_new_tokens, dtype, chunk, all_logits).values()) + extra

    if need(n_prompt) <= available:
        return
    lo, hi = 0, n_prompt  # the longest prompt that fits, by bisection (need grows with n)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if need(mid) <= available else (lo, mid - 1)
    parts = memory_needed(cfg, n_prompt, max_new_tokens, dtype, chunk, all_logits)
    biggest = ", ".join(f"{k} {v / 1e9:.1f} GB" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])[:2])
    raise MemoryError(
        f"a prompt of {n_prompt:,} tokens needs about {need(n_prompt) / 1e9:.1f} GB ({biggest}), "
        f"but {available / 1e9:.1f} GB are available: at most {lo:,} prompt tokens fit"
        + (" (generate keeps one row of logits and needs less)" if all_logits else "")
    )
