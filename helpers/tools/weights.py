"""``make weights``: download Meta's original Llama-3.2-1B files with huggingface_hub.

The repository is gated: accept the licence on its Hugging Face page, create a
read token, and ``export HF_TOKEN=...`` before running ``make weights``. The
files land in ``models/Llama-3.2-1B/original/`` (git-ignored), which the
notebooks then use in place of the embedded tiny model.

``make weights MODEL=meta-llama/Llama-3.2-1B-Instruct`` (``--repo-id``) fetches another of
Meta's repositories with an ``original/`` folder, into ``models/<its name>/original/``
(here ``models/Llama-3.2-1B-Instruct/original/``): a checkpoint to name with
``--checkpoint`` or ``LLAMA_CHECKPOINT`` (chapter 14 chats with the Instruct model).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..checkpoint import MODELS_DIR, WEIGHTS_FILE, CheckpointError, load_checkpoint
from ..files import display_path

REPO_ID = "meta-llama/Llama-3.2-1B"


def licence_url(repo_id: str) -> str:
    return f"https://huggingface.co/{repo_id}"


def default_dest(repo_id: str) -> Path:
    """models/<the repository's name>: models/Llama-3.2-1B for the default, the directory
    resolve_checkpoint_dir looks in; models/Llama-3.2-1B-Instruct for the Instruct model."""
    name = repo_id.rstrip("/").rsplit("/", 1)[-1]
    if not name or name in (".", ".."):
        raise DownloadError(f"{repo_id!r} is not a Hugging Face repository id (owner/name)")
    return MODELS_DIR / name


class DownloadError(RuntimeError):
    """The download failed for a reason the user can fix; the message says how."""


def download_weights(dest: str | Path | None = None, repo_id: str = REPO_ID, token: str | None = None) -> Path:
    """Fetch ``original/*`` of ``repo_id`` into ``dest`` (default models/<repository name>) and check it loads.

    The files are downloaded into the Hugging Face cache (resumable, shared with other
    tools) and ``dest/original/`` gets a link to each. Returns ``dest/original``.
    Honours HF_TOKEN, HF_HOME / HF_HUB_CACHE and HF_HUB_OFFLINE (then only the cache is read).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    dest = Path(dest) if dest else default_dest(repo_id)
    token = token or os.environ.get("HF_TOKEN") or None
    try:
        snapshot = Path(snapshot_download(repo_id, allow_patterns=["original/*"], token=token))
    except GatedRepoError as err:
        raise DownloadError(
            f"access to {repo_id} was refused (HTTP {_status(err)}): accept the Llama 3.2 licence at "
            f"{licence_url(repo_id)} with the account whose token is in HF_TOKEN, wait for approval, then retry"
        ) from err
    except RepositoryNotFoundError as err:
        hint = "set HF_TOKEN to a read token" if not token else "check that HF_TOKEN is valid"
        raise DownloadError(
            f"{repo_id} could not be accessed (HTTP {_status(err)}): gated repositories need a token; {hint} "
            "(https://huggingface.co/settings/tokens)"
        ) from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise DownloadError(
            f"could not reach huggingface.co and {repo_id} is not in the local Hugging Face cache: "
            "check the network (and that HF_HUB_OFFLINE is not set), then retry"
        ) from err
    except HfHubHTTPError as err:
        if _status(err) in (401, 403):
            raise DownloadError(
                f"huggingface.co answered HTTP {_status(err)}: set HF_TOKEN to a valid read token and accept "
                f"the licence at {licence_url(repo_id)}"
            ) from err
        status = _status(err)
        meaning = {
            429: "too many requests: wait a few minutes",
            500: "a server error",
            502: "a server error",
            503: "the service is unavailable",
            504: "a gateway timeout",
        }.get(status, "an error")
        raise DownloadError(
            f"huggingface.co answered HTTP {status} ({meaning}); nothing is wrong on your side: retry later"
        ) from err
    except OSError as err:  # connection refused, DNS failure, disk full
        raise DownloadError(f"download failed ({type(err).__name__}: {err}); check the network and disk") from err
    ckpt_dir = _link_into(snapshot / "original", dest / "original", repo_id)
    try:
        cfg, _ = load_checkpoint(ckpt_dir)
    except CheckpointError as err:
        raise DownloadError(f"downloaded files do not form a valid checkpoint: {err}") from err
    size = (ckpt_dir / WEIGHTS_FILE).stat().st_size / 2**30
    print(f"ok: {display_path(ckpt_dir)} ({cfg.n_layers} layers, dim {cfg.dim}, {size:.2f} GiB)")
    return ckpt_dir


def _link_into(src: Path, dst: Path, repo_id: str = REPO_ID) -> Path:
    """Make dst/<file> point at the Hugging Face cache's copy of each file (no second copy on disk)."""
    if not (src / "params.json").is_file():
        raise DownloadError(
            f"the downloaded snapshot has no original/params.json: is {repo_id} one of Meta's repositories "
            "with an original/ folder?"
        )
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        target = dst / f.name
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(f.resolve())
    return dst


def _status(err: Exception) -> int | str:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", "?")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", default=None, help="target directory (default models/<the repository's name>)")
    parser.add_argument(
        "--repo-id", default=REPO_ID, help=f"the Hugging Face repository (default {REPO_ID}; make weights MODEL=...)"
    )
    args = parser.parse_args(argv)
    try:
        download_weights(args.dest, args.repo_id)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
