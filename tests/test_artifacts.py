"""Tensors passed between notebooks: atomic saves, provenance checks, clear errors."""

import pytest
import torch

from helpers import artifacts
from helpers.artifacts import ArtifactError, load_artifact, save_artifact
from helpers.checkpoint import load_checkpoint, save_checkpoint

PROMPT = "The capital of France is"


def test_roundtrip(tmp_path, small_ckpt):
    t = {"tokens": torch.tensor([1, 2, 3]), "x": torch.randn(3, 4)}
    path = save_artifact("01_tokens", t, small_ckpt, PROMPT, torch.float32, root=tmp_path / "a")
    assert path == tmp_path / "a" / "random-llama" / "01_tokens.pt"
    back = load_artifact("01_tokens", small_ckpt, PROMPT, torch.float32, root=tmp_path / "a")
    assert set(back) == set(t) and all(torch.equal(back[k], t[k]) for k in t)


def test_missing_says_which_notebook_to_run(tmp_path, small_ckpt):
    with pytest.raises(ArtifactError, match="03_normed.pt does not exist: run notebook 03 first"):
        load_artifact("03_normed", small_ckpt, PROMPT, torch.float32, root=tmp_path / "a")


def test_foreign_prompt_dtype_or_checkpoint_is_refused(tmp_path, small_ckpt):
    save_artifact("02_embeddings", {"x": torch.ones(2)}, small_ckpt, PROMPT, torch.float32, root=tmp_path / "a")
    with pytest.raises(ArtifactError, match="another prompt .*re-run notebook 02"):
        load_artifact("02_embeddings", small_ckpt, "Hello", torch.float32, root=tmp_path / "a")
    with pytest.raises(ArtifactError, match="dtype 'float32' \\(now 'bfloat16'\\)"):
        load_artifact("02_embeddings", small_ckpt, PROMPT, torch.bfloat16, root=tmp_path / "a")
    # same directory name, different weights: the fingerprint differs
    cfg, sd = load_checkpoint(small_ckpt)
    save_checkpoint(small_ckpt, cfg, {k: v[..., :] for k, v in sd.items()}, dtype=torch.bfloat16)
    with pytest.raises(ArtifactError, match="fingerprint"):
        load_artifact("02_embeddings", small_ckpt, PROMPT, torch.float32, root=tmp_path / "a")


def test_interrupted_save_keeps_the_old_file(tmp_path, small_ckpt, monkeypatch):
    save_artifact("04_qkv", {"q": torch.zeros(2)}, small_ckpt, PROMPT, torch.float32, root=tmp_path / "a")

    def broken(obj, f, *a, **k):
        open(f, "wb").write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(KeyboardInterrupt):
        save_artifact("04_qkv", {"q": torch.ones(2)}, small_ckpt, PROMPT, torch.float32, root=tmp_path / "a")
    monkeypatch.undo()
    assert torch.equal(
        load_artifact("04_qkv", small_ckpt, PROMPT, torch.float32, root=tmp_path / "a")["q"], torch.zeros(2)
    )
    assert [p.name for p in (tmp_path / "a" / "random-llama").iterdir()] == ["04_qkv.pt"]


def test_corrupt_file_and_bad_names(tmp_path, small_ckpt):
    path = artifacts.artifact_path("05_rope", small_ckpt, tmp_path / "a")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="unreadable .* re-run notebook 05"):
        load_artifact("05_rope", small_ckpt, PROMPT, torch.float32, root=tmp_path / "a")
    with pytest.raises(ValueError, match="must look like '01_tokens'"):
        artifacts.artifact_path("tokens", small_ckpt)
    with pytest.raises(TypeError, match="tensors only"):
        save_artifact("01_tokens", {"ids": [1, 2]}, small_ckpt, PROMPT, torch.float32, root=tmp_path / "a")
