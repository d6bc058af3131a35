"""The from-scratch forward against Meta's reference, llama_models.llama3.model.Transformer.

Meta's reference (llama-models 0.3.0) hard-codes RoPE scale factor 8 (the Llama 3.1
value), so these comparisons run our code with rope_scale_factor=8.
"""

import dataclasses

import pytest
import torch
from conftest import SHAPES, random_tokens

from helpers.checkpoint import random_state_dict
from helpers.config import LLAMA_3_1_ROPE_FACTOR, ModelConfig
from helpers.kv_cache import KVCache
from helpers.model import forward
from helpers.rope import precompute_freqs_cis

# A tight bar on purpose (RoPE factor 8 instead of 32 moves these logits by 2e-2). One standard
# deviation of float32 drift over these chains is about sqrt(n) * 2^-24 * max|logit| ~ 1e-5 (n = 800
# to 2,600 chained terms, logits up to ~5), and both sides run most products through the same
# kernels; the largest difference under every kernel set `make test` uses is 6e-6.
TOL = 2e-5


def meta_transformer(ref, cfg: ModelConfig, sd: dict, max_seq_len: int):
    args = ref.ModelArgs(**cfg.to_params(), max_seq_len=max_seq_len, max_batch_size=2)
    model = ref.Transformer(args)
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return model.eval()


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_logits_match_meta_reference(meta_reference, name):
    cfg = dataclasses.replace(SHAPES[name], rope_scale_factor=LLAMA_3_1_ROPE_FACTOR)
    sd = random_state_dict(cfg, seed=11, std=0.15)
    tokens = random_tokens(72, cfg.vocab_size, seed=12)
    model = meta_transformer(meta_reference, cfg, sd, max_seq_len=128)
    theirs = model(tokens[None], start_pos=0)[0]
    diff = (theirs - forward(tokens, sd, cfg)).abs().max().item()
    assert diff <= TOL, f"{name}: logits differ from Meta's reference by {diff:.2e}"


def test_rope_frequencies_match_meta_reference(meta_reference):
    for scaled in (False, True):
        cfg = ModelConfig(
            dim=512, n_layers=1, n_heads=8, n_kv_heads=2, vocab_size=10, use_scaled_rope=scaled, rope_scale_factor=8.0
        )
        theirs = meta_reference.precompute_freqs_cis(cfg.head_dim, 4096, cfg.rope_theta, scaled)
        torch.testing.assert_close(
            precompute_freqs_cis(cfg, 4096), theirs, rtol=0, atol=1e-6
        )  # cos, sin: 16 ulps (2^-24) of 1


def test_cached_decoding_matches_meta_reference(meta_reference):
    """Prefill then one token at a time, both with their own caches."""
    cfg = dataclasses.replace(SHAPES["gqa-scaled"], rope_scale_factor=LLAMA_3_1_ROPE_FACTOR)
    sd = random_state_dict(cfg, seed=13, std=0.15)
    tokens = random_tokens(70, cfg.vocab_size, seed=14)
    model = meta_transformer(meta_reference, cfg, sd, max_seq_len=128)
    cache = KVCache(cfg, 128)
    split = 64
    theirs = model(tokens[None, :split], start_pos=0)[0]
    ours = forward(tokens[:split], sd, cfg, kv_cache=cache, start_pos=0)
    assert (theirs - ours).abs().max() <= TOL
    for pos in range(split, len(tokens)):
        theirs = model(tokens[None, pos : pos + 1], start_pos=pos)[0]
        ours = forward(tokens[pos : pos + 1], sd, cfg, kv_cache=cache, start_pos=pos)
        assert (theirs - ours).abs().max() <= TOL, f"position {pos}"


def test_embedded_checkpoint_and_1b_widths_match_meta_reference(meta_reference):
    from helpers.checkpoint import TINY_DIR, load_checkpoint
    from helpers.config import llama_3_2_1b_config
    from helpers.tokenizer import Tokenizer

    cfg, sd = load_checkpoint(TINY_DIR, dtype=torch.float32, rope_scale_factor=LLAMA_3_1_ROPE_FACTOR)
    tokens = torch.tensor(Tokenizer.load(TINY_DIR).encode("The capital of Japan is Tokyo. Japan is in Asia. " * 6))
    theirs = meta_transformer(meta_reference, cfg, sd, max_seq_len=128)(tokens[None], start_pos=0)[0]
    assert (theirs - forward(tokens, sd, cfg)).abs().max().item() <= TOL

    real = dataclasses.replace(llama_3_2_1b_config(rope_scale_factor=8), n_layers=2)
    sd = random_state_dict(real, seed=43, std=0.02)
    tokens = random_tokens(64, real.vocab_size, seed=44)
    theirs = meta_transformer(meta_reference, real, sd, max_seq_len=64)(tokens[None], start_pos=0)[0]
    diff = (theirs - forward(tokens, sd, real)).abs().max().item()
    assert diff <= TOL, f"1B widths: logits differ from Meta's reference by {diff:.2e}"
