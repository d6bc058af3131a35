"""Tensors passed from one notebook to the next, with their provenance.

``artifacts/<checkpoint-name>/NN_<stage>.pt`` holds ``{"provenance": {...}, "tensors": {...},
"sha256": ...}``. A file is written to a temporary name and renamed, so an interrupted
save never leaves a half-written artifact. Loading checks the provenance -- tensors
computed on another checkpoint (by content, not by name), prompt or dtype are refused --
and the hash of the tensors, so that an edited or damaged file is refused too.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from pathlib import Path

import torch

from .checkpoint import WEIGHTS_FILE, checkpoint_name
from .files import REPO_ROOT, atomic_write, atomic_write_text, display_path

# BOOK_ARTIFACTS moves them (the tests run a chapter "cold" in an empty folder)
ARTIFACTS_DIR = Path(os.environ.get("BOOK_ARTIFACTS") or REPO_ROOT / "artifacts")
_NAME = re.compile(r"^(\d\d)_[a-z0-9_]+$")
_HASH_CACHE = ".content-hashes.json"


class ArtifactError(RuntimeError):
    """An artifact is missing, unreadable, altered, or was made from another checkpoint, prompt or dtype.

    The message is "<file> <reason>: <fix>"; ``reason`` alone is kept for a caller that rebuilds it.
    """

    def __init__(self, where: str, reason: str, fix: str):
        super().__init__(f"{where} {reason}: {fix}")
        self.reason = reason


def file_sha256(path: str | Path, cache_dir: str | Path | None = None) -> str:
    """SHA-256 of a file's bytes, remembered in ``<cache_dir>/.content-hashes.json``.

    The cache is keyed by the file's real path, size, modification time, inode and inode
    change time: a 2.5 GB checkpoint is hashed once (a few seconds), not by every chapter,
    and any write to the file is hashed again -- even one that restores the modification
    time afterwards, since no program can set the change time back.
    """
    path = Path(path)
    st = path.stat()
    key = os.path.realpath(path)
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    cache_file = Path(cache_dir or ARTIFACTS_DIR) / _HASH_CACHE
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key)
    if isinstance(entry, dict) and entry.get("stamp") == stamp:
        return entry["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    cache[key] = {"stamp": stamp, "sha256": digest.hexdigest()}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(cache, indent=1)
        atomic_write_text(cache_file, text, "hash cache")
    except OSError:
        pass  # a read-only checkout: hash again next time
    return digest.hexdigest()


def fingerprint(ckpt_dir: str | Path, cache_dir: str | Path | None = None) -> str:
    """Identifies a checkpoint by content: a hash of params.json and of the weights file's bytes."""
    ckpt_dir = Path(ckpt_dir)
    h = hashlib.sha256((ckpt_dir / "params.json").read_bytes())
    weights = ckpt_dir / WEIGHTS_FILE
    h.update(file_sha256(weights, cache_dir).encode() if weights.exists() else b"no weights")
    return h.hexdigest()[:16]


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of names, dtypes, shapes and bytes of a dict of tensors."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def provenance(ckpt_dir: str | Path, prompt: str, dtype: torch.dtype, root: str | Path | None = None) -> dict:
    """What an artifact was computed from."""
    return {
        "checkpoint": checkpoint_name(ckpt_dir),
        "fingerprint": fingerprint(ckpt_dir, root),
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
    """Save tensors atomically with their provenance and hash; returns the path."""
    bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"artifacts hold tensors only; {bad} are not tensors")
    path = artifact_path(name, ckpt_dir, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu() for k, v in tensors.items()}
    payload = {"provenance": provenance(ckpt_dir, prompt, dtype, root), "tensors": tensors}
    payload["sha256"] = tensors_sha256(tensors)
    return atomic_write(path, lambda f: torch.save(payload, f), "artifact")


def _short(value, width: int = 40) -> str:
    """repr(value), cut in the middle when long: a 10 KB prompt is named, not printed."""
    text = repr(value)
    return (
        text if len(text) <= width else f"{text[: width // 2]}…{text[-width // 2 :]} ({len(str(value)):,} characters)"
    )


def load_artifact(
    name: str,
    ckpt_dir: str | Path,
    prompt: str,
    dtype: torch.dtype,
    root: str | Path | None = None,
) -> dict[str, torch.Tensor]:
    """Load the tensors saved by notebook NN, refusing a missing, altered, stale or foreign file."""
    path = artifact_path(name, ckpt_dir, root)
    shown, rerun = display_path(path), f"re-run notebook {name[:2]}"
    if not path.is_file():
        raise ArtifactError(
            shown, "does not exist", f"run notebook {name[:2]} first (or `make run` for the whole book)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        found, tensors, stored_hash = payload["provenance"], payload["tensors"], payload.get("sha256")
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, TypeError) as err:
        raise ArtifactError(shown, f"is unreadable ({type(err).__name__})", rerun) from err
    if stored_hash != tensors_sha256(tensors):
        raise ArtifactError(shown, "was altered after it was saved (its hash differs)", rerun)
    wanted = provenance(ckpt_dir, prompt, dtype, root)
    diffs = [f"{k} {_short(found.get(k))} (now {_short(v)})" for k, v in wanted.items() if found.get(k) != v]
    if diffs:
        raise ArtifactError(shown, "was computed with another " + ", ".join(diffs), rerun)
    return tensors
