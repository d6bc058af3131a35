"""Chapter 10's exercise checks: quantization."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .common import _gen, compare, equal, exercise


def _quantization_cases():
    gen = _gen(13)
    w = torch.randn(6, 128, generator=gen) * 0.05
    w[2, 40] = 1.5  # an outlier in row 2, block 4
    w[4] = 0.0  # a row (two blocks) of zeros
    yield "random 6x128 with an outlier and a zero row", w
    yield "bf16 8x64", (torch.randn(8, 64, generator=gen) * 3).bfloat16()


@exercise
def int8_rows(fn: Callable) -> tuple[float | None, int]:
    """fn(w) -> (codes int8 (out, in), scales (out,)): symmetric absmax per output row, q in -127..127."""
    from ..quantize import quantize_int8_rows

    worst, cases = 0.0, 0
    for case, w in _quantization_cases():
        codes, scales = fn(w)
        want_codes, want_scales = quantize_int8_rows(w)
        worst = max(worst, compare(f"{case}: scales", torch.as_tensor(scales).float(), want_scales, tol=1e-7))
        got = torch.as_tensor(codes)
        if got.shape != want_codes.shape or not torch.equal(got.long(), want_codes.long()):
            diff = (got.long() - want_codes.long()).abs() if got.shape == want_codes.shape else None
            where = "" if diff is None else f", first at {tuple(int(i) for i in torch.nonzero(diff)[0])}"
            raise AssertionError(f"{case}: codes differ{where} (round to the nearest integer of w / scale)")
        cases += 1
    return worst, cases


@exercise
def nf4_block(fn: Callable) -> tuple[float | None, int]:
    """fn(block) with block (64,) -> (codes (64,) in 0..15, absmax): the nearest NF4 level of block / absmax."""
    from ..quantize import NF4_LEVELS, quantize_nf4_blocks

    gen = _gen(14)
    blocks = {
        "a normal block": torch.randn(64, generator=gen),
        "an outlier and small values": torch.cat([torch.tensor([25.0]), torch.randn(63, generator=gen) * 0.1]),
        "all zeros": torch.zeros(64),
        "values exactly on the levels": NF4_LEVELS[torch.arange(64) % 16] * 3.0,
    }
    for case, block in blocks.items():
        codes, absmax = fn(block.clone())
        want_codes, want_absmax = quantize_nf4_blocks(block)
        equal(f"{case}: absmax", float(absmax), float(want_absmax[0]))
        got = [int(c) for c in torch.as_tensor(codes).reshape(-1)]
        if got != want_codes.tolist():
            i = next(i for i, (a, b) in enumerate(zip(got, want_codes.tolist(), strict=False)) if a != b)
            raise AssertionError(
                f"{case}: value {i} ({float(block[i]):.4f}) got code {got[i]}, expected {int(want_codes[i])} "
                f"(level {float(NF4_LEVELS[int(want_codes[i])]):+.4f} x absmax)"
            )
    return None, len(blocks)


@exercise
def block_errors(fn: Callable) -> tuple[float | None, int]:
    """fn(w) -> (n_blocks,): the largest |w - dequantized w| in each block of 64, under int4."""
    from ..quantize import BLOCK, quantize

    worst, cases = 0.0, 0
    for case, w in _quantization_cases():
        w = w.float()
        want = (quantize(w, "int4").dequantize().float() - w).reshape(-1, BLOCK).abs().amax(-1)
        worst = max(worst, compare(case, torch.as_tensor(fn(w)).float(), want, tol=1e-6))
        cases += 1
    return worst, cases
