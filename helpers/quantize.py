"""Quantization (chapter 10): fewer bits per weight.

Three schemes for the seven projection matrices of every block (wq wk wv wo w1 w2 w3):

- ``int8``: symmetric absmax per output row: q = round(w / s) in -127..127, s = max|row| / 127.
- ``int4``: symmetric absmax per block of 64 consecutive values (of the flattened matrix):
  q = round(w / s) in -7..7, s = max|block| / 7; stored as q + 8 in four bits.
- ``nf4``: NormalFloat4 (Dettmers et al., 2023): per block of 64, w / max|block| is rounded
  to the nearest of 16 levels placed at quantiles of a normal distribution. Compatible bit
  for bit with ``bitsandbytes.functional.quantize_4bit(quant_type="nf4", blocksize=64)``:
  same levels, same arithmetic, two codes per byte with the first in the high nibble.

Embeddings, norms and the (tied) LM head stay as they are. A quantized weight is a
``QuantizedWeight``, which multiplies itself: ``helpers.linear.linear`` computes ``x @ w.mT``,
and for a quantized ``w`` that product is ``w.linear(x)`` (``Transposed``), so the model's
functions run on a quantized state dict unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Self

import torch

SCHEMES = ("int8", "int4", "nf4")
BLOCK = 64  # values per absmax in the 4-bit schemes, as in QLoRA
NEAR_ZERO = 1e-38  # an all-zero row or block divides by this, not by 0: its codes are 0, not NaN
PROJECTIONS = (
    "attention.wq",
    "attention.wk",
    "attention.wv",
    "attention.wo",
    "feed_forward.w1",
    "feed_forward.w2",
    "feed_forward.w3",
)
# The 16 NF4 levels as bitsandbytes stores them (computed once from the normal quantiles,
# see nf4_levels_from_normal: equal to it within 1.1e-7); kept exactly, so that codes match.
NF4_LEVELS = torch.tensor(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ]
)


class QuantizeError(ValueError):
    """A scheme that does not exist, or a weight that cannot be quantized with it."""


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise QuantizeError(f"unknown quantization scheme {scheme!r}: choose one of {', '.join(SCHEMES)}")
    return scheme


def nf4_levels_from_normal(offset: float = 0.9677083) -> torch.Tensor:
    """NF4's 16 levels, derived: quantiles of a standard normal, scaled into [-1, 1], 0 exact.

    8 positive levels at the quantiles of evenly spaced probabilities from ``offset`` down
    to 1/2, 7 negative ones likewise (one fewer: the extra level lets 0 be exact), plus 0;
    all divided by the largest. ``offset`` is the mean of 1 - 1/(2*15) and 1 - 1/(2*16),
    the QLoRA paper's choice for where the outermost quantile sits. -> (16,) float64, sorted
    """
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).sort().values
    return levels / levels.max()


def pack_4bit(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes (0..15) per byte, the first in the high nibble: (n,) -> (ceil(n/2),) uint8."""
    codes = codes.reshape(-1).to(torch.uint8)
    if codes.numel() % 2:
        codes = torch.cat([codes, codes.new_zeros(1)])
    return (codes[0::2] << 4) | codes[1::2]


def unpack_4bit(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The inverse of pack_4bit: (ceil(n/2),) uint8 -> (n,) codes as int64 (ready to index a table)."""
    codes = torch.stack([packed >> 4, packed & 0xF], dim=-1).reshape(-1)
    return codes[:n].long()


def blocks_of(w: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """The values of w in blocks of ``block`` consecutive values of the flattened tensor: (n/block, block)."""
    flat = w.reshape(-1).float()
    if flat.numel() % block:
        raise QuantizeError(f"a weight of {flat.numel()} values does not split into blocks of {block}")
    return flat.view(-1, block)


def quantize_int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax per output row: codes int8 (out, in), scales float32 (out,) = max|row| / 127."""
    w = w.float()
    scales = w.abs().amax(dim=-1) / 127
    codes = torch.round(w / scales.clamp(min=NEAR_ZERO)[:, None]).clamp(-127, 127).to(torch.int8)
    return codes, scales


def quantize_int4_blocks(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax per block of 64: codes 1..15 (= q + 8, q in -7..7) as uint8 (n,), absmax float32 (n/64,)."""
    blocks = blocks_of(w)
    absmax = blocks.abs().amax(dim=-1)
    q = torch.round(blocks / (absmax.clamp(min=NEAR_ZERO) / 7)[:, None]).clamp(-7, 7)
    return (q + 8).to(torch.uint8).reshape(-1), absmax


def quantize_nf4_blocks(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NF4 per block of 64: codes 0..15 as uint8 (n,) indexing NF4_LEVELS, absmax float32 (n/64,).

    Each value, divided by its block's absmax, goes to the nearest level: the boundaries are
    the midpoints between consecutive levels (a value exactly on one goes down). As in
    bitsandbytes, the division is a multiplication by 1/absmax: the two can differ in the last
    bit, which near a boundary would change the code.
    """
    blocks = blocks_of(w)
    absmax = blocks.abs().amax(dim=-1)
    scaled = torch.clamp(blocks * (1.0 / absmax.clamp(min=NEAR_ZERO))[:, None], -1, 1)
    midpoints = (NF4_LEVELS[:-1] + NF4_LEVELS[1:]) / 2
    return torch.bucketize(scaled.reshape(-1), midpoints).to(torch.uint8), absmax


class Transposed:
    """W^T of a weight that multiplies itself: ``x @ w.mT`` is ``w.linear(x)``.

    A tensor's ``@`` does not know this object, so Python asks the right operand
    (``__rmatmul__``): the quantized weight, not the model, chooses how to multiply.
    """

    def __init__(self, weight):
        self.weight = weight

    def __rmatmul__(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.linear(x)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """The same hand-over as PyTorch sees it: ``torch.compile`` traces ``x @ w.mT`` through this
        (it does not follow Python's fallback to ``__rmatmul__``, and would cut its graph there)."""
        matmul = getattr(func, "__name__", None) in ("__matmul__", "matmul")  # Tensor.__matmul__, torch.matmul
        if matmul and len(args) == 2 and isinstance(args[1], Transposed):
            return args[1].weight.linear(args[0])
        return NotImplemented


class MultipliesItself:
    """A weight stored as codes and scales that computes its own product x W^T (``linear``)."""

    codes: torch.Tensor
    scales: torch.Tensor

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def mT(self) -> Transposed:
        return Transposed(self)

    @property
    def nbytes(self) -> int:
        """Bytes held: codes and scales."""
        return self.codes.nbytes + self.scales.nbytes

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The tensors it is stored in."""
        return self.codes, self.scales


@dataclass
class QuantizedWeight(MultipliesItself):
    """A (out, in) matrix stored in fewer bits: its codes, its scales, and how to read them back.

    One subclass per scheme, each owning its two directions: ``quantize`` (a matrix -> codes
    and scales) and ``dequantize`` (back to the matrix they stand for). The product dequantizes
    for one multiplication and drops the full matrix after it.
    dtype: the dtype ``dequantize`` returns (the weight's dtype before quantization).
    """

    shape: tuple[int, int]
    codes: torch.Tensor
    scales: torch.Tensor
    dtype: torch.dtype
    scheme: ClassVar[str]

    @classmethod
    def quantize(cls, w: torch.Tensor) -> Self:
        raise NotImplementedError

    def dequantize(self) -> torch.Tensor:
        """The matrix the codes stand for: (out, in) in ``dtype``."""
        raise NotImplementedError

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """x W^T with W dequantized for this product (and dropped after it)."""
        return x @ self.dequantize().to(x.dtype).T

    def to(self, device) -> Self:
        return type(self)(self.shape, self.codes.to(device), self.scales.to(device), self.dtype)


class Int8Weight(QuantizedWeight):
    """int8 per output row: codes int8 (out, in), scales float32 (out,)."""

    scheme = "int8"

    @classmethod
    def quantize(cls, w: torch.Tensor) -> Self:
        return cls(tuple(w.shape), *quantize_int8_rows(w), w.dtype)

    def dequantize(self) -> torch.Tensor:
        return (self.codes.float() * self.scales[:, None]).to(self.dtype)


class Int4Weight(QuantizedWeight):
    """int4 per block of 64: two codes q + 8 per byte (out*in/2,) uint8, absmax per block float32."""

    scheme = "int4"

    @classmethod
    def quantize(cls, w: torch.Tensor) -> Self:
        codes, absmax = quantize_int4_blocks(w)
        return cls(tuple(w.shape), pack_4bit(codes), absmax, w.dtype)

    def dequantize(self) -> torch.Tensor:
        q = unpack_4bit(self.codes, self.shape[0] * self.shape[1]).float() - 8
        return (q.view(-1, BLOCK) * (self.scales / 7)[:, None]).view(self.shape).to(self.dtype)


class NF4Weight(QuantizedWeight):
    """NF4 per block of 64: two level indices per byte (out*in/2,) uint8, absmax per block float32."""

    scheme = "nf4"

    @classmethod
    def quantize(cls, w: torch.Tensor) -> Self:
        codes, absmax = quantize_nf4_blocks(w)
        return cls(tuple(w.shape), pack_4bit(codes), absmax, w.dtype)

    def dequantize(self) -> torch.Tensor:
        levels = NF4_LEVELS.to(self.scales.device)[unpack_4bit(self.codes, self.shape[0] * self.shape[1])]
        return (levels.view(-1, BLOCK) * self.scales[:, None]).view(self.shape).to(self.dtype)


WEIGHT_CLASSES = {cls.scheme: cls for cls in (Int8Weight, Int4Weight, NF4Weight)}


def multiply_add_float32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a * b + c rounded once to float32, as a fused multiply-add instruction rounds it (float32
    tensors, broadcast). The product is exact in float64 (two 24-bit significands need 48 of its 53
    bits). The sum is rounded to float64 *to odd* -- when inexact, to whichever neighbour has an odd
    last bit -- so that rounding it again, to float32, gives the exact sum rounded to nearest, ties
    to even (Boldo and Melquiond, "Emulation of FMA and correctly rounded sums", IEEE TC 2008)."""
    product, c = a.double() * b.double(), c.double()
    total = product + c
    c_part = total - product  # Knuth's TwoSum: the sum's rounding error, exactly
    error = (product - (total - c_part)) + (c - c_part)
    inexact_even = (error != 0) & ((total.view(torch.int64) & 1) == 0)
    return torch.where(
        inexact_even, torch.nextafter(total, error * torch.inf), total
    ).float()  # one step towards the exact sum


def quantize_activation_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """8 bits with a zero point per row of activations, the rounding integer products need
    (W8A8): codes uint8 (..., in), scales float32 (..., 1) = (max - min) / 255 over the row with
    0 inside the range, zero points float32 (..., 1), the code that stands for 0.

    A row's range need not be centred on zero, so the 256 codes span [min(x, 0), max(x, 0)] rather
    than +-max|x| (chapter 10's zero-point quantization, with 8 bits). Computed as fbgemm's dynamic
    quantized linear computes a row, so that the two give the same codes bit for bit: the scale in
    float64, then rounded to float32; the zero point round(-min / scale) from the float64 scale
    (PyTorch's ``ChooseQuantizationParams``); each code round(z + x * (1 / s)) with z added *before*
    rounding, in one fused multiply-add, ties to even (fbgemm's ``QuantizeAvx2``). Rounding x / s
    first and adding z after differs on a value exactly halfway between two codes when z is odd:
    x / s = 2.5 and z = 1 give 2 + 1 = 3 that way, round(3.5) = 4 fbgemm's. (fbgemm also raises a
    scale below 6.1e-5 -- a row spanning less than 0.0156 -- to 6.1e-5; such a row's codes differ.)"""
    x = x.float()
    low = x.amin(dim=-1, keepdim=True).clamp(max=0).double()
    high = x.amax(dim=-1, keepdim=True).clamp(min=0).double()
    step = ((high - low) / 255).clamp(min=NEAR_ZERO)
    scales = step.float()
    zero_points = torch.round(-low / step).clamp(0, 255).float()
    codes = torch.round(multiply_add_float32(x, 1 / scales, zero_points)).clamp(0, 255).to(torch.uint8)
    return codes, scales, zero_points


def round_activations(x: torch.Tensor) -> torch.Tensor:
    """The activation values a W8A8 product sees: each row quantized (uint8 codes, a zero point) and read back."""
    codes, scales, zero_points = quantize_activation_rows(x)
    return ((codes.float() - zero_points) * scales).to(x.dtype)


class Int8ActivationWeight(Int8Weight):
    """int8 weights whose products also round the activation row to 8 bits (W8A8): the values an
    integer product multiplies (``helpers.kernels`` runs it as uint8 x int8 -> int32). Not one of
    ``SCHEMES``: the weights are int8's, only the product differs. Made from an Int8Weight (``of``)."""

    scheme = "w8a8"

    @classmethod
    def of(cls, w: Int8Weight) -> Self:
        return cls(w.shape, w.codes, w.scales, w.dtype)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return super().linear(round_activations(x))


def with_int8_activations(sd: dict) -> dict:
    """A state dict's int8 weights as W8A8 weights (the same codes; activations rounded too)."""
    int8 = Int8Weight.scheme  # matched by scheme, not class: chapter 10 defines Int8Weight as it teaches it
    return {k: Int8ActivationWeight.of(v) if getattr(v, "scheme", None) == int8 else v for k, v in sd.items()}


def quantize(w: torch.Tensor, scheme: str) -> QuantizedWeight:
    """One (out, in) weight matrix in ``scheme``."""
    check_scheme(scheme)
    if w.ndim != 2:
        raise QuantizeError(f"expected a (out, in) matrix, got shape {tuple(w.shape)}")
    return WEIGHT_CLASSES[scheme].quantize(w)


def is_projection(key: str) -> bool:
    """True for the seven projection matrices of a block (the ones quantization replaces)."""
    return key.startswith("layers.") and key.removesuffix(".weight").split(".", 2)[-1] in PROJECTIONS


def quantize_state_dict(sd: dict[str, torch.Tensor], scheme: str) -> dict:
    """The state dict with every block's seven projections quantized; the rest unchanged (shared)."""
    check_scheme(scheme)
    return {key: quantize(value, scheme) if is_projection(key) else value for key, value in sd.items()}


def dequantize_state_dict(sd: dict) -> dict[str, torch.Tensor]:
    """Plain tensors again: every QuantizedWeight replaced by the matrix it stands for."""
    return {k: v.dequantize() if isinstance(v, QuantizedWeight) else v for k, v in sd.items()}


def state_dict_bytes(sd: dict) -> int:
    """Bytes of a (possibly quantized) state dict, tied tensors counted once."""
    seen, total = set(), 0
    for value in sd.values():
        if id(value) not in seen:
            seen.add(id(value))
            total += value.nbytes  # a tensor's, or a quantized weight's codes and scales
    return total


def bitsandbytes_module():
    """``import bitsandbytes``, quietly. On CPUs with AVX-512 BF16 it logs a warning about an
    optional package (``kernels``, which would fetch a kernel from a hub) the book never uses."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    import bitsandbytes

    return bitsandbytes
