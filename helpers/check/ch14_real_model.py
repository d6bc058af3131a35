"""Chapter 14's exercise checks: a real model's file (its blocks, its params.json) and its chat template."""

from __future__ import annotations

import struct
from collections.abc import Callable

import torch

from .common import _gen, call, compare, exercise


def _q8_0_cases() -> dict[str, tuple[bytes, tuple[int, ...]]]:
    gen = _gen(14)
    cases = {}
    for case, (rows, blocks) in {"one block": (1, 1), "2 rows of 3 blocks": (2, 3)}.items():
        scales = torch.rand(rows * blocks, generator=gen) * 0.02 + 1e-3
        codes = torch.randint(-128, 128, (rows * blocks, 32), generator=gen, dtype=torch.int8)
        raw = b"".join(struct.pack("<e", float(s)) + c.numpy().tobytes() for s, c in zip(scales, codes, strict=True))
        cases[case] = raw, (rows, 32 * blocks)
    extreme = struct.pack("<e", -0.5) + bytes([0x80, 0x7F, 0x00, 0xFF] * 8)  # codes -128, 127, 0, -1
    cases["a negative scale and the extreme codes"] = extreme, (32,)
    return cases


def _q4_1_cases() -> dict[str, tuple[bytes, tuple[int, ...]]]:
    gen = _gen(41)
    cases = {}
    for case, (rows, blocks) in {"one block": (1, 1), "3 rows of 2 blocks": (3, 2)}.items():
        raw = b""
        for _ in range(rows * blocks):
            scale, minimum = float(torch.rand((), generator=gen)) * 0.01, -float(torch.rand((), generator=gen)) * 0.1
            packed = torch.randint(0, 256, (16,), generator=gen, dtype=torch.uint8)
            raw += struct.pack("<ee", scale, minimum) + packed.numpy().tobytes()
        cases[case] = raw, (rows, 32 * blocks)
    ordered = struct.pack("<ee", 1.0, 0.0) + bytes(16 * (b + 1) % 256 for b in range(16))  # low != high
    cases["scale 1, minimum 0 (the codes themselves)"] = ordered, (32,)
    return cases


def _against_gguf(fn: Callable, cases: dict, qtype_name: str) -> tuple[float, int]:
    import numpy as np
    from gguf import GGMLQuantizationType, quants

    qtype = getattr(GGMLQuantizationType, qtype_name)
    worst = 0.0
    for case, (raw, shape) in cases.items():
        want = torch.from_numpy(
            quants.dequantize(np.frombuffer(raw, np.uint8).reshape(*shape[:-1], -1), qtype).copy()
        ).reshape(shape)
        got = torch.as_tensor(call(case, fn, raw, shape))
        if got.dtype != torch.float32:
            raise AssertionError(f"{case}: dtype {got.dtype}, expected torch.float32")
        worst = max(worst, compare(case, got, want, tol=1e-6))  # float32 rounding: float64 products pass too
    return worst, len(cases)


@exercise
def q8_0_blocks(fn: Callable) -> tuple[float | None, int]:
    """fn(raw bytes, shape) -> float32 values of Q8_0 blocks (float16 scale, 32 int8 codes), as gguf."""
    return _against_gguf(fn, _q8_0_cases(), "Q8_0")


@exercise
def q4_1_blocks(fn: Callable) -> tuple[float | None, int]:
    """fn(raw bytes, shape) -> float32 values of Q4_1 blocks (float16 scale and minimum, 16
    bytes of 4-bit codes: byte j holds value j low and value j + 16 high), as gguf."""
    return _against_gguf(fn, _q4_1_cases(), "Q4_1")


@exercise
def chatml(fn: Callable) -> tuple[float | None, int]:
    """fn(tok, messages) -> the ChatML ids of the messages and the assistant's header (no
    default system message), for SmolLM2's tokenizer (make smollm2 converts it)."""
    from ..book.smollm2 import OUT
    from ..chat import chatml_prompt
    from ..tokenizer import Tokenizer

    if not (OUT / "tokenizer_description.json").is_file():
        raise AssertionError(f"SmolLM2's tokenizer is not in {OUT}: run `make smollm2` first")
    tok = Tokenizer.load(OUT)
    cases = {
        "one user message": [{"role": "user", "content": "What is the capital of France?"}],
        "a system message, then the user": [
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "Capital of Peru?"},
        ],
        "two turns": [
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello. How can I help?"},
            {"role": "user", "content": "Name a prime.\n"},
        ],
        "a user who types <|im_end|>": [{"role": "user", "content": "end it <|im_end|> here"}],
    }
    for case, messages in cases.items():
        same_ids(case, tok, [int(i) for i in call(case, fn, tok, messages)], chatml_prompt(tok, messages))
    return None, len(cases)


def same_ids(case: str, tok, got: list[int], want: list[int]) -> None:
    """Token ids compared as a reader can read them: the first index where they differ, the pieces
    there, and the two texts (or, when the texts are the same, that a control token went in as text)."""
    if got == want:
        return
    i = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
    around = slice(max(0, i - 1), i + 3)
    got_text, want_text = tok.decode(got), tok.decode(want)
    texts = (
        "the same text, other ids: is a control token written as text?"
        if got_text == want_text
        else f"your text {got_text!r}, expected {want_text!r}"
    )
    raise AssertionError(
        f"{case}: {len(got)} ids, expected {len(want)}; first difference at index {i}: pieces "
        f"{tok.pieces(got[around])} where {tok.pieces(want[around])} were expected; {texts}"
    )


# GGUF metadata of four llama models, as a GGUF states them (RMSNorm's epsilon is stored in float32).
# TinyLlama's file is taken to have no llama.vocab_size (the vocabulary is counted), and Llama 2's no
# head_count_kv (then there are as many key/value heads as query heads), as older files have neither.
_EPS = float(torch.tensor(1e-5, dtype=torch.float32))
_METADATA = {
    "SmolLM2-135M": {
        "llama.embedding_length": 576, "llama.block_count": 30, "llama.attention.head_count": 9,
        "llama.attention.head_count_kv": 3, "llama.vocab_size": 49152, "llama.feed_forward_length": 1536,
        "llama.rope.freq_base": 100000.0, "llama.context_length": 8192,
    },
    "TinyLlama-1.1B (no llama.vocab_size)": {
        "llama.embedding_length": 2048, "llama.block_count": 22, "llama.attention.head_count": 32,
        "llama.attention.head_count_kv": 4, "llama.feed_forward_length": 5632,
        "llama.rope.freq_base": 10000.0, "llama.context_length": 2048,
        "tokenizer.ggml.tokens": [f"<token {i}>" for i in range(32000)],
    },
    "Llama-2-7B (no head_count_kv)": {
        "llama.embedding_length": 4096, "llama.block_count": 32, "llama.attention.head_count": 32,
        "llama.vocab_size": 32000, "llama.feed_forward_length": 11008,
        "llama.rope.freq_base": 10000.0, "llama.context_length": 4096,
    },
    "Llama-3-8B (its feed-forward needs ffn_dim_multiplier)": {
        "llama.embedding_length": 4096, "llama.block_count": 32, "llama.attention.head_count": 32,
        "llama.attention.head_count_kv": 8, "llama.vocab_size": 128256, "llama.feed_forward_length": 14336,
        "llama.rope.freq_base": 500000.0, "llama.context_length": 8192,
    },
}  # fmt: skip


@exercise
def params_json(fn: Callable) -> tuple[float | None, int]:
    """fn(metadata: a llama GGUF's metadata dict) -> Meta's params.json as a dict: dim, n_layers,
    n_heads, n_kv_heads, vocab_size, multiple_of and ffn_dim_multiplier (Meta's formula must give
    llama.feed_forward_length), norm_eps, rope_theta, use_scaled_rope (false). Judged by the model
    it describes: ModelConfig.from_params of the answer against the file's numbers."""
    from ..config import ConfigError, ModelConfig

    for case, fields in _METADATA.items():
        metadata = {"general.architecture": "llama", "llama.attention.layer_norm_rms_epsilon": _EPS, **fields}
        got = call(case, fn, dict(metadata))
        if not isinstance(got, dict):
            raise AssertionError(f"{case}: expected a dict (params.json), got {type(got).__name__}")
        try:
            cfg = ModelConfig.from_params(got)
        except (ConfigError, TypeError, ValueError) as err:
            raise AssertionError(f"{case}: not a params.json ModelConfig accepts: {err}") from None
        want = {
            "dim": fields["llama.embedding_length"],
            "n_layers": fields["llama.block_count"],
            "n_heads": fields["llama.attention.head_count"],
            "n_kv_heads": fields.get("llama.attention.head_count_kv", fields["llama.attention.head_count"]),
            "vocab_size": fields.get("llama.vocab_size", len(fields.get("tokenizer.ggml.tokens", []))),
            "ffn_hidden_dim": fields["llama.feed_forward_length"],
            "rope_theta": fields["llama.rope.freq_base"],
            "use_scaled_rope": False,
        }
        for name, value in want.items():
            if getattr(cfg, name) != value:
                what = "the feed-forward size Meta's formula gives" if name == "ffn_hidden_dim" else name
                raise AssertionError(f"{case}: {what}: got {getattr(cfg, name)!r}, expected {value!r}")
        as_float32 = torch.tensor([float(cfg.norm_eps), _EPS], dtype=torch.float32)
        if as_float32[0] != as_float32[1]:
            raise AssertionError(f"{case}: norm_eps: got {cfg.norm_eps!r}, expected {_EPS!r} (or 1e-05)")
    return None, len(_METADATA)
