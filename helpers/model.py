"""The whole Llama 3 forward pass as plain functions over the state dict.

text -> tokens -> embeddings -> L x [RMSNorm -> attention -> + -> RMSNorm -> SwiGLU -> +]
-> RMSNorm -> LM head -> logits
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .attention import attention
from .config import ModelConfig
from .feed_forward import feed_forward
from .linear import linear
from .rmsnorm import at_least_float32, rms_norm
from .rope import precompute_freqs_cis

if TYPE_CHECKING:
    from .kv_cache import KVCache


def check_tokens(tokens, cfg: ModelConfig, start_pos: int = 0) -> torch.Tensor:
    """Validate token ids where they enter (a prompt, a command line): integers in 0..V-1,
    shape (N,) or (B, N) with N >= 1, fitting in the context. Returns a LongTensor.

    Called once per prompt, not inside the model: reading the ids' values forces a
    device sync, which a decode step must not pay for every token.
    """
    tokens = torch.as_tensor(tokens)
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool or tokens.is_complex():
        raise ValueError(f"token ids must be integers, got dtype {tokens.dtype}")
    if tokens.ndim not in (1, 2) or tokens.shape[-1] == 0:
        raise ValueError(f"expected token ids of shape (N,) or (B, N) with N >= 1, got {tuple(tokens.shape)}")
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= cfg.vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"token id {bad} is outside the vocabulary 0..{cfg.vocab_size - 1}")
    if start_pos + tokens.shape[-1] > cfg.max_seq_len:
        raise ValueError(
            f"{start_pos + tokens.shape[-1]} positions exceed the context of {cfg.max_seq_len}: shorten the prompt"
        )
    return tokens.long()


def embed(tokens: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token embedding: row ``t`` of the (V, d) table for each token id t. (..., N) -> (..., N, d)"""
    return sd["tok_embeddings.weight"][tokens]


def transformer_block(
    x: torch.Tensor,
    sd: dict[str, torch.Tensor],
    layer: int,
    cfg: ModelConfig,
    freqs_cis: torch.Tensor,
    kv_cache: KVCache | None = None,
    start_pos: int = 0,
) -> torch.Tensor:
    """One block, equations (2.1): pre-norm attention and pre-norm SwiGLU, each added to the residual stream.

    x: (..., N, d) -> (..., N, d)
    """
    p = f"layers.{layer}."
    h = x + attention(
        rms_norm(x, sd[p + "attention_norm.weight"], cfg.norm_eps), sd, layer, cfg, freqs_cis, kv_cache, start_pos
    )
    ffn_in = rms_norm(h, sd[p + "ffn_norm.weight"], cfg.norm_eps)
    w = p + "feed_forward."
    return h + feed_forward(ffn_in, sd[w + "w1.weight"], sd[w + "w2.weight"], sd[w + "w3.weight"])


def rope_rows(cfg: ModelConfig, freqs_cis: torch.Tensor | None, start_pos: int, n: int, device) -> torch.Tensor:
    """The rows of the RoPE table for positions start_pos .. start_pos+n-1: (n, head_dim/2).

    Without a table one is computed; a table that is too short is an error, not silently
    rebuilt (the caller sized it for the generation it runs).
    """
    end = start_pos + n
    if end > cfg.max_seq_len:
        raise ValueError(f"{end} positions exceed the context of {cfg.max_seq_len}: shorten the prompt")
    if freqs_cis is None:
        freqs_cis = precompute_freqs_cis(cfg, end)
    elif freqs_cis.shape[0] < end:
        raise ValueError(
            f"freqs_cis covers {freqs_cis.shape[0]} positions, position {end - 1} was asked for: "
            f"precompute_freqs_cis(cfg, {end}) or longer"
        )
    return freqs_cis[start_pos:end].to(device)


def run_blocks(
    h: torch.Tensor,
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    freqs: torch.Tensor,
    kv_cache: KVCache | None = None,
    start_pos: int = 0,
    block=transformer_block,
    states: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The one loop over the layers: X^0 (..., N, d) through every block -> X^L.

    ``freqs`` are the RoPE rows of these N positions; ``states``, when given, receives X^1 .. X^L.
    """
    for layer in range(cfg.n_layers):
        h = block(h, sd, layer, cfg, freqs, kv_cache, start_pos)
        if states is not None:
            states.append(h)
    return h


def hidden_states(
    tokens: torch.Tensor,
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    freqs_cis: torch.Tensor | None = None,
    block=transformer_block,
) -> list[torch.Tensor]:
    """The residual stream X^0 (embeddings), X^1, ..., X^L after each block (no final norm).

    tokens: (N,) or (B, N) -> list of L + 1 tensors (..., N, d)
    """
    freqs = rope_rows(cfg, freqs_cis, 0, tokens.shape[-1], tokens.device)
    states = [embed(tokens, sd)]
    run_blocks(states[0], sd, cfg, freqs, block=block, states=states)
    return states


def lm_head(h: torch.Tensor, sd: dict[str, torch.Tensor], cfg: ModelConfig) -> torch.Tensor:
    """Final RMSNorm, then the (tied) output matrix: (..., N, d) -> logits (..., N, V), at least float32."""
    return at_least_float32(linear(rms_norm(h, sd["norm.weight"], cfg.norm_eps), sd["output.weight"]))


def forward_hidden(
    tokens: torch.Tensor,
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    freqs_cis: torch.Tensor | None = None,
    kv_cache: KVCache | None = None,
    start_pos: int = 0,
    block=transformer_block,
) -> torch.Tensor:
    """The final hidden states X^L (before the final norm): tokens (N,) or (B, N) -> (..., N, d).

    ``block`` is each layer's function, ``transformer_block`` unless a model changes the block.
    """
    freqs = rope_rows(cfg, freqs_cis, start_pos, tokens.shape[-1], tokens.device)
    return run_blocks(embed(tokens, sd), sd, cfg, freqs, kv_cache, start_pos, block)


def forward(
    tokens: torch.Tensor,
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    freqs_cis: torch.Tensor | None = None,
    kv_cache: KVCache | None = None,
    start_pos: int = 0,
    last_only: bool = False,
    block=transformer_block,
) -> torch.Tensor:
    """Logits: tokens (N,) or (B, N) -> (..., N, V) in at least float32, or (..., 1, V) with ``last_only``.

    freqs_cis may be precomputed for at least start_pos + N positions. With a
    ``kv_cache``, ``tokens`` are the positions start_pos .. start_pos+N-1 and the
    earlier ones are read from the cache. Differentiable (used for training).
    """
    h = forward_hidden(tokens, sd, cfg, freqs_cis, kv_cache, start_pos, block)
    if last_only:  # only the last row predicts the next token (Remark 2.11)
        h = h[..., [-1], :]
    return lm_head(h, sd, cfg)
