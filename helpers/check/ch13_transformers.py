"""Chapter 13's exercise checks: the same model in transformers."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..checkpoint import expected_shapes
from ..config import ModelConfig
from .common import _gen, call, equal, exercise


@exercise
def hf_names(fn: Callable) -> tuple[float | None, int]:
    """fn(meta_key) -> the name of the same tensor in LlamaForCausalLM's state dict."""
    from ..hf import hf_key

    keys = list(expected_shapes(ModelConfig(dim=32, n_layers=12, n_heads=4, n_kv_heads=2, vocab_size=64)))
    for key in keys:
        equal(key, call(key, fn, key), hf_key(key))
    return None, len(keys)


@exercise
def rotate_half_rows(fn: Callable) -> tuple[float | None, int]:
    """fn(w (n_heads * head_dim, d), n_heads) -> the rows reordered from interleaved RoPE pairs
    (2i, 2i+1) to rotate-half pairs (i, i + head_dim/2), within each head."""
    from ..hf import permute_for_rotate_half

    gen = _gen(19)
    cases = {"8 heads of 16 (wq)": (8, 16, 32), "2 heads of 16 (wk)": (2, 16, 32), "1 head of 4": (1, 4, 3)}
    for case, (heads, hd, d) in cases.items():
        w = torch.randn(heads * hd, d, generator=gen)
        got = torch.as_tensor(call(case, fn, w.clone(), heads))
        if got.shape != w.shape:
            raise AssertionError(f"{case}: shape {tuple(got.shape)}, expected {tuple(w.shape)}")
        want = permute_for_rotate_half(w, heads)
        for row in range(w.shape[0]):
            if not torch.equal(got[row], want[row]):
                source = int((w == want[row]).all(-1).nonzero()[0])
                raise AssertionError(f"{case}: row {row} should be the original row {source}")
    return None, len(cases)


@exercise
def llama_config_fields(fn: Callable) -> tuple[float | None, int]:
    """fn(params: dict from params.json) -> {LlamaConfig field: value} for hidden_size,
    intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim,
    rms_norm_eps, vocab_size and rope_theta."""
    from ..hf import hf_config

    cases = {
        "Llama-3.2-1B": {"dim": 2048, "n_layers": 16, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256,
                         "ffn_dim_multiplier": 1.5, "multiple_of": 256, "norm_eps": 1e-5, "rope_theta": 500000.0},
        "Llama-3.2-3B": {"dim": 3072, "n_layers": 28, "n_heads": 24, "n_kv_heads": 8, "vocab_size": 128256,
                         "ffn_dim_multiplier": 1.0, "multiple_of": 256, "norm_eps": 1e-5, "rope_theta": 500000.0},
        "Llama-3.1-8B": {"dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256,
                         "ffn_dim_multiplier": 1.3, "multiple_of": 1024, "norm_eps": 1e-5, "rope_theta": 500000.0},
        # no n_kv_heads or ffn_dim_multiplier: their defaults; 2/3 of 4d rounds *up* to a multiple
        # of 256 (13653 -> 13824, where the nearest multiple would be 13568)
        "Llama-2-13B": {"dim": 5120, "n_layers": 40, "n_heads": 40, "vocab_size": 32000, "multiple_of": 256,
                        "norm_eps": 1e-5, "rope_theta": 10000.0},
    }  # fmt: skip
    fields = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "rms_norm_eps", "vocab_size"]  # fmt: skip
    for case, params in cases.items():
        try:
            got = call(case, fn, dict(params))
        except AssertionError as err:
            if not isinstance(err.__cause__, KeyError):
                raise
            raise AssertionError(
                f"{case}: KeyError {err.__cause__}: this params.json has no such key; use the default "
                "(n_kv_heads = n_heads, no ffn_dim_multiplier)"
            ) from None
        want = hf_config(ModelConfig.from_params(params))
        for field in fields:
            equal(f"{case}: {field}", got.get(field), getattr(want, field))
        equal(f"{case}: rope_theta", got.get("rope_theta"), want.rope_parameters["rope_theta"])
    return None, len(cases)
