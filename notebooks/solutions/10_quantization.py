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
