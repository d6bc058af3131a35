"""Sampling rules, the generation loop, and the KV cache (cached == uncached, token by token)."""

import dataclasses
import re

import pytest
import torch
from conftest import SHAPES, chain_terms, float32_tolerance, logit_tolerance, random_tokens
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.checkpoint import random_state_dict
from helpers.config import ModelConfig, llama_3_2_1b_config
from helpers.generation import generate, generate_uncached
from helpers.kv_cache import KVCache, cache_bytes_per_token
from helpers.model import forward
from helpers.quantize import quantize_activation_rows
from helpers.rope import precompute_freqs_cis
from helpers.sampling import (
    GREEDY,
    Sampling,
    apply_temperature,
    greedy,
    sample_next_token,
    top_k_filter,
    top_p_filter,
)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.integers(1, 40))
def test_top_k_keeps_exactly_the_k_largest(seed, k):
    logits = torch.randn(40, generator=torch.Generator().manual_seed(seed))
    kept = torch.isfinite(top_k_filter(logits, k))
    assert int(kept.sum()) == k
    assert logits[kept].min() >= logits[~kept].max() if k < 40 else True


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**16), p=st.floats(0.01, 1.0))
def test_top_p_keeps_the_smallest_nucleus(seed, p):
    logits = torch.randn(30, generator=torch.Generator().manual_seed(seed)) * 2
    probs = torch.softmax(logits, -1)
    kept = torch.isfinite(top_p_filter(logits, p))
    assert kept[logits.argmax()]
    # the kept set reaches p (up to float error), and dropping its least likely member would not
    assert probs[kept].sum() >= p - 1e-6
    assert probs[kept].sum() - probs[kept].min() < p + 1e-6
    assert probs[kept].min() >= probs[~kept].max() if (~kept).any() else True


def entropy(z: torch.Tensor) -> torch.Tensor:
    return -(torch.softmax(z, -1) * torch.log_softmax(z, -1)).sum()


def test_temperature_sharpens_and_flattens():
    logits = torch.tensor([2.0, 1.0, 0.0])
    assert entropy(apply_temperature(logits, 0.5)) < entropy(logits) < entropy(apply_temperature(logits, 2.0))


def test_seeded_sampling_is_reproducible_and_follows_probabilities():
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1]))

    def draw(seed):
        gen = torch.Generator().manual_seed(seed)
        return [sample_next_token(logits, 1.0, generator=gen) for _ in range(20)]

    assert draw(5) == draw(5)
    gen = torch.Generator().manual_seed(0)
    counts = torch.bincount(
        torch.tensor([sample_next_token(logits, 1.0, generator=gen) for _ in range(4000)]), minlength=3
    )
    torch.testing.assert_close(counts / 4000, torch.tensor([0.7, 0.2, 0.1]), rtol=0, atol=0.03)
    assert sample_next_token(logits, 1.0, top_k=1, generator=gen) == 0
    assert sample_next_token(logits) == int(greedy(logits)) == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"temperature": -1.0}, "temperature must be a finite number > 0"),
        ({"temperature": 1.0, "top_k": 0}, "top_k must be an integer >= 1"),
        ({"temperature": 1.0, "top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"temperature": 1.0, "top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ],
)
def test_bad_sampling_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_next_token(torch.zeros(5), **kwargs)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_cached_logits_equal_uncached_at_every_step(name):
    cfg = SHAPES[name]
    sd = random_state_dict(cfg, seed=21, std=0.15)
    tokens = random_tokens(40, cfg.vocab_size, seed=22)
    full = forward(tokens, sd, cfg)
    cache, freqs = KVCache(cfg, 40), precompute_freqs_cis(cfg, 40)
    prefill = 8
    tol = logit_tolerance(tokens, sd, cfg)  # one row or all rows: the kernels may sum in other orders
    torch.testing.assert_close(forward(tokens[:prefill], sd, cfg, freqs, cache, 0), full[:prefill], rtol=0, atol=tol)
    for pos in range(prefill, 40):
        step = forward(tokens[pos : pos + 1], sd, cfg, freqs, cache, pos)
        torch.testing.assert_close(step[0], full[pos], rtol=0, atol=tol, msg=f"position {pos}")


@pytest.mark.parametrize("sampling", [GREEDY, Sampling(temperature=0.9, top_k=50, top_p=0.9, seed=3)])
def test_cached_generation_equals_uncached(sampling):
    cfg = SHAPES["gqa-scaled"]
    sd = random_state_dict(cfg, seed=23, std=0.3)
    prompt = random_tokens(5, cfg.vocab_size, seed=24).tolist()
    cached = generate(prompt, sd, cfg, 30, sampling)
    uncached = generate_uncached(prompt, sd, cfg, 30, sampling)
    assert cached == uncached and len(cached) == 30
    # the greedy run really is greedy: each token is the argmax given the ones before
    if sampling == GREEDY:
        seq = prompt + cached
        logits = forward(torch.tensor(seq), sd, cfg)
        assert logits[len(prompt) - 1 : -1].argmax(-1).tolist() == cached


def test_generation_stops_at_end_of_text():
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=10, multiple_of=16)
    # Blocks that add nothing, every token embedded as the same vector e, and an LM head
    # whose only non-zero row (token 7) is e: token 7 always has the largest logit.
    sd = {k: torch.zeros_like(v) if k.startswith("layers.") else v for k, v in random_state_dict(cfg, seed=1).items()}
    e = torch.randn(32, generator=torch.Generator().manual_seed(0))
    sd["tok_embeddings.weight"] = e.expand(10, 32).clone()
    sd["norm.weight"] = torch.ones(32)
    sd["output.weight"] = torch.zeros(10, 32)
    sd["output.weight"][7] = e
    for loop in (generate, generate_uncached):
        assert loop([1, 2], sd, cfg, 10, stop_ids=(7,)) == [7]
        assert loop([1, 2], sd, cfg, 3) == [7, 7, 7]


def test_generation_input_errors():
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=10, multiple_of=16, max_seq_len=16)
    sd = random_state_dict(cfg)
    with pytest.raises(ValueError, match="exceed the context of 16"):
        generate([1] * 10, sd, cfg, 10)
    with pytest.raises(ValueError, match="N >= 1"):
        generate([], sd, cfg, 3)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate([11], sd, cfg, 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate([1], sd, cfg, -1)


def test_cache_size_at_1b_scale():
    cfg = llama_3_2_1b_config()
    assert cache_bytes_per_token(cfg, torch.bfloat16) == 2 * 16 * 8 * 64 * 2 == 32768
    mha = dataclasses.replace(cfg, n_kv_heads=32)
    assert cache_bytes_per_token(mha, torch.bfloat16) == 4 * 32768
    cache = KVCache(ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=10), 5)
    assert cache.nbytes == 5 * cache_bytes_per_token(
        ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=10), torch.float32
    )
    with pytest.raises(ValueError, match="holds 5 positions"):
        cache.update(0, 4, torch.zeros(2, 2, 8), torch.zeros(2, 2, 8))


@pytest.mark.slow
def test_compiled_decode_step_equals_the_eager_step():
    """generate_compiled -- Inductor, with each one-row product rewritten as a reduction --
    gives the eager loop's tokens, greedy and sampled, and its logits to float32 rounding."""
    from torch._inductor.utils import run_and_get_code

    from helpers.compiled import compiled_step, generate_compiled

    # a vocabulary above 2048, so that the LM head needs the raised decomposition limit
    cfg = dataclasses.replace(SHAPES["gqa-scaled"], vocab_size=4096)
    sd = random_state_dict(cfg, seed=23, std=0.3)
    prompt = random_tokens(5, cfg.vocab_size, seed=24)
    with torch._inductor.config.patch(fx_graph_cache=False):  # compile here, not from the disk cache
        tokens, code = run_and_get_code(generate_compiled, prompt.tolist(), sd, cfg, 20)
    assert tokens == generate(prompt.tolist(), sd, cfg, 20)
    # no matrix product is left to an ATen kernel: all became generated loops
    assert code and not re.search(r"extern_kernels\.(mm|addmm|bmm)\b", "\n".join(code))
    sampling = Sampling(temperature=0.9, top_k=50, top_p=0.9, seed=3)
    assert generate_compiled(prompt.tolist(), sd, cfg, 20, sampling) == generate(prompt.tolist(), sd, cfg, 20, sampling)

    freqs = precompute_freqs_cis(cfg, 20)
    caches = [KVCache(cfg, 20), KVCache(cfg, 20)]
    step = compiled_step(sd)
    fed = torch.cat([prompt, torch.tensor([pos * 7 % cfg.vocab_size for pos in range(5, 20)])])
    tol = logit_tolerance(fed, sd, cfg)  # Inductor and ATen sum in different orders: two float32 evaluations
    with torch.inference_mode():
        for cache in caches:
            forward(prompt, sd, cfg, freqs, cache, 0, last_only=True)
        for pos in range(5, 20):
            token = fed[pos : pos + 1]  # a slice of a longer tensor, as a caller might pass one
            want = forward(token, sd, cfg, freqs, caches[0], pos, last_only=True)
            got = step(token, sd, cfg, freqs, caches[1], pos, last_only=True)
            torch.testing.assert_close(got, want, rtol=0, atol=tol, msg=f"position {pos}")
        # the keys end a shorter chain than the logits; their size: the largest key
        key_tol = float32_tolerance(chain_terms(cfg, 20), float(caches[0].k.abs().max()))
        torch.testing.assert_close(caches[1].k, caches[0].k, rtol=0, atol=key_tol)
        with pytest.raises(ValueError, match="one new token at a time"):
            step(prompt, sd, cfg, freqs, caches[1], 0)


@pytest.mark.slow
def test_compile_without_a_cpp_compiler_says_what_to_do():
    from helpers.compiled import generate_compiled

    cfg = SHAPES["gqa-scaled"]
    sd = random_state_dict(cfg, seed=1)
    with torch._inductor.config.patch({"cpp.cxx": ("no-such-cxx",), "fx_graph_cache": False}):
        with pytest.raises(RuntimeError, match=r"InvalidCxxCompiler.*C\+\+ compiler.*instead of generate_compiled"):
            generate_compiled([1, 2, 3], sd, cfg, 4)


@pytest.mark.parametrize("chunk", [1, 3, 16, 256])
def test_prefill_in_chunks_equals_one_pass(chunk):
    """Each chunk's queries see every key cached before them: same logits as the whole prompt at once."""
    from helpers.generation import prefill

    cfg = SHAPES["gqa-scaled"]
    sd = random_state_dict(cfg, seed=31, std=0.15)
    tokens = random_tokens(37, cfg.vocab_size, seed=32)
    freqs = precompute_freqs_cis(cfg, 37)
    rows = prefill(tokens, sd, cfg, freqs, KVCache(cfg, 37), chunk=chunk, all_rows=True)
    tol = logit_tolerance(tokens, sd, cfg)  # chunks of rows or all at once: other summation orders
    torch.testing.assert_close(rows, forward(tokens, sd, cfg), rtol=0, atol=tol)
    last = prefill(tokens, sd, cfg, freqs, KVCache(cfg, 37), chunk=chunk)
    torch.testing.assert_close(last, rows[-1], rtol=0, atol=tol)


def test_a_too_short_rope_table_is_an_error_not_rebuilt():
    cfg = SHAPES["gqa-scaled"]
    sd = random_state_dict(cfg)
    with pytest.raises(ValueError, match="freqs_cis covers 4 positions, position 5 was asked for"):
        forward(torch.tensor([1, 2, 3]), sd, cfg, precompute_freqs_cis(cfg, 4), start_pos=3)


def test_nan_logits_cannot_be_sampled():
    logits = torch.tensor([0.0, float("nan"), 1.0])
    with pytest.raises(ValueError, match="the logits hold NaN"):
        sample_next_token(logits, temperature=1.0, generator=torch.Generator().manual_seed(0))


def test_memory_check_says_how_long_a_prompt_fits():
    from helpers.memory import check_memory, memory_needed

    cfg = llama_3_2_1b_config()
    need = sum(memory_needed(cfg, 40_000, 0, torch.float32, all_logits=True).values())
    with pytest.raises(MemoryError) as err:
        check_memory(cfg, 40_000, 0, torch.float32, all_logits=True, available=need // 2)
    fits = int(re.search(r"at most ([\d,]+) prompt tokens fit", str(err.value)).group(1).replace(",", ""))
    assert sum(memory_needed(cfg, fits, 0, torch.float32, all_logits=True).values()) <= need // 2
    assert sum(memory_needed(cfg, fits + 1, 0, torch.float32, all_logits=True).values()) > need // 2
    assert "logits" in str(err.value) and "generate keeps one row" in str(err.value)
    check_memory(cfg, fits, 0, torch.float32, all_logits=True, available=need // 2)  # the answer does fit


PEAK_SCRIPT = """
import re, sys, torch
from helpers.checkpoint import random_state_dict
from helpers.config import ModelConfig
from helpers.generation import prefill
from helpers.memory import memory_needed
from helpers.kv_cache import KVCache
from helpers.rope import precompute_freqs_cis
torch.set_num_threads(1)
cfg = ModelConfig(dim=64, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=512, multiple_of=64)
sd = random_state_dict(cfg)
n = int(sys.argv[1])
tokens = torch.randint(0, 512, (n,), generator=torch.Generator().manual_seed(0))
cache, freqs = KVCache(cfg, n), precompute_freqs_cis(cfg, n)
def status(field):
    return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current size
before = status("VmRSS")
with torch.inference_mode():
    prefill(tokens, sd, cfg, freqs, cache)
print(status("VmHWM") - before, sum(memory_needed(cfg, n).values()) - memory_needed(cfg, n)["KV cache"])
"""


@pytest.mark.slow
def test_prefill_memory_grows_linearly_with_the_prompt():
    """A whole-prompt attention holds heads x N x N scores (a 33k-token prompt asked for 34 GB);
    the chunked prefill holds heads x chunk x N. Peak memory, measured in a fresh process
    for two prompt lengths, stays within the estimate and grows ~4x for a 4x longer prompt."""
    import os
    import subprocess
    import sys

    # glibc raises its mmap threshold after each freed large block and then keeps later ones on
    # the heap, so the resident peak varied 83-123 MB from run to run for the same 2048-token
    # prefill; a fixed threshold returns every freed tensor at once (42 MB, run after run)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_ARENA_MAX="1")
    peaks, estimates = [], []
    for n in (2048, 8192):
        out = subprocess.run(
            [sys.executable, "-c", PEAK_SCRIPT, str(n)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
            env=env,
        ).stdout.split()
        peaks.append(int(out[0]))
        estimates.append(int(out[1]))
    whole_prompt_scores = 2 * 8 * 8192 * 8192 * 4  # two score tensors of one unchunked pass at N = 8192
    for peak, estimate in zip(peaks, estimates, strict=True):
        assert peak <= 1.2 * estimate + 32 * 2**20, (peaks, estimates)
    assert estimates[1] < whole_prompt_scores / 10
    assert 2 * peaks[0] < peaks[1] < 8 * peaks[0], f"peak did not grow about linearly (4x prompt): {peaks}"


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_static_step_equals_chapter_09(compiled):
    """The CUDA-graph path's step (same shapes every step: attention over the whole
    pre-allocated cache with a position mask), run on a CPU: chapter 09's logits and tokens."""
    from helpers.compiled import cuda_graph_step, static_step
    from helpers.kv_cache import StaticKVCache

    cfg = SHAPES["gqa-scaled"]
    sd = random_state_dict(cfg, seed=23, std=0.3)
    prompt = random_tokens(5, cfg.vocab_size, seed=24)
    total = 20
    freqs = precompute_freqs_cis(cfg, total)
    ours, ref = KVCache(cfg, total), KVCache(cfg, total)
    step = cuda_graph_step(graphs=False) if compiled else None
    steps, fed = [], [prompt]
    with torch.inference_mode():
        forward(prompt, sd, cfg, freqs, ours, 0)
        forward(prompt, sd, cfg, freqs, ref, 0)
        token = prompt[-1:]
        for pos in range(5, total):
            want = forward(token, sd, cfg, freqs, ref, pos, last_only=True)
            if compiled:
                got = step(token, sd, cfg, freqs, ours, pos)
            else:
                got = static_step(token, sd, cfg, freqs, StaticKVCache(ours), torch.tensor(pos))
            steps.append((pos, got, want))
            token = want[-1].argmax(-1, keepdim=True)
            fed.append(token)
    # attention over the padded cache and ATen's one-row step: two float32 evaluations
    tol = logit_tolerance(torch.cat(fed)[:total], sd, cfg)
    for pos, got, want in steps:
        torch.testing.assert_close(got, want, rtol=0, atol=tol, msg=f"position {pos}")
    key_tol = float32_tolerance(chain_terms(cfg, total), float(ref.k.abs().max()))  # keys: a shorter chain
    torch.testing.assert_close(ours.k, ref.k, rtol=0, atol=key_tol)


def test_static_cache_masks_what_is_not_written_yet():
    from helpers.kv_cache import StaticKVCache

    cfg = ModelConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=10)
    cache = StaticKVCache(KVCache(cfg, 6))
    keys, _, mask = cache.update(0, torch.tensor(2), torch.ones(1, 2, 8), torch.ones(1, 2, 8))
    assert keys.shape == (6, 2, 8) and keys[2].eq(1).all() and keys[3:].eq(0).all()
    assert mask.tolist() == [[0, 0, 0, float("-inf"), float("-inf"), float("-inf")]]


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["int8", "int4", "nf4", "w8a8"])
def test_compiled_quantized_decoding_equals_the_eager_quantized_path(scheme):
    """int8 and int4 run on PyTorch's weight-only kernels (int8's one-row step a generated loop),
    NF4 through Inductor's fused dequantize-and-reduce, W8A8 on fbgemm's uint8 x int8 product; in
    float32 all give the dequantize-on-use path's tokens, in one graph (no break at the products)."""
    from torch._inductor.utils import run_and_get_code

    from helpers.compiled import generate_compiled
    from helpers.kernels import (
        Int4KernelWeight,
        Int8DynamicKernelWeight,
        Int8KernelWeight,
        fbgemm_sums_exactly,
        for_cpu_kernels,
    )
    from helpers.quantize import NF4Weight, quantize_state_dict, with_int8_activations

    cfg = dataclasses.replace(SHAPES["gqa-scaled"], vocab_size=4096)
    sd = random_state_dict(cfg, seed=23, std=0.3)
    q = with_int8_activations(quantize_state_dict(sd, "int8")) if scheme == "w8a8" else quantize_state_dict(sd, scheme)
    kinds = {type(v) for v in for_cpu_kernels(q).values() if not isinstance(v, torch.Tensor)}
    expected = {"int8": Int8KernelWeight, "int4": Int4KernelWeight, "nf4": NF4Weight, "w8a8": Int8DynamicKernelWeight}
    assert kinds == {expected[scheme]}
    prompt = random_tokens(5, cfg.vocab_size, seed=24).tolist()
    torch._dynamo.utils.counters.clear()
    with torch._inductor.config.patch(fx_graph_cache=False):  # compile here, to read the code
        tokens, code = run_and_get_code(generate_compiled, prompt, q, cfg, 16)
    assert not torch._dynamo.utils.counters["graph_break"], dict(torch._dynamo.utils.counters["graph_break"])
    assert tokens == generate(prompt, q, cfg, 16)
    # the compiled step's products: int8 a generated loop over the codes, int4 PyTorch's kernel
    assert code and ("_weight_int8pack_mm" in "\n".join(code)) is False
    assert ("_weight_int4pack_mm_for_cpu" in "\n".join(code)) is (scheme == "int4")
    assert ("int8_dynamic_linear" in "\n".join(code)) is (scheme == "w8a8" and fbgemm_sums_exactly())
    for key in ("layers.0.attention.wq.weight", "layers.1.feed_forward.w2.weight"):
        for rows in (1, 3):  # a decode step's one row; a prompt's rows
            x = torch.randn(rows, q[key].shape[1])
            w = q[key].dequantize()
            tol = float32_tolerance(w.shape[1], float((x.abs() @ w.abs().T).max()))  # one sum of d products
            if scheme == "w8a8":  # and fbgemm may round a tie to the other code: one step of x, times a weight
                tol += float(quantize_activation_rows(x)[1].max() * w.abs().max())
            torch.testing.assert_close(for_cpu_kernels(q)[key].linear(x), q[key].linear(x), rtol=0, atol=tol)


def test_a_sampling_refuses_what_has_no_meaning_and_replays_its_seed():
    for bad, match in (({"temperature": 0}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 1.5}, "top_p")):
        with pytest.raises(ValueError, match=match):
            Sampling(**{"temperature": 1.0} | bad)
    cfg = SHAPES["gqa-scaled"]
    sd = random_state_dict(cfg, seed=23, std=0.3)
    prompt = random_tokens(5, cfg.vocab_size, seed=24).tolist()
    sampling = Sampling(temperature=1.5, seed=7)
    first = generate(prompt, sd, cfg, 12, sampling)
    assert generate(prompt, sd, cfg, 12, sampling) == first  # each generation seeds its own generator
    assert generate(prompt, sd, cfg, 12, Sampling(temperature=1.5, seed=8)) != first
    assert first != generate(prompt, sd, cfg, 12)  # at T = 1.5 the draws leave the greedy path
