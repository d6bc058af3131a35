"""Chapter 14's exercise checks: a real model's file, its blocks and its chat template."""

from __future__ import annotations

import struct
from collections.abc import Callable

import torch

from .common import _gen, compare, equal, exercise


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
        got = torch.as_tensor(fn(raw, shape))
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
    from ..chat import chatml_prompt
    from ..tokenizer import Tokenizer
    from ..tools.smollm2 import OUT

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
        equal(case, list(fn(tok, messages)), chatml_prompt(tok, messages))
    return None, len(cases)
