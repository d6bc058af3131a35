"""Shared fixtures: small random Meta-format checkpoints written to temporary directories."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch
from hypothesis import settings
from torch import nn

from helpers.checkpoint import random_state_dict, save_checkpoint
from helpers.config import ModelConfig
from helpers.model import forward_hidden
from helpers.rmsnorm import rms_norm
from helpers.tokenizer import Tokenizer

# Property tests draw the same examples on every run: CI must not be flaky.
settings.register_profile("book", derandomize=True, deadline=None)
settings.load_profile("book")

# Shapes the oracle tests run on: GQA, MQA and MHA, with and without Llama 3 RoPE scaling.
SHAPES = {
    "gqa-scaled": ModelConfig(
        dim=64, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=300, multiple_of=32, use_scaled_rope=True
    ),
    "mqa-scaled": ModelConfig(
        dim=48,
        n_layers=3,
        n_heads=4,
        n_kv_heads=1,
        vocab_size=300,
        multiple_of=16,
        use_scaled_rope=True,
        rope_theta=10000.0,
    ),
    "mha-plain": ModelConfig(
        dim=32, n_layers=2, n_heads=2, n_kv_heads=2, vocab_size=300, multiple_of=16, ffn_dim_multiplier=1.5
    ),
    "gqa-plain-deep": ModelConfig(
        dim=64, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=300, multiple_of=64, rope_theta=500000.0
    ),
}


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return Tokenizer.load(None)


@pytest.fixture(params=sorted(SHAPES))
def shape(request) -> tuple[str, ModelConfig]:
    return request.param, SHAPES[request.param]


@pytest.fixture
def small_cfg() -> ModelConfig:
    return SHAPES["gqa-scaled"]


@pytest.fixture
def small_ckpt(tmp_path, small_cfg):
    """A random checkpoint directory (params.json + consolidated.00.pth), float32."""
    ckpt = tmp_path / "random-llama" / "original"
    save_checkpoint(ckpt, small_cfg, random_state_dict(small_cfg, seed=1, std=0.2))
    return ckpt


@pytest.fixture
def tokenizer_vocab_ckpt(tmp_path):
    """A random checkpoint with the real 128256-token vocabulary, so text prompts can be used."""
    cfg = ModelConfig(
        dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=128256, multiple_of=32, use_scaled_rope=True
    )
    ckpt = tmp_path / "random-vocab" / "original"
    save_checkpoint(ckpt, cfg, random_state_dict(cfg, seed=2, std=0.3))
    return ckpt


class _ColumnParallelLinear(nn.Linear):
    def __init__(self, in_features, out_features, bias=False, **_):
        super().__init__(in_features, out_features, bias=bias)


class _VocabParallelEmbedding(nn.Embedding):
    def __init__(self, num_embeddings, embedding_dim, **_):
        super().__init__(num_embeddings, embedding_dim)


@pytest.fixture
def meta_reference(monkeypatch):
    """Meta's ``llama_models.llama3.model`` with fairscale's model-parallel layers replaced by plain ones.

    The reference imports fairscale only for its tensor-parallel Linear/Embedding
    layers; on one process they are exactly nn.Linear / nn.Embedding.
    """
    layers = types.ModuleType("fairscale.nn.model_parallel.layers")
    layers.ColumnParallelLinear = _ColumnParallelLinear
    layers.RowParallelLinear = _ColumnParallelLinear
    layers.VocabParallelEmbedding = _VocabParallelEmbedding
    initialize = types.ModuleType("fairscale.nn.model_parallel.initialize")
    initialize.get_model_parallel_world_size = lambda: 1
    modules = {
        "fairscale": types.ModuleType("fairscale"),
        "fairscale.nn": types.ModuleType("fairscale.nn"),
        "fairscale.nn.model_parallel": types.ModuleType("fairscale.nn.model_parallel"),
        "fairscale.nn.model_parallel.layers": layers,
        "fairscale.nn.model_parallel.initialize": initialize,
    }
    modules["fairscale.nn.model_parallel"].initialize = initialize
    modules["fairscale.nn.model_parallel"].layers = layers
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "llama_models.llama3.model", raising=False)
    import importlib

    return importlib.import_module("llama_models.llama3.model")


def random_tokens(n: int, vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


# Tolerances, derived from the arithmetic. A float32 operation rounds its result by at most
# U32 = 2^-24 of it. A sum of n products, added in whatever order a processor's kernels choose
# (vector width, threads, blocking), is within n * U32 * sum|products| of the exact sum, and with
# overwhelming probability within LAMBDA * sqrt(n) * U32 * sum|products|: independent rounding
# errors add like a random walk (Higham and Mary, "A new approach to probabilistic rounding error
# analysis", SIAM J. Sci. Comput. 41, 2019: the bound fails with probability below
# 2n exp(-LAMBDA^2 / 2), under 1e-7 for LAMBDA = 7 and n up to 10^4).
U32 = 2.0**-24
BF16 = 2.0**-8  # bfloat16 keeps 8 significant bits: one rounding moves a value by up to 2^-8 of it
LAMBDA = 7.0


def float32_tolerance(n_terms: int, magnitude: float, evaluations: int = 2) -> float:
    """How far apart ``evaluations`` float32 computations of one value may lie (each within the
    probabilistic bound of the exact value): sums of ``n_terms`` products of total size ``magnitude``."""
    return evaluations * LAMBDA * math.sqrt(n_terms) * U32 * magnitude


def chain_terms(cfg: ModelConfig, n_positions: int) -> int:
    """The summed lengths of the sums one logit depends on in sequence: per block two norms' means
    (d each), a query (d), a score (head_dim), the weighted values (N), W^O (H head_dim), W_1 (d)
    and W_2 (F); then the final norm and the LM head (d each). Every block starts with a norm, so
    each stage passes the relative error of the ones before it on at about unit gain."""
    per_block = 4 * cfg.dim + cfg.head_dim + n_positions + cfg.n_heads * cfg.head_dim + cfg.ffn_hidden_dim
    return cfg.n_layers * per_block + 2 * cfg.dim


def logit_tolerance(tokens: torch.Tensor, sd: dict, cfg: ModelConfig, evaluations: int = 2) -> float:
    """float32_tolerance for the logits of ``tokens``: the chain above, at the size of the largest
    LM-head sum, max_j sum_i |RMSNorm(X^L)_i| |W_out[j, i]| (computed, not assumed)."""
    with torch.no_grad():
        h = rms_norm(forward_hidden(tokens, sd, cfg), sd["norm.weight"], cfg.norm_eps)
        magnitude = float((h.abs() @ sd["output.weight"].abs().T).max())
    return float32_tolerance(chain_terms(cfg, tokens.shape[-1]), magnitude, evaluations)


def swiglu_magnitude(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> float:
    """The size of a SwiGLU's last sum: max over outputs of sum_j |h_j| |W_2[i, j]|, h = silu(x W_1^T) * (x W_3^T).
    Weights (F, d), (d, F), (F, d), or stacks of experts (E, F, d), (E, d, F), (E, F, d)."""
    with torch.no_grad():
        x = x.reshape(-1, x.shape[-1]).expand(*w1.shape[:-2], -1, -1)  # (N, d), once per expert if stacked
        h = torch.nn.functional.silu(x @ w1.mT) * (x @ w3.mT)
        return float((h.abs() @ w2.abs().mT).max())
