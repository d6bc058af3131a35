"""Tensors passed from one notebook to the next, with their provenance.

``artifacts/<checkpoint-name>/NN_<stage>.pt`` holds ``{"provenance": {...}, "tensors": {...}}``.
A file is written to a temporary name and renamed, so an interrupted save never
leaves a half-written artifact. Loading checks the provenance: tensors computed
on another checkpoint, prompt or dtype are refused with the notebook to re-run.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from pathlib import Path

import torch

from .checkpoint import REPO_ROOT, checkpoint_name, display_path

ARTIFACTS_DIR = REPO_ROOT / "artifacts"
_NAME = re.compile(r"^(\d\d)_[a-z0-9_]+$")


class ArtifactError(RuntimeError):
    """An artifact is missing, unreadable, or was made from another checkpoint, prompt or dtype."""


def fingerprint(ckpt_dir: str | Path) -> str:
    """Identifies a checkpoint's contents cheaply: hash of params.json plus the weights file's size."""
    ckpt_dir = Path(ckpt_dir)
    h = hashlib.sha256((ckpt_dir / "params.json").read_bytes())
    weights = ckpt_dir / "consolidated.00.pth"
    h.update(str(weights.stat().st_size if weights.exists() else -1).encode())
    return h.hexdigest()[:16]


def provenance(ckpt_dir: str | Path, prompt: str, dtype: torch.dtype) -> dict:
    """What an artifact was computed from."""
    return {
        "checkpoint": checkpoint_name(ckpt_dir),
        "fingerprint": fingerprint(ckpt_dir),
        "prompt": prompt,
        "dtype": str(dtype).removeprefix("torch."),
    }


def artifact_path(name: str, ckpt_dir: str | Path, root: str | Path | None = None) -> Path:
    """artifacts/<checkpoint-name>/<name>.pt; name is like '01_tokens' (notebook number, stage)."""
    if not _NAME.match(name):
        raise ValueError(f"artifact name {name!r} must look like '01_tokens' (notebook number, then stage)")
    return Path(root or ARTIFACTS_DIR) / checkpoint_name(ckpt_dir) / f"{name}.pt"


def save_artifact(
    name: str,
    tensors: dict[str, torch.Tensor],
    ckpt_dir: str | Path,
    prompt: str,
    dtype: torch.dtype,
    root: str | Path | None = None,
) -> Path:
    """Save tensors atomically with their provenance; returns the path."""
    bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"artifacts hold tensors only; {bad} are not tensors")
    path = artifact_path(name, ckpt_dir, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "provenance": provenance(ckpt_dir, prompt, dtype),
        "tensors": {k: v.detach().cpu() for k, v in tensors.items()},
    }
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_artifact(
    name: str,
    ckpt_dir: str | Path,
    prompt: str,
    dtype: torch.dtype,
    root: str | Path | None = None,
) -> dict[str, torch.Tensor]:
    """Load the tensors saved by notebook NN, refusing a stale or foreign file."""
    path = artifact_path(name, ckpt_dir, root)
    notebook = f"notebook {name[:2]}"
    if not path.is_file():
        raise ArtifactError(
            f"{display_path(path)} does not exist: run {notebook} first (or `make run` for the whole book)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        found, tensors = payload["provenance"], payload["tensors"]
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, TypeError) as err:
        raise ArtifactError(f"{display_path(path)} is unreadable ({type(err).__name__}): re-run {notebook}") from err
    wanted = provenance(ckpt_dir, prompt, dtype)
    diffs = [f"{k} {found.get(k)!r} (now {v!r})" for k, v in wanted.items() if found.get(k) != v]
    if diffs:
        raise ArtifactError(
            f"{display_path(path)} was computed with another " + ", ".join(diffs) + f": re-run {notebook}"
        )
    return tensors
