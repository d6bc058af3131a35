"""Chapter 10: quantization."""

import torch

from helpers import check
from helpers.quantize import NF4_LEVELS, quantize


def my_int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w = w.float()
    scales = w.abs().amax(dim=1) / 127
    codes = torch.round(w / scales.clamp(min=1e-38)[:, None]).clamp(-127, 127).to(torch.int8)
    return codes, scales


def my_nf4_block(block: torch.Tensor) -> tuple[torch.Tensor, float]:
    absmax = block.abs().max()
    scaled = torch.clamp(block.float() * (1.0 / absmax.clamp(min=1e-38)), -1, 1)
    midpoints = (NF4_LEVELS[:-1] + NF4_LEVELS[1:]) / 2  # between neighbouring levels; ties go down
    return torch.bucketize(scaled, midpoints), float(absmax)


def my_block_errors(w: torch.Tensor) -> torch.Tensor:
    return (quantize(w, "int4").dequantize() - w).reshape(-1, 64).abs().amax(dim=1)


EXERCISES = [(check.int8_rows, my_int8_rows), (check.nf4_block, my_nf4_block), (check.block_errors, my_block_errors)]

# The answers to the questions the exercises ask in prose (notebooks/solutions/README.md).
ANSWERS = {
    "int8_rows: per tensor or per row, how many weights round to 0?": (
        "Chapter 10 prints it for the matrix with the largest outlier: one scale for the whole matrix "
        "rounds 1,670 of its 65,536 weights to 0, one scale per row 605. A single scale is set by the "
        "largest weight of all, so every row with smaller weights is rounded on a coarse grid; per row, "
        "an outlier coarsens only its own row."
    ),
    "block_errors: explain the block with the largest error": (
        "The largest error sits in the block that holds the matrix's largest |weight|: the block's scale "
        "is absmax / 7, so its step is set by that one weight and every other value of the block is "
        "rounded on a grid 1/7 of the outlier wide; the error is up to half a step, absmax / 14. "
        "Blocks without an outlier have a small absmax and small errors."
    ),
}
