"""Chapter 10's quantization: NF4 equal to bitsandbytes bit for bit, round-trip error bounds,
the quantized forward against transformers, and the command line's --quantize."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SHAPES, random_tokens
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.checkpoint import TINY_DIR, load_checkpoint, random_state_dict
from helpers.hf import hf_model
from helpers.model import forward
from helpers.quantize import (
    BLOCK,
    NF4_LEVELS,
    PROJECTIONS,
    QuantizedWeight,
    QuantizeError,
    bitsandbytes_module,
    dequantize_state_dict,
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
    """One row on fbgemm (where the CPU has VNNI and the engine packs the weight), else and for
    several rows the same integer sums in float32: the products of the rounded row and the int8
    codes, as the eager W8A8 path computes them."""
    from helpers.kernels import integer_dot_products, kernel_weight
    from helpers.quantize import Int8ActivationWeight, Int8Weight

    if not packs:

        def refuse(*args):
            raise RuntimeError("no engine")

        monkeypatch.setattr(torch.ops.quantized, "linear_prepack", refuse)
    gen = torch.Generator().manual_seed(5)
    w = Int8ActivationWeight.of(Int8Weight.quantize(torch.randn(96, 320, generator=gen) * 0.05))
    fast = kernel_weight(w)
    assert (fast.key is not None) is (packs and integer_dot_products())
    for rows in (1, 4):
        x = torch.randn(rows, 320, generator=gen) * 2 + 0.3
        want = w.linear(x)
        # float32 sums of 320 products, and a tie in the row's rounding that fbgemm may send the other way
        tol = 1e-5 * float(want.abs().max()) + float(quantize_activation_rows(x)[1].max() * w.dequantize().abs().max())
        torch.testing.assert_close(fast.linear(x), want, rtol=0, atol=tol)
