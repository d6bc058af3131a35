"""Quantized weights (chapter 10) laid out for PyTorch's weight-only CPU kernels.

The book's int8 and int4 codes multiply through ``aten._weight_int8pack_mm`` and
``aten._weight_int4pack_mm_for_cpu``, which read the codes once per product and never
build the dequantized matrix. W8A8 weights (int8 codes, activations rounded to 8 bits too)
multiply in integers: uint8 x int8 products summed in int32 by fbgemm's dynamic quantized
linear, which reaches the CPU's integer dot-product instruction (AVX-512 VNNI's ``vpdpbusd``)
where fbgemm has a kernel for it (``fbgemm_sums_exactly``). ``for_cpu_kernels`` converts a
state dict once (the same values, another layout); ``helpers.compiled.generate_compiled``
decodes with it.
"""

from __future__ import annotations

import functools
import itertools
import os
import warnings
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Self

import torch

from .checkpoint import expected_shapes
from .config import ModelConfig
from .quantize import (
    BLOCK,
    Int4Weight,
    Int8ActivationWeight,
    Int8Weight,
    MultipliesItself,
    QuantizedWeight,
    quantize_activation_rows,
    quantize_state_dict,
    unpack_4bit,
    with_int8_activations,
)


@dataclass
class KernelWeight(MultipliesItself):
    """A quantized weight laid out for one of PyTorch's weight-only CPU kernels; multiplies like a
    QuantizedWeight (``x @ w.mT``), reading the codes once per product and never building
    the dequantized matrix. One subclass per kernel; ``layout`` builds it from the book's weight."""

    shape: tuple[int, int]
    codes: torch.Tensor
    scales: torch.Tensor

    def product(self, rows: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        out = self.product(rows, self.scales.to(x.dtype))  # scales stored in the weights' dtype: a no-op then
        return out.view(*x.shape[:-1], self.shape[0])


class Int8KernelWeight(KernelWeight):
    """``aten._weight_int8pack_mm``: codes (out, in) int8 as the book stores them, one scale per row;
    in a compiled one-row step, a reduction Inductor generates instead."""

    @classmethod
    def layout(cls, w: Int8Weight) -> Self:
        return cls(w.shape, w.codes, w.scales.to(w.dtype))

    def product(self, rows: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        if rows.shape[0] == 1 and torch.compiler.is_compiling():
            # a compiled decode step: a multiply-and-sum over the int8 codes, scaled after the sum,
            # which Inductor turns into one loop that streams them (faster than ATen's kernel on a CPU)
            return ((rows.float()[:, None, :] * self.codes.float()).sum(-1) * scales.float()).to(rows.dtype)
        return torch.ops.aten._weight_int8pack_mm(rows, self.codes, scales)


class Int4KernelWeight(KernelWeight):
    """``aten._weight_int4pack_mm_for_cpu``: codes in its tiled layout and, per group of 64 along a
    row, a scale and a zero point (here 0: the book's int4 is symmetric)."""

    @classmethod
    def layout(cls, w: Int4Weight) -> Self | Int4Weight:
        out_features, in_features = w.shape
        if in_features % BLOCK:
            return w  # the kernel's groups of 64 run along a row: such a matrix stays on the dequantize path
        codes = unpack_4bit(w.codes, out_features * in_features).view(out_features, in_features).to(torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, INT4_INNER_TILES)
        scales = (w.scales / 7).view(out_features, in_features // BLOCK).T  # (groups, out): absmax / 7 per code
        scale_and_zero = torch.stack([scales, torch.zeros_like(scales)], -1).contiguous().to(w.dtype)
        return cls(w.shape, packed, scale_and_zero)

    def product(self, rows: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.codes, BLOCK, scales)


# fbgemm's packed weights are not tensors: the compiled step reaches them through a custom op
# that takes a number, the key of the weight's entry here (dropped with the weight)
_PACKED: dict[int, object] = {}
_KEYS = itertools.count()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The x86 CPU's feature flags, from Linux's /proc/cpuinfo (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return frozenset(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return frozenset()


# fbgemm chooses its uint8 x int8 kernel from the CPU (read through cpuinfo) and from its own
# variable FBGEMM_ENABLE_INSTRUCTIONS, never from PyTorch's ATEN_CPU_CAPABILITY or oneDNN's
# ONEDNN_MAX_CPU_ISA: on an AVX-512 VNNI CPU, under ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
# (the second run of `make test`) it still sums with VNNI, exactly, while FBGEMM_ENABLE_INSTRUCTIONS=AVX2
# or AVX512 makes the same product saturate (measured with torch 2.13: 64 products 255 x 127 gave
# 1,048,544 = 32 x 32,767 instead of 2,072,640).
FBGEMM_ISA_VARIABLE = "FBGEMM_ENABLE_INSTRUCTIONS"
FBGEMM_WITHOUT_VNNI = frozenset({"AVX2", "AVX512", "AVX512_256"})  # its values that select a kernel without VNNI
FBGEMM_ENGINES = ("x86", "fbgemm")  # the quantized engines whose linear_prepack packs for fbgemm


def fbgemm_sums_exactly(
    flags: Iterable[str] | None = None, environ: Mapping[str, str] | None = None, engine: str | None = None
) -> bool:
    """Whether fbgemm's dynamic quantized linear sums its uint8 x int8 products exactly, in int32.

    fbgemm has one such kernel per instruction set it knows: avx512_vnni, avx512 and avx2. Only the
    first is exact: ``vpdpbusd`` adds four products straight into an int32. The other two use
    ``vpmaddubsw``, which adds two neighbouring products in an int16 that saturates (255 x 127 x 2 =
    64,770 does not fit) before widening. AVX-VNNI (``avx_vnni``: the same instruction on 256-bit
    registers, on CPUs without AVX-512) is not one of fbgemm's instruction sets: there it runs its
    AVX2 kernel. So the CPU must have ``avx512_vnni``, FBGEMM_ENABLE_INSTRUCTIONS must not force a
    kernel without VNNI, and PyTorch's quantized engine must pack weights for fbgemm (``onednn`` and
    ``qnnpack`` have kernels of their own). Each argument defaults to this process's: the CPU's
    flags, ``os.environ``, ``torch.backends.quantized.engine``."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    forced = (os.environ if environ is None else environ).get(FBGEMM_ISA_VARIABLE, "").upper()
    engine = torch.backends.quantized.engine if engine is None else engine
    return "avx512_vnni" in flags and forced not in FBGEMM_WITHOUT_VNNI and engine in FBGEMM_ENGINES


def integer_sums_float32(codes: torch.Tensor, zero_points: torch.Tensor, weight_codes: torch.Tensor) -> torch.Tensor:
    """W8A8's integer sums, sum_k (q_k - z) w_jk, computed in float32 where fbgemm does not run:
    codes uint8 (N, in) and zero points (N, 1) of the rounded rows, int8 weight codes (out, in) -> (N, out).

    Each term is an integer of magnitude at most 255 x 127 = 32,385, which float32 holds exactly.
    The sum is exact whenever sum_k |q_k - z| |w_jk| < 2^24 = 16,777,216: every partial sum, in
    whatever order the matrix product adds, is then an integer below 2^24, and float32 holds every
    one of those. Beyond 2^24 the partial sums round: the result is within gamma_in sum_k |q_k - z| |w_jk|
    of the exact sum, gamma_n = n u / (1 - n u), u = 2^-24 (Higham, *Accuracy and Stability of
    Numerical Algorithms*, section 3.1) -- in practice within a few sqrt(in) u times it, as rounding
    errors of both signs cancel. At the 1B shape the down projection sums in = 8192 terms: in the
    worst case (every |q - z| = 255, every |w| = 127) 8192 x 32,385 = 2.7e8, 16 times 2^24. fbgemm's
    int32 sums are exact there; these may differ from them by that bound."""
    return (codes.float() - zero_points) @ weight_codes.T.float()


@torch.library.custom_op("llama_scratch::int8_dynamic_linear", mutates_args=())
def int8_dynamic_linear(x: torch.Tensor, key: int, out_features: int) -> torch.Tensor:
    """One row (1, in) times a packed int8 weight: fbgemm rounds the row to uint8 with a zero point
    (as ``quantize_activation_rows`` does), sums int8 x uint8 products into int32 and scales them."""
    return torch.ops.quantized.linear_dynamic(x.float(), _PACKED[key], False).to(x.dtype)


@int8_dynamic_linear.register_fake
def int8_dynamic_linear_shape(x: torch.Tensor, key: int, out_features: int) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], out_features)


@dataclass
class Int8DynamicKernelWeight(KernelWeight):
    """W8A8: int8 codes (out, in) and one scale per row, as the book stores them, and the same codes
    packed for fbgemm (``key``). A one-row product (decoding) runs on fbgemm where its sums are exact
    (``fbgemm_sums_exactly``); several rows (a prompt), and one row elsewhere, multiply the rows
    rounded by ``quantize_activation_rows`` (the codes fbgemm's rounding gives) by the weight codes
    in float32 (``integer_sums_float32``: the same integer sums below 2^24, rounded beyond)."""

    key: int | None = None

    @classmethod
    def layout(cls, w: Int8ActivationWeight) -> Self:
        weight = cls(w.shape, w.codes, w.scales)
        if w.codes.device.type == "cpu":  # (on ``meta``, to count bytes: codes and scales only)
            zero = torch.zeros(w.shape[0], dtype=torch.long)
            with warnings.catch_warnings():  # PyTorch deprecates quantized tensors; fbgemm's prepack takes one
                warnings.filterwarnings("ignore", "torch.quantize_per_tensor, torch.quantize_per_channel")
                q = torch._make_per_channel_quantized_tensor(w.codes, w.scales.double(), zero, 0)
            if not fbgemm_sums_exactly():
                return weight  # fbgemm would sum pairs of uint8 x int8 products in 16 bits, and saturate
            try:
                packed = torch.ops.quantized.linear_prepack(q, None)
            except RuntimeError:  # a quantized engine without per-row int8 weights
                return weight
            weight.key = next(_KEYS)
            _PACKED[weight.key] = packed
            weakref.finalize(weight, _PACKED.pop, weight.key, None)
        return weight

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] == 1 and self.key is not None:
            out = int8_dynamic_linear(rows, self.key, self.shape[0])
        else:
            codes, scales, zero_points = quantize_activation_rows(rows)
            out = (integer_sums_float32(codes, zero_points, self.codes) * scales * self.scales).to(x.dtype)
        return out.view(*x.shape[:-1], self.shape[0])


# which kernel layout each scheme has; NF4 has none and stays as it is (compiled, Inductor fuses
# its dequantization into the product)
KERNEL_LAYOUTS = {
    Int8Weight: Int8KernelWeight.layout,
    Int4Weight: Int4KernelWeight.layout,
    Int8ActivationWeight: Int8DynamicKernelWeight.layout,
}
KERNEL_SCHEMES = tuple(cls.scheme for cls in KERNEL_LAYOUTS)  # the schemes PyTorch has CPU kernels for
INT4_INNER_TILES = 2  # _convert_weight_to_int4pack_for_cpu's innerKTiles: its layout's k-tiling


def quantize_for_kernels(sd: dict, scheme: str) -> dict:
    """``quantize_state_dict`` for one of KERNEL_SCHEMES, in the kernels' layout (w8a8: int8's codes)."""
    if scheme == Int8ActivationWeight.scheme:
        return for_cpu_kernels(with_int8_activations(quantize_state_dict(sd, Int8Weight.scheme)))
    return for_cpu_kernels(quantize_state_dict(sd, scheme))


def kernel_weight(w: QuantizedWeight) -> KernelWeight | QuantizedWeight:
    """The same int8 or int4 weight in the kernels' layout (exactly the same values); others as they are."""
    layout = KERNEL_LAYOUTS.get(type(w))
    return layout(w) if layout else w


def for_cpu_kernels(sd: dict) -> dict:
    """The state dict with its int8 and int4 weights on a CPU (or ``meta``, to count bytes) in the
    kernels' layout; everything else as it is, so a converted dict passes through unchanged.
    Repacking int4 takes seconds at the 1B shape: convert once, pass the result to each
    ``generate_compiled``."""
    return {
        k: kernel_weight(v) if isinstance(v, QuantizedWeight) and v.codes.device.type in ("cpu", "meta") else v
        for k, v in sd.items()
    }


def bytes_per_token(cfg: ModelConfig, dtype: torch.dtype, scheme: str | None = None) -> int:
    """Weight bytes one decode step reads: every block's matrices and norms, the final norm,
    the LM head (V x d, never quantized), and one embedding row. With a ``scheme``, the seven
    projections count as the kernels store them: codes and scales."""
    with torch.device("meta"):
        sd = {k: torch.empty(s, dtype=dtype) for k, s in expected_shapes(cfg).items()}
    if scheme:
        sd = quantize_for_kernels(sd, scheme)
    read = sum(v.nbytes for k, v in sd.items() if k not in ("tok_embeddings.weight", "output.weight"))
    head = sd["output.weight"]
    return read + head.nbytes + head.shape[1] * head.element_size()
