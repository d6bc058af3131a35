"""Generating text: the loops that turn next-token logits into a continuation.

- ``generate_uncached`` (chapter 08): append a token, run the whole sequence again.
- ``generate`` (chapter 09): run the prompt once into a KV cache (``prefill``), then one
  token per step; the same tokens, without recomputing the past.

Both validate the prompt once, where it enters; the model itself checks nothing per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import ModelConfig
from .kv_cache import KVCache
from .memory import PREFILL_CHUNK, check_memory
from .model import check_tokens, forward
from .rope import precompute_freqs_cis
from .sampling import GREEDY, Sampling


def check_prompt(prompt_ids: Sequence[int], cfg: ModelConfig, max_new_tokens: int) -> list[int]:
    """The prompt as a list of valid ids, and a length that fits the context with the new tokens."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0 (got {max_new_tokens})")
    prompt = check_tokens(torch.as_tensor(list(prompt_ids), dtype=torch.long), cfg).tolist()
    if len(prompt) + max_new_tokens > cfg.max_seq_len:
        raise ValueError(
            f"prompt ({len(prompt)} tokens) + max_new_tokens ({max_new_tokens}) exceed the context of "
            f"{cfg.max_seq_len}: shorten the prompt or ask for fewer tokens"
        )
    return prompt


def weights_device_dtype(sd: dict) -> tuple[torch.device, torch.dtype]:
    """Where the model's weights live and the dtype it computes in (the embedding table's)."""
    table = sd["tok_embeddings.weight"]
    return table.device, table.dtype


def generate_uncached(
    prompt_ids: Sequence[int],
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    max_new_tokens: int,
    sampling: Sampling = GREEDY,
    stop_ids: Sequence[int] = (),
) -> list[int]:
    """Chapter 08's loop: run the whole sequence, pick the next token, append it, repeat.

    Stops after ``max_new_tokens`` or after emitting one of ``stop_ids`` (which is
    returned). Greedy unless ``sampling`` says otherwise.
    """
    ids = check_prompt(prompt_ids, cfg, max_new_tokens)
    next_token = sampling.sampler()
    device, _ = weights_device_dtype(sd)
    freqs_cis = precompute_freqs_cis(cfg, len(ids) + max_new_tokens).to(device)
    new: list[int] = []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            logits = forward(torch.tensor(ids, device=device), sd, cfg, freqs_cis, last_only=True)[-1]
            next_id = next_token(logits)
            ids.append(next_id)
            new.append(next_id)
            if next_id in stop_ids:
                break
    return new


def prefill(
    tokens: torch.Tensor,
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    freqs_cis: torch.Tensor,
    cache: KVCache,
    chunk: int = PREFILL_CHUNK,
    all_rows: bool = False,
    step=forward,
) -> torch.Tensor:
    """Run the prompt into the cache, ``chunk`` positions per call: logits (V,) of its last token
    (or (N, V) of every position with ``all_rows``).

    Each chunk's queries attend to all keys cached so far, so the result equals one pass
    over the whole prompt, while attention holds chunk x N scores per head, not N x N.
    ``step`` is called as ``forward`` is.
    """
    n = tokens.shape[-1]
    out = None
    for start in range(0, n, chunk):
        logits = step(tokens[..., start : start + chunk], sd, cfg, freqs_cis, cache, start, last_only=not all_rows)
        if all_rows:  # filled in place: a list joined at the end would hold every row twice
            if out is None:
                out = logits.new_empty(*logits.shape[:-2], n, logits.shape[-1])
            out[..., start : start + logits.shape[-2], :] = logits
    return out if all_rows else logits[..., -1, :]


def generate(
    prompt_ids: Sequence[int],
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    max_new_tokens: int,
    sampling: Sampling = GREEDY,
    stop_ids: Sequence[int] = (),
    step=forward,
    on_token=None,
) -> list[int]:
    """Chapter 09's loop: the prompt once into a KV cache, then one new token per step.

    The same tokens as ``generate_uncached``, greedy or sampled with the same ``sampling``.
    ``step`` computes the logits, of the prompt and of each new token; it is called as
    ``forward`` is (and is ``forward`` unless a model or a faster step is passed in).
    ``on_token``, if given, is called with each new id as soon as it is chosen (to print a
    reply as it is written).
    """
    prompt = check_prompt(prompt_ids, cfg, max_new_tokens)
    if max_new_tokens == 0:
        return []
    next_token = sampling.sampler()
    device, dtype = weights_device_dtype(sd)
    if device.type == "cpu":
        check_memory(cfg, len(prompt), max_new_tokens, dtype)
    total = len(prompt) + max_new_tokens
    cache = KVCache(cfg, total, dtype=dtype, device=device)
    freqs_cis = precompute_freqs_cis(cfg, total).to(device)
    new: list[int] = []
    with torch.inference_mode():
        logits = prefill(torch.tensor(prompt, device=device), sd, cfg, freqs_cis, cache, step=step)
        for pos in range(len(prompt), total):
            next_id = next_token(logits)
            new.append(next_id)
            if on_token is not None:
                on_token(next_id)
            if next_id in stop_ids or pos + 1 == total:
                break
            token = torch.tensor([next_id], device=device)  # the newest token only, at position pos
            logits = step(token, sd, cfg, freqs_cis, cache, pos, last_only=True)[-1]
    return new
