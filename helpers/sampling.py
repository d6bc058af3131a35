"""Choosing the next token from logits, and the generation loop."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import ModelConfig
from .kv_cache import KVCache
from .model import check_tokens, forward, forward_hidden
from .rmsnorm import rms_norm
from .rope import precompute_freqs_cis


def check_sampling_args(temperature: float | None, top_k: int | None, top_p: float | None) -> None:
    """Reject settings that have no meaning, with the range that does."""
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be > 0 (got {temperature}); leave it unset for greedy decoding")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (got {top_k})")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (got {top_p})")


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """The most likely token: (..., V) -> (...)"""
    return logits.argmax(dim=-1)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide logits by T: T < 1 sharpens the distribution, T > 1 flattens it."""
    check_sampling_args(temperature, None, None)
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits, set the rest to -inf. (..., V) -> (..., V)"""
    check_sampling_args(None, k, None)
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches p.

    The most likely token is always kept. (..., V) -> (..., V)
    """
    check_sampling_args(None, None, p)
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    # Probability of all strictly more likely tokens: a token stays while that is below p.
    before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next_token(
    logits: torch.Tensor,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """One token id from a (V,) logit vector: greedy when temperature is None, else sampled.

    Order: temperature, then top-k, then top-p, then a draw from the softmax.
    """
    check_sampling_args(temperature, top_k, top_p)
    if temperature is None:
        return int(greedy(logits))
    logits = apply_temperature(logits.float(), temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def decode_head(output_weight: torch.Tensor) -> torch.Tensor:
    """The LM head as a (d, V) matrix for one-row products: ``h @ decode_head(W)`` equals ``h @ W.T``.

    Speed only: for one row, a float32 product reads a contiguous (d, V) copy 1.3-3x faster
    on the CPUs measured by ``make bench`` (for bfloat16 the original layout was faster).
    """
    if output_weight.dtype == torch.float32:
        return output_weight.T.contiguous()
    return output_weight.T


def decode_logits(
    tokens: torch.Tensor,
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    freqs_cis: torch.Tensor,
    cache: KVCache,
    start_pos: int,
    head_t: torch.Tensor,
) -> torch.Tensor:
    """One cached step of chapter 09: float32 logits (V,) of the last of ``tokens``.

    tokens sit at positions start_pos .. start_pos+N-1, the earlier ones are read from
    ``cache``; only the last row goes through the LM head (Remark 2.11). head_t is
    ``decode_head(sd["output.weight"])``.
    """
    h = forward_hidden(tokens, sd, cfg, freqs_cis, cache, start_pos)[-1]
    return (rms_norm(h, sd["norm.weight"], cfg.norm_eps) @ head_t).float()


def generate(
    prompt_ids: Sequence[int],
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    max_new_tokens: int,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_ids: Sequence[int] = (),
    use_cache: bool = True,
    compile: bool = False,
) -> list[int]:
    """Generate up to ``max_new_tokens`` after ``prompt_ids``; stop after emitting a stop id.

    Without the cache every step re-runs the whole sequence; with it, the prompt
    is run once (prefill) and each step runs only the newest token (decode).
    Both give the same tokens. Returns the new ids (a final stop id included).
    ``compile=True`` runs the decode steps through ``torch.compile`` (helpers/compiled.py):
    the same functions, faster; it needs the cache and, on a CPU, a C++ compiler.
    """
    check_sampling_args(temperature, top_k, top_p)
    if compile and not use_cache:
        raise ValueError(
            "compile=True (--compile) speeds up the cached decode step: leave the cache on (use_cache=True, no --no-cache)"
        )
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0 (got {max_new_tokens})")
    prompt = check_tokens(torch.as_tensor(list(prompt_ids), dtype=torch.long), cfg).tolist()
    total = len(prompt) + max_new_tokens
    if total > cfg.max_seq_len:
        raise ValueError(
            f"prompt ({len(prompt)} tokens) + max_new_tokens ({max_new_tokens}) exceed the context of "
            f"{cfg.max_seq_len}: shorten the prompt or ask for fewer tokens"
        )
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    device = sd["tok_embeddings.weight"].device
    freqs_cis = precompute_freqs_cis(cfg, total).to(device)
    cache = KVCache(cfg, total, dtype=sd["tok_embeddings.weight"].dtype, device=device) if use_cache else None
    head_t = decode_head(sd["output.weight"]) if use_cache else None
    decode_step = decode_logits
    if compile:
        from .compiled import compiled_decode_logits

        decode_step = compiled_decode_logits(sd, head_t)
    tokens, new, pos, step_input = list(prompt), [], 0, list(prompt)
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            if cache is None:  # chapter 08's loop: the whole sequence, all rows of logits
                logits = forward(torch.tensor(tokens, device=device), sd, cfg, freqs_cis)[-1]
            else:  # chapter 09: new tokens only (the prompt once, then one at a time)
                step = decode_step if pos > 0 else decode_logits  # the prompt is never compiled
                logits = step(torch.tensor(step_input, device=device), sd, cfg, freqs_cis, cache, pos, head_t)
                pos += len(step_input)
            next_id = sample_next_token(logits, temperature, top_k, top_p, generator)
            tokens.append(next_id)
            new.append(next_id)
            if next_id in stop_ids:
                break
            step_input = [next_id]
    return new
