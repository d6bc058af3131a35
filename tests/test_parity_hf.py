"""The from-scratch forward against Hugging Face transformers' LlamaForCausalLM.

The weights are converted (names, and wq/wk rows permuted to rotate-half order);
every layer's hidden state and the logits must agree within 2e-5 in float32 on
prompts of 64 tokens or more.
"""

import dataclasses

import pytest
import torch
from conftest import SHAPES, random_tokens

from helpers.checkpoint import random_state_dict
from helpers.config import ModelConfig
from helpers.hf import hf_model, permute_for_rotate_half, to_hf_state_dict, unpermute_from_rotate_half
from helpers.model import forward, hidden_states
from helpers.rmsnorm import rms_norm

TOL = 2e-5  # the bar of test_parity_meta.py, and why it holds on every processor


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_hidden_states_and_logits_match_transformers(name):
    cfg = SHAPES[name]
    sd = random_state_dict(cfg, seed=3, std=0.15)
    model = hf_model(sd, cfg)
    tokens = random_tokens(80, cfg.vocab_size, seed=4)
    with torch.no_grad():
        out = model(tokens[None], output_hidden_states=True)
    ours = hidden_states(tokens, sd, cfg)
    assert len(out.hidden_states) == cfg.n_layers + 1
    # transformers returns X^0 .. X^{L-1} as is and the last one after the final RMSNorm.
    for layer, (theirs, mine) in enumerate(zip(out.hidden_states[:-1], ours[:-1], strict=True)):
        diff = (theirs[0] - mine).abs().max().item()
        assert diff <= TOL, f"{name}: hidden state {layer} differs by {diff:.2e}"
    last = rms_norm(ours[-1], sd["norm.weight"], cfg.norm_eps)
    assert (out.hidden_states[-1][0] - last).abs().max().item() <= TOL
    logits = forward(tokens, sd, cfg)
    diff = (out.logits[0] - logits).abs().max().item()
    assert diff <= TOL, f"{name}: logits differ by {diff:.2e}"
    assert logits.abs().max() > 0.1, "logits too small for the comparison to mean anything"


def test_rope_scaling_factor_is_visible_to_the_oracle():
    """Factor 8 vs 32 changes the logits by more than the tolerance, so the tests can tell them apart."""
    cfg32 = ModelConfig(
        dim=64, n_layers=2, n_heads=2, n_kv_heads=1, vocab_size=300, multiple_of=32, use_scaled_rope=True
    )
    cfg8 = dataclasses.replace(cfg32, rope_scale_factor=8.0)
    sd = random_state_dict(cfg32, seed=5, std=0.15)
    tokens = random_tokens(64, cfg32.vocab_size, seed=6)
    with torch.no_grad():
        theirs32 = hf_model(sd, cfg32)(tokens[None]).logits[0]
    ours8 = forward(tokens, sd, cfg8)
    assert (theirs32 - forward(tokens, sd, cfg32)).abs().max() <= TOL
    assert (theirs32 - ours8).abs().max() > 10 * TOL


def test_batched_forward_matches_transformers():
    cfg = SHAPES["gqa-scaled"]
    sd = random_state_dict(cfg, seed=7, std=0.15)
    tokens = torch.stack([random_tokens(64, cfg.vocab_size, seed=s) for s in (8, 9, 10)])
    with torch.no_grad():
        theirs = hf_model(sd, cfg)(tokens).logits
    assert (theirs - forward(tokens, sd, cfg)).abs().max() <= TOL


def test_permutation_is_invertible_and_maps_pairs():
    n_heads, hd, d = 3, 8, 5
    w = torch.arange(n_heads * hd * d, dtype=torch.float32).view(n_heads * hd, d)
    p = permute_for_rotate_half(w, n_heads)
    assert torch.equal(unpermute_from_rotate_half(p, n_heads), w)
    for h in range(n_heads):
        for i in range(hd // 2):
            # Meta pair (2i, 2i+1) of head h becomes HF pair (i, i + hd/2).
            assert torch.equal(p[h * hd + i], w[h * hd + 2 * i])
            assert torch.equal(p[h * hd + i + hd // 2], w[h * hd + 2 * i + 1])


def test_hf_key_map_covers_every_tensor():
    cfg = SHAPES["mha-plain"]
    hf = to_hf_state_dict(random_state_dict(cfg), cfg)
    from helpers.hf import hf_config

    with torch.device("meta"):
        from transformers import LlamaForCausalLM

        expected = set(LlamaForCausalLM(hf_config(cfg)).state_dict())
    assert set(hf) == expected


def test_embedded_checkpoint_matches_transformers():
    """The tiny model the book runs on, through Hugging Face's implementation."""
    from helpers.checkpoint import TINY_DIR, load_checkpoint
    from helpers.tokenizer import Tokenizer

    cfg, sd = load_checkpoint(TINY_DIR, dtype=torch.float32)
    text = "The capital of France is Paris. France is a country in Europe. " * 6
    tokens = torch.tensor(Tokenizer.load(TINY_DIR).encode(text))
    assert len(tokens) >= 64
    with torch.no_grad():
        theirs = hf_model(sd, cfg)(tokens[None]).logits[0]
    diff = (theirs - forward(tokens, sd, cfg)).abs().max().item()
    assert diff <= TOL, f"tiny-llama-3.2: logits differ by {diff:.2e}"


def test_real_1b_widths_match_transformers():
    """Llama-3.2-1B's exact config (widths, heads, vocabulary, RoPE factor 32), cut to 2 blocks to fit CI."""
    from helpers.config import llama_3_2_1b_config

    cfg = dataclasses.replace(llama_3_2_1b_config(), n_layers=2)
    sd = random_state_dict(cfg, seed=41, std=0.02)
    tokens = random_tokens(64, cfg.vocab_size, seed=42)
    with torch.no_grad():
        out = hf_model(sd, cfg)(tokens[None], output_hidden_states=True)
    ours = hidden_states(tokens, sd, cfg)
    for theirs, mine in zip(out.hidden_states[:-1], ours[:-1], strict=True):
        assert (theirs[0] - mine).abs().max().item() <= TOL
    diff = (out.logits[0] - forward(tokens, sd, cfg)).abs().max().item()
    assert diff <= TOL, f"1B widths: logits differ by {diff:.2e}"
