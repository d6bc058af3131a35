"""Chapter 12's mixture of experts against transformers' own MoE layers, and upcycling."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import float32_tolerance, logit_tolerance, swiglu_size

from helpers.config import ModelConfig
from helpers.generation import prefill
from helpers.hf import transformers_module
from helpers.kv_cache import KVCache
from helpers.model import forward
from helpers.moe import (
    MoEConfig,
    experts_batched,
    experts_loop,
    llama4_expert_hidden_dim,
    load_balancing_loss,
    moe_block,
    moe_feed_forward,
    moe_forward,
    parameter_counts,
    route,
    upcycle,
)
from helpers.rope import precompute_freqs_cis
from helpers.train import TINY_PARAMS

D, F, E = 32, 48, 6
P = "layers.0.feed_forward."


def _randomise(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def _inputs(seed: int = 1, shape=(3, 7, D)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("batched", [False, True])
def test_mixtral_style_equals_mixtral_sparse_moe_block(k, batched):
    tf = transformers_module()
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    hf_cfg = tf.MixtralConfig(
        hidden_size=D, intermediate_size=F, num_local_experts=E, num_experts_per_tok=k, experts_implementation="eager"
    )
    block = MixtralSparseMoeBlock(hf_cfg).eval()
    _randomise(block, seed=k)
    gate_up, down = block.experts.gate_up_proj.detach(), block.experts.down_proj.detach()  # (E, 2F, d), (E, d, F)
    sd = {
        P + "router.weight": block.gate.weight.detach(),
        P + "experts.w1": gate_up[:, :F],
        P + "experts.w3": gate_up[:, F:],
        P + "experts.w2": down,
    }
    x = _inputs(k)
    with torch.no_grad():
        want = block(x)
    got = moe_feed_forward(x, sd, P, MoEConfig(E, k, F, router="softmax"), batched=batched)
    # W_1 (d terms), W_2 (F), the weighted sum of k experts: two float32 evaluations
    tol = float32_tolerance(D + F + k, swiglu_size(x, sd[P + "experts.w1"], sd[P + "experts.w2"], sd[P + "experts.w3"]))
    torch.testing.assert_close(got, want, rtol=0, atol=tol)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("batched", [False, True])
def test_llama4_style_equals_llama4_text_moe(k, batched):
    tf = transformers_module()
    from transformers.models.llama4.modeling_llama4 import Llama4TextMoe

    hf_cfg = tf.Llama4TextConfig(
        hidden_size=D, intermediate_size=F, num_local_experts=E, num_experts_per_tok=k, experts_implementation="eager"
    )
    block = Llama4TextMoe(hf_cfg).eval()
    _randomise(block, seed=10 + k)
    gate_up, down = block.experts.gate_up_proj.detach(), block.experts.down_proj.detach()  # (E, d, 2F), (E, F, d)
    shared = block.shared_expert
    sd = {
        P + "router.weight": block.router.weight.detach(),
        P + "experts.w1": gate_up[..., :F].mT,
        P + "experts.w3": gate_up[..., F:].mT,
        P + "experts.w2": down.mT,
        P + "shared.w1.weight": shared.gate_proj.weight.detach(),
        P + "shared.w2.weight": shared.down_proj.weight.detach(),
        P + "shared.w3.weight": shared.up_proj.weight.detach(),
    }
    x = _inputs(20 + k)
    with torch.no_grad():
        want, want_logits = block(x)
    moe = MoEConfig(E, k, F, router="sigmoid", shared_expert=True)
    logs = []
    got = moe_feed_forward(x, sd, P, moe, batched=batched, router_logits=logs)
    experts = swiglu_size(x, sd[P + "experts.w1"], sd[P + "experts.w2"], sd[P + "experts.w3"])
    shared_size = swiglu_size(x, *(sd[P + f"shared.{w}.weight"] for w in ("w1", "w2", "w3")))
    tol = float32_tolerance(D + F + k + 1, experts + shared_size)  # routed and shared SwiGLUs, then their sum
    torch.testing.assert_close(got, want.reshape(x.shape), rtol=0, atol=tol)
    router = sd[P + "router.weight"]
    tol = float32_tolerance(D, float((x.abs() @ router.abs().T).max()))  # one product with d terms
    torch.testing.assert_close(logs[0], want_logits, rtol=0, atol=tol)


@pytest.mark.parametrize("scale_input", [False, True])
def test_loop_and_batched_agree_with_gradients(scale_input):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(40, D, generator=gen, requires_grad=True)
    ws = [(torch.randn(s, generator=gen) * 0.2).requires_grad_() for s in ((E, F, D), (E, D, F), (E, F, D))]
    logits = torch.randn(40, E, generator=gen)
    logits[:, 0] += 3.0  # one busy expert, and some that get nothing
    logits[:, -1] -= 10.0
    weights, experts = route(logits, 2, "softmax")
    results = []
    for run in (experts_loop, experts_batched):
        y = run(x, *ws, weights, experts, scale_input=scale_input)
        grads = torch.autograd.grad(y.square().sum(), [x, *ws])
        results.append((y, grads))
    tol = float32_tolerance(D + F + 2, swiglu_size(x, *ws))  # the same sums, grouped differently
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=tol)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        # backward: products of sums of the same lengths, each gradient at its own size
        torch.testing.assert_close(a, b, rtol=0, atol=float32_tolerance(40 * (D + F), float(a.abs().max())))


def test_routers():
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0]])
    w, idx = route(logits, 2, "softmax")
    assert idx.tolist() == [[0, 2]]
    torch.testing.assert_close(w, torch.softmax(torch.tensor([[2.0, 1.0]]), dim=-1))  # renormalised top 2
    w, idx = route(logits, 2, "sigmoid")
    torch.testing.assert_close(w, torch.sigmoid(torch.tensor([[2.0, 1.0]])))
    with pytest.raises(ValueError, match="router must be one of"):
        route(logits, 2, "relu")


def test_load_balancing_loss_equals_transformers():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    gen = torch.Generator().manual_seed(5)
    layers = tuple(torch.randn(50, E, generator=gen) * s for s in (0.1, 1.0, 4.0))
    for k in (1, 2):
        for lg in layers:  # one layer at a time: transformers pools several layers' tokens into one f and P
            torch.testing.assert_close(load_balancing_loss(lg, k), load_balancing_loss_func((lg,), E, k))
    # k when balanced, E (for k = 1) when everything goes to one expert
    uniform = torch.zeros(E, E) + torch.eye(E) * 1e-3
    assert load_balancing_loss(uniform, 1).item() == pytest.approx(1.0, abs=1e-2)
    collapsed = torch.zeros(50, E)
    collapsed[:, 0] = 30.0
    assert load_balancing_loss(collapsed, 1).item() == pytest.approx(E, rel=1e-3)


def _small_model():
    cfg = ModelConfig.from_params(TINY_PARAMS | {"dim": 32, "n_layers": 2, "n_heads": 4, "vocab_size": 97})
    gen = torch.Generator().manual_seed(0)
    from helpers.checkpoint import expected_shapes

    sd = {k: torch.randn(s, generator=gen) * 0.2 for k, s in expected_shapes(cfg).items()}
    for k in sd:
        if k.endswith("norm.weight"):
            sd[k] = 1 + sd[k]
    return cfg, sd


@pytest.mark.parametrize(
    "router,shared", [("softmax", False), ("sigmoid", True), ("softmax", True)], ids=["mixtral", "llama4", "both"]
)
def test_upcycled_model_starts_equal_to_the_dense_model(router, shared):
    cfg, sd = _small_model()
    moe = MoEConfig(4, 2, cfg.ffn_hidden_dim, router=router, shared_expert=shared)
    tokens = torch.arange(12) % cfg.vocab_size
    dense = forward(tokens, sd, cfg)
    moe_sd = upcycle(sd, cfg, moe, seed=1, router_std=1.0)
    logs = []
    got = forward(tokens, moe_sd, cfg, block=moe_block(moe, logs))
    tol = logit_tolerance(tokens, sd, cfg)  # k expert copies summed instead of one feed-forward
    torch.testing.assert_close(got, dense, rtol=0, atol=tol)
    assert len(logs) == cfg.n_layers and logs[0].shape == (12, 4)
    assert len({tuple(r) for r in torch.topk(logs[0], 2).indices.tolist()}) > 1  # tokens do go to different experts
    # chapter 09's cached prefill with the MoE model as its step: the same last-row logits
    cache = KVCache(cfg, 12)
    cached = prefill(tokens, moe_sd, cfg, precompute_freqs_cis(cfg, 12), cache, chunk=5, step=moe_forward(moe))
    torch.testing.assert_close(cached, dense[-1], rtol=0, atol=tol)


def test_upcycle_refuses_what_would_change_the_model():
    cfg, sd = _small_model()
    with pytest.raises(ValueError, match="shared_expert=True"):
        upcycle(sd, cfg, MoEConfig(4, 1, cfg.ffn_hidden_dim, router="sigmoid"))
    with pytest.raises(ValueError, match="hidden_dim must be"):
        upcycle(sd, cfg, MoEConfig(4, 1, 8))
    with pytest.raises(KeyError, match=r"mixtures of experts.*block=moe_block\(moe\)"):
        forward(torch.arange(3), upcycle(sd, cfg, MoEConfig(4, 1, cfg.ffn_hidden_dim)), cfg)


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"top_k": 5}, "cannot exceed"),
        ({"n_experts": 0}, "positive integer"),
        ({"router": "relu"}, "router must be"),
        ({"hidden_dim": 2.5}, "positive integer"),
    ],
)
def test_moe_config_refuses_bad_values(changes, match):
    with pytest.raises(ValueError, match=match):
        MoEConfig(**({"n_experts": 4, "top_k": 1, "hidden_dim": 8} | changes))


def test_llama4_scout_counts_equal_transformers():
    """Llama 4 Scout's text model (transformers' Llama4TextConfig defaults) counted both ways on the meta device."""
    tf = transformers_module()
    hf_cfg = tf.Llama4TextConfig()
    with torch.device("meta"):
        hf = tf.Llama4ForCausalLM(hf_cfg)
    want = sum(p.numel() for p in hf.parameters())
    cfg = ModelConfig.from_params(
        {
            "dim": 5120,
            "n_layers": 48,
            "n_heads": 40,
            "n_kv_heads": 8,
            "vocab_size": 202048,
            "ffn_dim_multiplier": 1.2,
            "multiple_of": 2048,
        }
    )
    hidden = llama4_expert_hidden_dim(cfg)
    assert hidden == hf_cfg.intermediate_size == 8192
    assert cfg.ffn_hidden_dim == hf_cfg.intermediate_size_mlp
    moe = MoEConfig(hf_cfg.num_local_experts, hf_cfg.num_experts_per_tok, hidden, router="sigmoid", shared_expert=True)
    counts = parameter_counts(cfg, moe, include_output=True)
    assert counts["total"] == want
    # active: everything but 15 of the 16 routed experts in each layer
    expert = 3 * cfg.dim * hidden
    assert counts["active"] == want - cfg.n_layers * (moe.n_experts - 1) * expert
    dense = dataclasses.replace(cfg)
    assert parameter_counts(dense, None)["total"] == parameter_counts(dense, None)["active"] == dense.n_parameters
