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
        f.write(b"half")
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


def test_same_sized_checkpoint_with_other_weights_is_refused(tmp_path, small_ckpt, small_cfg):
    """The fingerprint used to be params.json plus the file's size: equal sizes passed."""
    save_artifact("03_rmsnorm", {"x": torch.ones(2)}, small_ckpt, PROMPT, torch.float32, root=tmp_path / "a")
    size = (small_ckpt / "consolidated.00.pth").stat().st_size
    from helpers.checkpoint import random_state_dict

    save_checkpoint(small_ckpt, small_cfg, random_state_dict(small_cfg, seed=99, std=0.2))
    assert (small_ckpt / "consolidated.00.pth").stat().st_size == size
    with pytest.raises(ArtifactError, match="another fingerprint"):
        load_artifact("03_rmsnorm", small_ckpt, PROMPT, torch.float32, root=tmp_path / "a")


def test_edited_tensor_bytes_are_refused(tmp_path, small_ckpt):
    path = save_artifact("06_one_layer", {"x1": torch.zeros(3)}, small_ckpt, PROMPT, torch.float32, root=tmp_path / "a")
    payload = torch.load(path, weights_only=True)
    payload["tensors"]["x1"][1] = 7.0  # provenance untouched, one number changed
    torch.save(payload, path)
    with pytest.raises(ArtifactError, match="altered after it was saved"):
        load_artifact("06_one_layer", small_ckpt, PROMPT, torch.float32, root=tmp_path / "a")


def test_weights_are_hashed_once_then_read_from_the_cache(tmp_path, small_ckpt):
    import json
    import os

    cache = tmp_path / "a"
    first = artifacts.fingerprint(small_ckpt, cache)
    entries = json.loads((cache / ".content-hashes.json").read_text())
    (key,) = entries
    entries[key]["sha256"] = "0" * 64  # if the cache is read, this is what the fingerprint uses
    (cache / ".content-hashes.json").write_text(json.dumps(entries))
    assert artifacts.fingerprint(small_ckpt, cache) != first
    weights = small_ckpt / "consolidated.00.pth"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1))  # the file "changed"
    assert artifacts.fingerprint(small_ckpt, cache) == first  # hashed again
