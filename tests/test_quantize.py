"""Chapter 10's quantization: NF4 equal to bitsandbytes bit for bit, round-trip error bounds,
the quantized forward against transformers, and the command line's --quantize."""

import math
import os
import subprocess
import sys
import warnings
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from conftest import SHAPES, float32_tolerance, random_tokens
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.checkpoint import TINY_DIR, load_checkpoint, random_state_dict
from helpers.hf import hf_model
from helpers.model import forward
from helpers.numerics import U32
from helpers.quantize import (
    BLOCK,
    NF4_LEVELS,
    PROJECTIONS,
    Int8ActivationWeight,
    Int8Weight,
    QuantizedWeight,
    QuantizeError,
    bitsandbytes_module,
    dequantize_state_dict,
    multiply_add_float32,
    nf4_levels_from_normal,
    pack_4bit,
    quantize,
    quantize_activation_rows,
    quantize_state_dict,
    unpack_4bit,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bnb_functional():
    bitsandbytes_module()
    import bitsandbytes.functional as Fb

    return Fb


def nf4_cases():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(96, 64, generator=gen)
    w[:1] = 0.0  # one all-zero block
    w[5, 17] = 40.0  # one large outlier: its block's other values all land near 0
    yield "96x64 with a zero block and an outlier", w
    yield "256x192 normal", torch.randn(256, 192, generator=gen) * 0.02
    yield "96x96 (rows not a multiple of 64)", torch.randn(96, 96, generator=gen)
    yield "bf16 64x320", (torch.randn(64, 320, generator=gen) * 3).bfloat16()
    ties = NF4_LEVELS[torch.randint(0, 16, (64 * 8,), generator=gen)].view(8, 64) * 2  # values exactly on levels
    ties[:, 0] = 2.0  # absmax 2 in every block: scaled values land exactly on the levels
    yield "values exactly on the levels", ties


@pytest.mark.parametrize("name, w", list(nf4_cases()), ids=[n for n, _ in nf4_cases()])
def test_nf4_equals_bitsandbytes_bit_for_bit(bnb_functional, name, w):
    """Codes, absmax and dequantized values, on the flattened matrix (blocks of 64 consecutive values)."""
    ours = quantize(w, "nf4")
    q, state = bnb_functional.quantize_4bit(w.reshape(-1), blocksize=BLOCK, quant_type="nf4", compress_statistics=False)
    assert torch.equal(ours.codes, q.reshape(-1)), f"{name}: codes differ"
    assert torch.equal(ours.scales, state.absmax), f"{name}: absmax differs"
    theirs = bnb_functional.dequantize_4bit(q, state).reshape(w.shape)
    assert torch.equal(ours.dequantize(), theirs), f"{name}: dequantized values differ"
    assert ours.dequantize().dtype == w.dtype


def test_nf4_on_every_matrix_of_the_embedded_model(bnb_functional):
    _, sd = load_checkpoint(TINY_DIR)  # bfloat16, as stored
    for key, w in quantize_state_dict(sd, "nf4").items():
        if isinstance(w, QuantizedWeight):
            q, state = bnb_functional.quantize_4bit(
                sd[key].reshape(-1), blocksize=BLOCK, quant_type="nf4", compress_statistics=False
            )
            assert torch.equal(w.codes, q.reshape(-1)) and torch.equal(w.scales, state.absmax), key


def test_nf4_levels_derived_from_the_normal_distribution():
    derived = nf4_levels_from_normal()
    assert len(derived) == 16 and derived[7] == 0 and derived[0] == -1 and derived[-1] == 1
    assert torch.all(derived[1:] > derived[:-1])
    assert (derived - NF4_LEVELS.double()).abs().max() < 2e-7  # bitsandbytes stores them to float32


def test_packing_round_trip():
    codes = torch.randint(0, 16, (101,), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    packed = pack_4bit(codes)
    assert packed.shape == (51,) and packed.dtype == torch.uint8
    assert torch.equal(unpack_4bit(packed, 101), codes.long())
    assert pack_4bit(torch.tensor([1, 2])).item() == 0x12  # first code in the high nibble, as bitsandbytes


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), rows=st.integers(1, 6), scale=st.floats(1e-3, 1e3))
def test_round_trip_error_is_within_half_a_step(seed, rows, scale):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows * 2, 96, generator=gen) * scale
    w[0, 3] *= 50  # an outlier
    # int8: within half a step of its row
    q = quantize(w, "int8")
    step = q.scales[:, None]
    assert ((q.dequantize() - w).abs() <= step / 2 * (1 + 1e-5) + 1e-30).all()
    # int4: within half a step (absmax / 7) of its block
    q = quantize(w, "int4")
    blocks, back = w.reshape(-1, BLOCK), q.dequantize().reshape(-1, BLOCK)
    step = blocks.abs().amax(-1, keepdim=True) / 7
    assert ((back - blocks).abs() <= step / 2 * (1 + 1e-5)).all()
    # nf4: each value goes to the nearest of its block's 16 levels
    q = quantize(w, "nf4")
    back = q.dequantize().reshape(-1, BLOCK)
    levels = NF4_LEVELS[None, None, :] * blocks.abs().amax(-1)[:, None, None]  # (blocks, 1, 16)
    nearest = (blocks[..., None] - levels).abs().amin(-1)
    assert ((back - blocks).abs() <= nearest + 1e-6 * blocks.abs().amax(-1, keepdim=True)).all()


def test_state_dict_quantizes_the_seven_projections_only():
    cfg = SHAPES["gqa-scaled"]
    sd = random_state_dict(cfg, seed=3)
    q = quantize_state_dict(sd, "int4")
    quantized = sorted(k for k, v in q.items() if isinstance(v, QuantizedWeight))
    assert quantized == sorted(f"layers.{i}.{p}.weight" for i in range(cfg.n_layers) for p in PROJECTIONS)
    assert q["output.weight"] is q["tok_embeddings.weight"] is sd["tok_embeddings.weight"]  # tied, untouched
    assert q["layers.0.attention_norm.weight"] is sd["layers.0.attention_norm.weight"]
    with pytest.raises(QuantizeError, match="unknown quantization scheme 'int3': choose one of int8, int4, nf4"):
        quantize_state_dict(sd, "int3")
    with pytest.raises(QuantizeError, match="does not split into blocks of 64"):
        quantize(torch.zeros(3, 5), "nf4")


@pytest.mark.parametrize("scheme", ["int8", "int4", "nf4"])
def test_quantized_forward_equals_transformers_on_the_same_weights(scheme):
    """The book's forward on quantized weights (dequantized on use) against LlamaForCausalLM
    loaded with the same dequantized weights."""
    cfg = SHAPES["gqa-scaled"]
    sd = random_state_dict(cfg, seed=5, std=0.15)
    q = quantize_state_dict(sd, scheme)
    tokens = random_tokens(64, cfg.vocab_size, seed=6)
    with torch.no_grad():
        theirs = hf_model(dequantize_state_dict(q), cfg)(tokens[None]).logits[0]
    ours = forward(tokens, q, cfg)
    assert (ours - theirs).abs().max() <= 2e-5
    assert (ours - forward(tokens, sd, cfg)).abs().max() > 1e-3, "quantization changed nothing: a weak test"


def test_nf4_forward_equals_transformers_with_linear4bit():
    """transformers + BitsAndBytesConfig(load_in_4bit=True, nf4): bitsandbytes' own Linear4bit
    modules quantize the same weights; the logits agree with the book's NF4 forward."""
    from helpers.hf import hf_model_4bit

    bnb = bitsandbytes_module()
    cfg, sd = load_checkpoint(TINY_DIR, dtype=torch.float32)
    model = hf_model_4bit(sd, cfg)
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) == 7 * cfg.n_layers
    assert "Linear4bit(in_features=128, out_features=512, bias=False)" in str(model)
    tokens = torch.tensor([128000, 791, 6864, 315, 9822, 374, 12366, 13] * 8)
    with torch.no_grad():
        theirs = model(tokens[None]).logits[0]
    assert (forward(tokens, quantize_state_dict(sd, "nf4"), cfg) - theirs).abs().max() <= 2e-5


def cli(*args, timeout: int = 300):
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CHECKPOINT"}
    return subprocess.run(
        [sys.executable, "-m", "helpers", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_cli_quantize_still_answers_paris_and_writes_the_quantized_logits(tmp_path):
    base = ("generate", "--prompt", "The capital of France is", "--max-new-tokens", "2")
    for scheme in ("int8", "int4", "nf4"):
        r = cli(*base, "--quantize", scheme)
        assert r.returncode == 0 and r.stdout.startswith("The capital of France is Paris"), (scheme, r.stderr)
    # Inductor compiles the 16 blocks' step: up to 4 minutes on a busy 2-core machine, cold
    r = cli(*base, "--quantize", "int4", "--compile", timeout=900)
    assert r.returncode == 0 and r.stdout.startswith("The capital of France is Paris"), ("int4 --compile", r.stderr)
    out = tmp_path / "q.pt"
    r = cli("logits", "--prompt", "The capital of France is", "--quantize", "int4", "--out", str(out))
    assert r.returncode == 0, r.stderr
    data = torch.load(out, weights_only=True)
    cfg, sd = load_checkpoint(TINY_DIR, dtype=torch.float32)
    assert data["logits"].dtype == torch.float32
    torch.testing.assert_close(data["logits"], forward(data["tokens"], quantize_state_dict(sd, "int4"), cfg))
    assert "quantized int4" in r.stdout


def test_activation_rows_read_back_within_half_a_step_and_zero_exactly():
    x = torch.cat([torch.randn(4, 300) * 3 + 1, torch.rand(1, 300), -torch.rand(1, 300), torch.zeros(1, 300)])
    x[0, 7] = 0.0
    codes, scales, zero_points = quantize_activation_rows(x)
    assert codes.dtype == torch.uint8 and scales.shape == zero_points.shape == (7, 1)
    back = (codes.float() - zero_points) * scales
    assert (back - x).abs().le(scales / 2 * (1 + 1e-5)).all()
    assert back[0, 7] == 0 and back[6].eq(0).all()  # 0 is a code: zeros (and padding) stay exact
    assert zero_points[4] == 0 and codes[4].max() == 255  # all positive: the 256 codes span 0..max
    assert zero_points[5] == 255 and codes[5].min() == 0  # all negative: min..0
    # the same rounding as PyTorch's own dynamic quantization (fbgemm's parameters) up to ties
    ref = torch.quantize_per_tensor_dynamic(x[:1], torch.quint8, False)
    assert ref.q_zero_point() == int(zero_points[0]) and math.isclose(ref.q_scale(), float(scales[0]), rel_tol=1e-6)
    assert (ref.int_repr().int() - codes[:1].int()).abs().max() <= 1


@pytest.mark.parametrize("packs", [True, False])
def test_w8a8_kernel_equals_its_eager_rounding_with_or_without_fbgemm(monkeypatch, packs):
    """One row on fbgemm (where its sums are exact and the engine packs the weight), else and for
    several rows the same integer sums in float32: the products of the rounded row and the int8
    codes, as the eager W8A8 path computes them. The codes are the same on every path (fbgemm's
    rounding), so what is left is the eager path's float32 rounding of its sums."""
    from helpers.kernels import fbgemm_sums_exactly, kernel_weight

    if not packs:

        def refuse(*args):
            raise RuntimeError("no engine")

        monkeypatch.setattr(torch.ops.quantized, "linear_prepack", refuse)
    gen = torch.Generator().manual_seed(5)
    w = Int8ActivationWeight.of(Int8Weight.quantize(torch.randn(96, 320, generator=gen) * 0.05))
    fast = kernel_weight(w)
    assert (fast.key is not None) is (packs and fbgemm_sums_exactly())
    for rows in (1, 4):
        x = torch.randn(rows, 320, generator=gen) * 2 + 0.3
        want = w.linear(x)
        codes, scales, zero_points = quantize_activation_rows(x)
        magnitude = float((((codes.float() - zero_points) * scales).abs() @ w.dequantize().abs().T).max())
        torch.testing.assert_close(fast.linear(x), want, rtol=0, atol=float32_tolerance(320, magnitude))


# W8A8's one-row product runs on fbgemm only where fbgemm sums in int32 (its AVX-512 VNNI kernel).
@pytest.mark.parametrize(
    "flags, environ, engine, uses_fbgemm",
    [
        ({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, {}, "x86", True),
        ({"avx2", "avx512f", "avx512_vnni"}, {}, "fbgemm", True),
        ({"avx2", "avx_vnni"}, {}, "x86", False),  # AVX-VNNI without AVX-512: fbgemm runs its AVX2 kernel
        ({"avx2", "avx512f", "avx512bw"}, {}, "x86", False),  # AVX-512 without VNNI: 16-bit pair sums
        ({"avx2"}, {}, "x86", False),
        (set(), {}, "x86", False),  # no flags at all (not Linux, or not x86)
        ({"avx512_vnni"}, {"FBGEMM_ENABLE_INSTRUCTIONS": "avx2"}, "x86", False),  # forced to a saturating kernel
        ({"avx512_vnni"}, {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX512"}, "x86", False),
        ({"avx512_vnni"}, {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX512_E1"}, "x86", True),
        ({"avx512_vnni"}, {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, "x86", True),  # not fbgemm's
        ({"avx512_vnni"}, {}, "onednn", False),  # another engine's kernel
        ({"avx512_vnni"}, {}, "qnnpack", False),
    ],
)
def test_w8a8_uses_fbgemm_only_where_its_sums_are_exact(flags, environ, engine, uses_fbgemm):
    from helpers.kernels import fbgemm_sums_exactly

    assert fbgemm_sums_exactly(flags, environ, engine) is uses_fbgemm


@pytest.mark.parametrize(
    "flags, environ, packed",
    [
        ({"avx2", "avx_vnni"}, {}, False),
        ({"avx2", "avx512f", "avx512_vnni"}, {}, True),
        (set(), {}, False),
        ({"avx2", "avx512f", "avx512_vnni"}, {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}, False),
    ],
)
def test_w8a8_layout_follows_the_policy(monkeypatch, flags, environ, packed):
    """With the CPU's flags and the environment replaced: fbgemm's packed weight only where its sums
    are exact, else the float32 integer sums (the product is not computed here: on a CPU without
    the flags, fbgemm would not run the kernel they name)."""
    import helpers.kernels as kernels

    monkeypatch.setattr(kernels, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.delenv("FBGEMM_ENABLE_INSTRUCTIONS", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.backends.quantized, "engine", "x86")
    w = Int8ActivationWeight.of(Int8Weight.quantize(torch.randn(8, 64, generator=torch.Generator().manual_seed(1))))
    assert (kernels.kernel_weight(w).key is not None) is packed


def fbgemm_packed(codes: torch.Tensor, scales: torch.Tensor):
    """int8 codes (out, in) with one scale per row, packed by PyTorch's quantized engine (fbgemm here)."""
    zero = torch.zeros(codes.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor, torch.quantize_per_channel")
        q = torch._make_per_channel_quantized_tensor(codes, scales.double(), zero, 0)
    return torch.ops.quantized.linear_prepack(q, None)


def exact_sums(codes: torch.Tensor, zero_points: torch.Tensor, weight_codes: torch.Tensor) -> torch.Tensor:
    return (codes.long() - zero_points.long()) @ weight_codes.long().T


def saturating_pair_sums(codes: torch.Tensor, zero_points: torch.Tensor, weight_codes: torch.Tensor) -> torch.Tensor:
    """What fbgemm's AVX2 and AVX-512 kernels compute (vpmaddubsw): each two neighbouring products
    q_k w_k of the raw codes added in an int16 that saturates, the pairs summed in int32, and the
    zero point's z sum_k w_k taken off after."""
    products = codes.long()[:, None, :] * weight_codes.long()[None, :, :]  # (N, out, in)
    pairs = products.view(*products.shape[:-1], -1, 2).sum(-1).clamp(-(2**15), 2**15 - 1)
    return pairs.sum(-1) - zero_points.long() * weight_codes.long().sum(-1)


def test_w8a8_float32_sums_at_the_1b_down_projection_stay_within_their_bound():
    """K = 8192 (the 1B model's down projection) with the most extreme codes: |q - z| = 255 (rows of
    0 and 255 with z = 0, rows of -255 and 0 with z = 255) and weights +-127, so that the sums reach
    8192 x 255 x 127 = 2.7e8, 16 times 2^24. The float32 sums round there; they stay within
    gamma_K sum|terms| of the exact int64 sums, a bound 1,000 times smaller than what saturating
    16-bit pair sums get wrong. fbgemm (where its sums are exact) gives the exact sums rounded once."""
    from helpers.kernels import Int8DynamicKernelWeight, fbgemm_sums_exactly, integer_sums_float32

    K, out = 8192, 64
    gen = torch.Generator().manual_seed(8)
    w = (torch.randint(0, 2, (out, K), generator=gen) * 254 - 127).to(torch.int8)
    w[0], w[1] = 127, -127
    signs = torch.randint(0, 2, (2, K), generator=gen).float()
    x = torch.stack([torch.full((K,), 255.0), signs[0] * 255, -signs[1] * 255, torch.full((K,), -255.0)])
    x[3, 0] = 0.0  # the row's range still holds 0 (min(x, 0)..max(x, 0)): scale 1
    codes, scales, zero_points = quantize_activation_rows(x)
    assert scales.eq(1).all() and zero_points.flatten().tolist() == [0, 0, 255, 255]
    assert set(codes.unique().tolist()) == {0, 255}

    exact = exact_sums(codes, zero_points, w)
    terms = (codes.long() - zero_points.long()).abs() @ w.long().abs().T  # sum_k |q_k - z| |w_jk|
    assert terms.max() == K * 255 * 127 and terms.max() > 2**24  # the partial sums must round
    gamma = K * U32 / (1 - K * U32)
    bound = gamma * terms.double()
    got = integer_sums_float32(codes, zero_points, w)
    error = (got.double() - exact.double()).abs()
    assert (error <= bound).all(), f"largest error {error.max():.0f}, bound {bound.max():.0f}"
    # the bound is tight enough to catch fbgemm's saturating kernel: it misses by far more
    saturated = saturating_pair_sums(codes, zero_points, w)
    assert ((saturated - exact).abs().double() > bound).any()
    assert (saturated - exact).abs().max() > 1000 * bound.max()
    # below 2^24 the float32 sums are exact: 512 terms of 255 x 127 add up to less
    small = codes.clone()
    small[:, 512:] = zero_points.to(torch.uint8)
    assert torch.equal(integer_sums_float32(small, zero_points, w).long(), exact_sums(small, zero_points, w))

    if fbgemm_sums_exactly():  # int32 sums, converted to float32 once (the scales are 1)
        fast = Int8DynamicKernelWeight.layout(Int8ActivationWeight((out, K), w, torch.ones(out), torch.float32))
        assert fast.key is not None
        theirs = torch.cat([fast.linear(row[None]) for row in x]).double()
        assert ((theirs - exact.double()).abs() <= U32 * exact.double().abs()).all()


def fbgemm_codes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The uint8 codes, scale and zero point fbgemm's dynamic linear gives one row (in,), read back
    through an identity weight: output j is s (q_j - z), from which q_j - z is recovered exactly."""
    n = x.shape[-1]
    out = torch.ops.quantized.linear_dynamic(x[None], fbgemm_packed(torch.eye(n, dtype=torch.int8), torch.ones(n)))
    with warnings.catch_warnings():  # deprecated quantized tensors: only to read the row's scale and zero point
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor, torch.quantize_per_channel")
        ref = torch.quantize_per_tensor_dynamic(x[None], torch.quint8, False)  # the same ChooseQuantizationParams
    scale, zero_point = torch.tensor(ref.q_scale(), dtype=torch.float32), ref.q_zero_point()
    codes = torch.round(out[0].double() / scale.double()).long() + zero_point
    return codes, scale, torch.tensor(float(zero_point))


def tie_rows():
    """Rows whose every value but the two ends lies exactly halfway between two codes: a power-of-two
    scale s and min = -z s, max = (255 - z) s, so that x / s + z = k + 0.5 exactly."""
    for z in (1, 37, 128, 200, 254):
        for s in (2.0**-6, 2.0**-1, 2.0**3):
            ties = (torch.arange(-z, 255 - z - 1, dtype=torch.float64) + 0.5) * s
            yield f"z={z}, s={s}", torch.cat([torch.tensor([-z * s, (255 - z) * s]), ties]).float()


@pytest.mark.skipif("fbgemm" not in torch.backends.quantized.supported_engines, reason="PyTorch built without fbgemm")
def test_activation_codes_equal_fbgemms_bit_for_bit_on_ties_and_random_rows():
    """fbgemm rounds a row as round(z + x * (1 / s)), z added before rounding, ties to even; on a tie
    with an odd z that is one code away from z + round(x / s). The book's codes, scales and zero
    points equal fbgemm's on rows of exact ties and on random rows. (On any x86 CPU fbgemm runs:
    it quantizes the row with the same AVX2 code whichever kernel then sums.)"""
    cases = list(tie_rows())
    gen = torch.Generator().manual_seed(3)
    for i in range(100):
        row = torch.randn(256, generator=gen) * float(torch.rand((), generator=gen) * 8 + 0.05)
        row += float(torch.randn((), generator=gen))
        cases.append((f"random {i}", row))
    near = cases[1][1].clone()  # one step of float32 either side of each tie
    cases += [("below ties", torch.nextafter(near, near - 1)), ("above ties", torch.nextafter(near, near + 1))]
    odd_ties = 0
    for name, row in cases:
        codes, scale, zero_point = quantize_activation_rows(row[None])
        want_codes, want_scale, want_zero = fbgemm_codes(row)
        assert torch.equal(scale[0, 0], want_scale) and zero_point[0, 0] == want_zero, name
        assert torch.equal(codes[0].long(), want_codes), f"{name}: {(codes[0].long() != want_codes).sum()} codes differ"
        if name.startswith("z=") and int(want_zero) % 2:
            odd_ties += int(((torch.round(row / scale[0]) + zero_point[0]) != want_codes).sum())
    assert odd_ties > 1000  # z + round(x / s) would have missed every tie of an odd z


def float32_nearest(value: Fraction) -> float:
    """An exact rational rounded to the nearest float32, ties to even (the reference for an FMA)."""
    f = torch.tensor(float(value), dtype=torch.float32)  # within one float32 step of the answer
    candidates = torch.nextafter(f, f - 1), f, torch.nextafter(f, f + 1)
    distances = [abs(Fraction(float(c)) - value) for c in candidates]
    best = min(distances)
    ties = [c for c, d in zip(candidates, distances, strict=True) if d == best]
    return float(min(ties, key=lambda c: int(c.view(torch.int32)) % 2))


def test_multiply_add_float32_rounds_once_as_an_fma_does():
    """a * b + c rounded once: against exact rationals on random values, and on a case where rounding
    to float64 first and then to float32 goes wrong (a * b = 2^-17 + 2^-47 and c = 200: float64
    drops the 2^-47 and leaves a float32 tie, which goes down; the exact sum is above it)."""
    a = torch.tensor(13325 * 2.0**-20)
    b = torch.tensor(80581 * 2.0**-27)  # 13325 x 80581 = 2^30 + 1
    c = torch.tensor(200.0)
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    assert exact == 200 + Fraction(1, 2**17) + Fraction(1, 2**47)
    assert float(multiply_add_float32(a, b, c)) == float32_nearest(exact) == 200 + 2.0**-16
    assert float((a.double() * b.double() + c.double()).float()) == 200.0  # the double rounding it avoids
    gen = torch.Generator().manual_seed(4)
    a, b = torch.randn(2000, generator=gen), torch.randn(2000, generator=gen) * 100
    c = torch.randint(0, 256, (2000,), generator=gen).float()
    got = multiply_add_float32(a, b, c)
    for i in range(2000):
        exact = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        assert float(got[i]) == float32_nearest(exact), i
