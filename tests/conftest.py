"""Shared fixtures: small random Meta-format checkpoints written to temporary directories."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from torch import nn

from helpers import numerics
from helpers.checkpoint import random_state_dict, save_checkpoint
from helpers.config import ModelConfig
from helpers.model import forward_hidden
from helpers.numerics import chain_terms, float32_tolerance, swiglu_size  # noqa: F401 (the tests import them from here)
from helpers.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli(capsys, monkeypatch):
    """``python -m helpers ARGS`` run in this process through the CLI's ``main``, from the repository
    root and without ``LLAMA_CHECKPOINT``: returns (exit status, stdout, stderr) as a
    ``CompletedProcess``. Tests about the process itself (stdin, signals, the exit of the
    interpreter) start one instead. ``env`` sets variables for one call."""
    from helpers.tools.cli import main

    monkeypatch.delenv("LLAMA_CHECKPOINT", raising=False)
    monkeypatch.chdir(ROOT)

    def run(*args, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        capsys.readouterr()
        with monkeypatch.context() as m:
            for name, value in (env or {}).items():
                m.setenv(name, value)
            try:
                code = main([str(a) for a in args])
            except SystemExit as exit:  # argparse's --help
                code = exit.code if isinstance(exit.code, int) else 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


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


# Tolerances, derived from the arithmetic: the rule the chapters teach (helpers/numerics.py,
# chapter 03), one definition for the notebooks and the tests.


def logit_tolerance(tokens: torch.Tensor, sd: dict, cfg: ModelConfig, evaluations: int = 2) -> float:
    """helpers.numerics.logit_tolerance for the logits of ``tokens``."""
    with torch.no_grad():
        return numerics.logit_tolerance(forward_hidden(tokens, sd, cfg), sd, cfg, evaluations)
