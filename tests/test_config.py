"""params.json parsing and derived sizes, including the real Llama-3.2-1B config."""

import json

import pytest
import torch

from helpers.checkpoint import expected_shapes, parameter_count
from helpers.config import LLAMA_3_2_1B_PARAMS, ConfigError, ModelConfig, llama_3_2_1b_config


def test_llama_3_2_1b_derived_sizes():
    cfg = llama_3_2_1b_config()
    assert (cfg.head_dim, cfg.n_rep, cfg.ffn_hidden_dim) == (64, 4, 8192)
    assert cfg.rope_scale_factor == 32.0 and cfg.use_scaled_rope
    assert llama_3_2_1b_config(rope_scale_factor=8).rope_scale_factor == 8.0


def test_llama_3_2_1b_parameter_count():
    cfg = llama_3_2_1b_config()
    assert parameter_count(cfg) == 1_235_814_400
    assert parameter_count(cfg, include_output=True) == 1_235_814_400 + 128256 * 2048


def test_full_1b_model_shapes_on_meta_device():
    """Every tensor of the real model, allocated on the meta device (no memory)."""
    cfg = llama_3_2_1b_config()
    shapes = expected_shapes(cfg)
    assert len(shapes) == 2 + 1 + 9 * 16
    with torch.device("meta"):
        sd = {k: torch.empty(s) for k, s in shapes.items()}
        from helpers.model import forward

        logits = forward(torch.zeros(6, dtype=torch.long, device="meta"), sd, cfg)
    assert logits.shape == (6, 128256)
    assert shapes["layers.0.attention.wq.weight"] == (2048, 2048)
    assert shapes["layers.0.attention.wk.weight"] == (512, 2048)
    assert shapes["layers.15.feed_forward.w2.weight"] == (2048, 8192)
    assert sum(torch.Size(s).numel() for k, s in shapes.items() if k != "output.weight") == 1_235_814_400


def test_roundtrip_through_params_json(tmp_path):
    cfg = llama_3_2_1b_config()
    (tmp_path / "params.json").write_text(json.dumps(cfg.to_params()))
    assert ModelConfig.from_json(tmp_path) == cfg
    assert cfg.to_params() == LLAMA_3_2_1B_PARAMS


def test_unknown_keys_are_kept_and_missing_kv_heads_means_mha():
    cfg = ModelConfig.from_params({"dim": 64, "n_layers": 1, "n_heads": 4, "vocab_size": 10, "future_key": 1})
    assert cfg.n_kv_heads == 4 and cfg.extra == {"future_key": 1}


@pytest.mark.parametrize(
    "params, message",
    [
        ({"dim": 64, "n_layers": 1, "n_heads": 5, "vocab_size": 10}, "divisible by n_heads"),
        ({"dim": 64, "n_layers": 1, "n_heads": 4, "n_kv_heads": 3, "vocab_size": 10}, "multiple of n_kv_heads"),
        ({"dim": 64, "n_layers": 0, "n_heads": 4, "vocab_size": 10}, "n_layers must be a positive integer"),
        ({"dim": 64, "n_heads": 4, "vocab_size": 10}, "lacks required key"),
        ({"dim": 12, "n_layers": 1, "n_heads": 4, "vocab_size": 10}, "must be even for RoPE"),
        ({"dim": "64", "n_layers": 1, "n_heads": 4, "vocab_size": 10}, "dim must be a positive integer"),
    ],
)
def test_bad_params_are_refused(params, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_params(params)


def test_missing_and_broken_params_json(tmp_path):
    with pytest.raises(ConfigError, match="params.json not found"):
        ModelConfig.from_json(tmp_path)
    (tmp_path / "params.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a valid params.json"):
        ModelConfig.from_json(tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"rope_theta": 0}, "rope_theta must be a finite number > 0"),
        ({"rope_theta": "500000"}, "rope_theta must be a finite number > 0, found '500000'"),
        ({"norm_eps": float("inf")}, "norm_eps must be a finite number > 0, found inf"),
        ({"norm_eps": 0.0}, "norm_eps must be a finite number > 0"),
        ({"ffn_dim_multiplier": float("nan")}, "ffn_dim_multiplier must be a finite number > 0"),
        ({"use_scaled_rope": "false"}, "use_scaled_rope must be true or false"),
        ({"use_scaled_rope": 1}, "use_scaled_rope must be true or false"),
        ({"n_layers": True}, "n_layers must be a positive integer"),
        ({"n_layers": 10**9}, "n_layers = 1000000000 is more than 1024"),
        ({"dim": 2**20, "n_heads": 16}, "describes 2.65e\\+13 parameters, more than 1e\\+12"),
    ],
)
def test_values_of_the_wrong_type_or_range_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_params({"dim": 64, "n_layers": 2, "n_heads": 4, "vocab_size": 128256} | change)


def test_scaling_constants_are_checked_too(tmp_path):
    import dataclasses

    cfg = ModelConfig(dim=64, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=10)
    for change, message in [
        ({"rope_scale_factor": float("nan")}, "rope_scale_factor must be a finite number > 0, found nan"),
        ({"rope_high_freq_factor": 1.0}, "rope_high_freq_factor \\(1.0\\) must be larger"),
        ({"max_seq_len": 0}, "max_seq_len must be a positive integer"),
    ]:
        with pytest.raises(ConfigError, match=message):
            dataclasses.replace(cfg, **change)
    (tmp_path / "params.json").write_text(json.dumps(cfg.to_params()))
    with pytest.raises(ConfigError, match="rope_scale_factor must be a finite number > 0, found nan"):
        ModelConfig.from_json(tmp_path, rope_scale_factor=float("nan"))


def test_an_absurd_config_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    """n_layers = 10**9 used to build a shapes table of 9e9 entries until memory ran out."""
    from helpers import checkpoint

    def must_not_run(cfg):
        raise AssertionError("expected_shapes was called on an absurd config")

    monkeypatch.setattr(checkpoint, "expected_shapes", must_not_run)
    (tmp_path / "params.json").write_text(json.dumps({"dim": 8, "n_layers": 10**9, "n_heads": 2, "vocab_size": 10}))
    with pytest.raises(ConfigError, match="params.json: n_layers = 1000000000 is more than 1024"):
        checkpoint.load_checkpoint(tmp_path)


@pytest.mark.parametrize("name", ["gqa", "1b"])
def test_closed_form_parameter_count_equals_the_count_over_shapes(name):
    cfg = (
        llama_3_2_1b_config()
        if name == "1b"
        else ModelConfig(dim=96, n_layers=3, n_heads=6, n_kv_heads=2, vocab_size=500)
    )
    assert cfg.n_parameters == parameter_count(cfg)
