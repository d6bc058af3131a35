"""Chapter 10's exercise checks: quantization."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .common import _gen, call, compare, equal, exercise, no_nan_inside


def _quantization_cases():
    gen = _gen(13)
    w = torch.randn(6, 128, generator=gen) * 0.05
    w[2, 40] = 1.5  # an outlier in row 2, block 4
    w[4] = 0.0  # a row (two blocks) of zeros
    yield "random 6x128 with an outlier and a zero row", w
    yield "bf16 8x64", (torch.randn(8, 64, generator=gen) * 3).bfloat16()
    negative = torch.randn(4, 64, generator=gen) * 0.02
    negative[:, 7] = -0.9  # every row's largest magnitude is negative
    yield "rows whose largest |w| is negative", negative


@exercise
def int8_rows(fn: Callable) -> tuple[float | None, int]:
    """fn(w) -> (codes int8 (out, in), scales (out,)): symmetric absmax per output row, q in -127..127."""
    from ..quantize import quantize_int8_rows

    worst, cases = 0.0, 0
    for case, w in _quantization_cases():
        codes, scales = no_nan_inside(case, fn, w)  # 0 / 0 for an all-zero row, before the cast hides it
        want_codes, want_scales = quantize_int8_rows(w)
        worst = max(worst, compare(f"{case}: scales", torch.as_tensor(scales).float(), want_scales, tol=1e-7))
        got = torch.as_tensor(codes)
        if got.dtype != torch.int8:
            raise AssertionError(f"{case}: codes are {got.dtype}, expected torch.int8")
        if got.shape != want_codes.shape:
            raise AssertionError(f"{case}: codes have shape {tuple(got.shape)}, expected {tuple(want_codes.shape)}")
        # w / scale in float64: a value exactly halfway between two integers may round either way
        exact = w.double() / want_scales.double().clamp(min=1e-300)[:, None]
        tie = ((exact - exact.floor()) - 0.5).abs() < 1e-4
        ok = (got.long() == want_codes.long()) | (
            tie & ((got.double() == exact.floor()) | (got.double() == exact.ceil()))
        )
        if not ok.all():
            where = tuple(int(i) for i in torch.nonzero(~ok)[0])
            raise AssertionError(
                f"{case}: codes differ, first at {where}: got {int(got[where])}, expected {int(want_codes[where])} "
                f"(w / scale = {float(exact[where]):.3f}: round to the nearest integer)"
            )
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
        "the largest magnitude negative": torch.cat([torch.tensor([-4.0]), torch.rand(63, generator=gen)]),
        # halfway between levels, exactly (midpoints that float32 represents without rounding), with
        # absmax 1 so that scaling changes nothing: each must go to the lower level
        "values exactly halfway between two levels": torch.cat(
            [((NF4_LEVELS[:-1] + NF4_LEVELS[1:]) / 2)[[2, 6, 7, 9, 11, 13]].repeat(10), torch.ones(4)]
        ),
    }
    for case, block in blocks.items():
        codes, absmax = call(case, fn, block.clone())
        want_codes, want_absmax = quantize_nf4_blocks(block)
        equal(f"{case}: absmax", float(absmax), float(want_absmax[0]))
        got = [int(c) for c in torch.as_tensor(codes).reshape(-1)]
        if got != want_codes.tolist():
            i = next(i for i, (a, b) in enumerate(zip(got, want_codes.tolist(), strict=False)) if a != b)
            tie = "halfway" in case
            raise AssertionError(
                f"{case}: value {i} ({float(block[i]):.4f}) got code {got[i]}, expected {int(want_codes[i])} "
                f"(level {float(NF4_LEVELS[int(want_codes[i])]):+.4f} x absmax"
                + (": a value exactly between two levels goes to the lower one)" if tie else ")")
            )
    return None, len(blocks)


@exercise
def block_errors(fn: Callable) -> tuple[float | None, int]:
    """fn(w) -> (w.numel() / 64,): the largest |w - dequantized w| in each block of 64 consecutive
    values of the flattened matrix, under int4 (a (rows, blocks per row) tensor is accepted too)."""
    from ..quantize import BLOCK, quantize

    worst, cases = 0.0, 0
    for case, w in _quantization_cases():
        w = w.float()
        want = (quantize(w, "int4").dequantize().float() - w).reshape(-1, BLOCK).abs().amax(-1)
        got = torch.as_tensor(call(case, fn, w)).float()
        if got.shape == (w.shape[0], w.shape[1] // BLOCK):  # per row: the same blocks, in the same order
            got = got.reshape(-1)
        worst = max(worst, compare(case, got, want, tol=1e-6))
        cases += 1
    return worst, cases
