"""Checkpoint resolution, safe loading and validation: every bad input gets a clear error."""

import json
import os
import pickle

import pytest
import torch

from helpers import checkpoint as ck
from helpers.checkpoint import (
    CheckpointError,
    load_checkpoint,
    random_state_dict,
    resolve_checkpoint_dir,
    save_checkpoint,
    validate_state_dict,
)


def test_save_then_load_roundtrip(small_ckpt, small_cfg):
    cfg, sd = load_checkpoint(small_ckpt)
    assert cfg == small_cfg
    ref = random_state_dict(small_cfg, seed=1, std=0.2)
    assert set(sd) == set(ref)
    for k in ref:
        assert torch.equal(sd[k], ref[k]), k
    # the tied output is stored once and comes back as the embedding
    assert sd["output.weight"].data_ptr() == sd["tok_embeddings.weight"].data_ptr()


def test_bf16_save_and_cast(tmp_path, small_cfg):
    save_checkpoint(tmp_path, small_cfg, random_state_dict(small_cfg), dtype=torch.bfloat16)
    _, sd = load_checkpoint(tmp_path)
    assert sd["layers.0.attention.wq.weight"].dtype == torch.bfloat16
    _, sd32 = load_checkpoint(tmp_path, dtype=torch.float32)
    assert sd32["norm.weight"].dtype == torch.float32
    assert sd32["output.weight"] is sd32["tok_embeddings.weight"]


def test_output_weight_may_be_omitted(tmp_path, small_cfg):
    sd = random_state_dict(small_cfg)
    del sd["output.weight"]
    torch.save(sd, tmp_path / "consolidated.00.pth")
    (tmp_path / "params.json").write_text(json.dumps(small_cfg.to_params()))
    _, loaded = load_checkpoint(tmp_path)
    assert torch.equal(loaded["output.weight"], loaded["tok_embeddings.weight"])


def test_resolution_order(tmp_path, monkeypatch, small_ckpt):
    monkeypatch.setenv("LLAMA_CHECKPOINT", str(small_ckpt))
    assert resolve_checkpoint_dir() == small_ckpt
    other = tmp_path / "other"
    save_checkpoint(other, *load_checkpoint(small_ckpt))
    assert resolve_checkpoint_dir(other) == other  # explicit beats the environment
    monkeypatch.delenv("LLAMA_CHECKPOINT")
    real = tmp_path / "models" / "Llama-3.2-1B" / "original"
    tiny = tmp_path / "models" / "tiny-llama-3.2" / "original"
    monkeypatch.setattr(ck, "REAL_1B_DIR", real)
    monkeypatch.setattr(ck, "TINY_DIR", tiny)
    with pytest.raises(CheckpointError, match="make tiny-model"):
        resolve_checkpoint_dir()
    save_checkpoint(tiny, *load_checkpoint(small_ckpt))
    assert resolve_checkpoint_dir() == tiny
    real.mkdir(parents=True)
    (real / "params.json").write_text("{}")
    assert resolve_checkpoint_dir() == tiny, "a half-downloaded real checkpoint is not chosen"
    save_checkpoint(real, *load_checkpoint(small_ckpt))
    assert resolve_checkpoint_dir() == real


def test_env_pointing_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_CHECKPOINT", str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="LLAMA_CHECKPOINT points to .* no params.json"):
        resolve_checkpoint_dir()


def test_missing_weights_file(tmp_path, small_cfg):
    (tmp_path / "params.json").write_text(json.dumps(small_cfg.to_params()))
    with pytest.raises(CheckpointError, match="consolidated.00.pth not found: .*make weights"):
        load_checkpoint(tmp_path)


def test_wrong_shape_names_file_key_and_shapes(small_ckpt, small_cfg):
    params = small_cfg.to_params() | {"dim": 96, "n_heads": 8}
    (small_ckpt / "params.json").write_text(json.dumps(params))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(small_ckpt)
    msg = str(err.value)
    assert "consolidated.00.pth" in msg and "tok_embeddings.weight" in msg
    assert "(300, 64)" in msg and "(300, 96)" in msg


def test_missing_and_unexpected_keys(small_cfg):
    sd = random_state_dict(small_cfg)
    del sd["layers.1.feed_forward.w3.weight"]
    with pytest.raises(CheckpointError, match=r"missing key 'layers.1.feed_forward.w3.weight' \(expected shape"):
        validate_state_dict(sd, small_cfg)
    sd = random_state_dict(small_cfg) | {"layers.9.attention.wq.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="unexpected key 'layers.9.attention.wq.weight'"):
        validate_state_dict(sd, small_cfg)
    sd = random_state_dict(small_cfg) | {"norm.weight": torch.zeros(64, dtype=torch.long)}
    with pytest.raises(CheckpointError, match="norm.weight has dtype torch.int64"):
        validate_state_dict(sd, small_cfg)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_pickle_with_code_is_refused_and_not_run(tmp_path, small_cfg, capfd):
    (tmp_path / "params.json").write_text(json.dumps(small_cfg.to_params()))
    with open(tmp_path / "consolidated.00.pth", "wb") as f:
        pickle.dump({"tok_embeddings.weight": Evil()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="other than plain tensors"):
        load_checkpoint(tmp_path)
    assert "should-not-run" not in capfd.readouterr().out


def test_truncated_weights_file(small_ckpt):
    path = small_ckpt / "consolidated.00.pth"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="could not be read .* download it again"):
        load_checkpoint(small_ckpt)


def test_save_is_atomic(tmp_path, small_cfg, monkeypatch):
    """A save that fails midway leaves the previous checkpoint intact."""
    sd = random_state_dict(small_cfg, seed=0)
    save_checkpoint(tmp_path, small_cfg, sd)
    before = (tmp_path / "consolidated.00.pth").read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, small_cfg, random_state_dict(small_cfg, seed=1))
    assert (tmp_path / "consolidated.00.pth").read_bytes() == before


def test_display_path_relative_inside_the_repo_and_as_given_outside(tmp_path):
    from helpers.files import display_path

    assert display_path(ck.TINY_DIR) == "models/tiny-llama-3.2/original"  # never this machine's absolute path
    assert display_path(tmp_path / "x") == str(tmp_path / "x")  # a user's path, as given, not shortened
    assert display_path("relative/dir") == "relative/dir"
    loop = tmp_path / "loop"
    loop.symlink_to(loop)  # a symbolic-link loop is shown, not resolved
    assert display_path(loop) == str(loop)
    assert ck.checkpoint_name(ck.TINY_DIR) == "tiny-llama-3.2"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_by_name(small_ckpt, bad):
    sd = torch.load(small_ckpt / "consolidated.00.pth", weights_only=True)
    sd["layers.1.attention.wv.weight"][0, 0] = bad
    torch.save(sd, small_ckpt / "consolidated.00.pth")
    with pytest.raises(CheckpointError, match=r"layers.1.attention.wv.weight holds 1 NaN or infinite value\(s\)"):
        load_checkpoint(small_ckpt)


def test_large_finite_weights_are_not_mistaken_for_inf(small_cfg):
    """The fast check sums a tensor; a sum can overflow although every value is finite."""
    sd = random_state_dict(small_cfg)
    sd["layers.0.feed_forward.w1.weight"] = torch.full_like(sd["layers.0.feed_forward.w1.weight"], 3e38)
    validate_state_dict(sd, small_cfg)


def test_empty_weights_file(small_ckpt):
    (small_ckpt / "consolidated.00.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"consolidated.00.pth is empty \(0 bytes\)"):
        load_checkpoint(small_ckpt)
