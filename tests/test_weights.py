"""`make weights` runs huggingface_hub's real download code, here against a local cache, offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from helpers.checkpoint import load_checkpoint, random_state_dict, save_checkpoint
from helpers.config import ModelConfig

ROOT = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def build_hf_cache(cache: Path, cfg: ModelConfig, repo_id: str = "meta-llama/Llama-3.2-1B") -> Path:
    """The layout huggingface_hub itself writes: blobs, a snapshot per commit, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT / "original"
    save_checkpoint(snapshot, cfg, random_state_dict(cfg, seed=31))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def run_weights(tmp_path, cache, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LLAMA_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf-home"))
    return subprocess.run(
        [sys.executable, "-m", "helpers.tools.weights", "--dest", str(tmp_path / "dest"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_download_from_local_cache(tmp_path):
    cfg = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, multiple_of=16, use_scaled_rope=True)
    snapshot = build_hf_cache(tmp_path / "cache", cfg)
    result = run_weights(tmp_path, tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert "ok:" in result.stdout and "2 layers" in result.stdout
    got_cfg, sd = load_checkpoint(tmp_path / "dest" / "original")
    assert got_cfg == cfg
    _, ref = load_checkpoint(snapshot)
    assert all(torch.equal(sd[k], ref[k]) for k in ref)


def test_the_model_is_chosen_by_make_weights_model(tmp_path):
    """make weights MODEL=meta-llama/Llama-3.2-1B-Instruct fetches that repository (the cache holds
    only it, so the base model's files cannot stand in), by default into models/Llama-3.2-1B-Instruct."""
    from helpers.checkpoint import MODELS_DIR
    from helpers.tools.weights import default_dest

    instruct = "meta-llama/Llama-3.2-1B-Instruct"
    cfg = ModelConfig(dim=32, n_layers=3, n_heads=4, n_kv_heads=1, vocab_size=64, multiple_of=16)
    snapshot = build_hf_cache(tmp_path / "cache", cfg, repo_id=instruct)
    result = run_weights(tmp_path, tmp_path / "cache", "--repo-id", instruct)
    assert result.returncode == 0, result.stderr
    got_cfg, sd = load_checkpoint(tmp_path / "dest" / "original")
    assert got_cfg == cfg and (tmp_path / "dest" / "original" / "params.json").resolve().parent == snapshot
    assert run_weights(tmp_path, tmp_path / "cache").returncode == 1  # the base model is not in this cache
    assert default_dest(instruct) == MODELS_DIR / "Llama-3.2-1B-Instruct"
    assert default_dest("meta-llama/Llama-3.2-1B") == MODELS_DIR / "Llama-3.2-1B"
    dry = subprocess.run(["make", "-n", "weights", f"MODEL={instruct}"], cwd=ROOT, capture_output=True, text=True)
    assert f"-m helpers.tools.weights --repo-id {instruct}" in dry.stdout, dry.stdout + dry.stderr
    dry = subprocess.run(["make", "-n", "weights"], cwd=ROOT, capture_output=True, text=True)
    assert "-m helpers.tools.weights" in dry.stdout and "--repo-id" not in dry.stdout


def test_offline_without_cache_explains(tmp_path):
    result = run_weights(tmp_path, tmp_path / "empty-cache")
    assert result.returncode == 1
    assert "not in the local Hugging Face cache" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "dest" / "original").exists()


def test_incomplete_snapshot_is_reported(tmp_path):
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=64, multiple_of=16)
    snapshot = build_hf_cache(tmp_path / "cache", cfg)
    (snapshot / "params.json").write_text(json.dumps(cfg.to_params() | {"n_layers": 3}))
    result = run_weights(tmp_path, tmp_path / "cache")
    assert result.returncode == 1
    assert "not form a valid checkpoint" in result.stderr and "missing key 'layers.1" in result.stderr


def test_http_errors_become_instructions(monkeypatch, tmp_path):
    import httpx
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    from helpers.tools import weights

    def fail_with(exc):
        def fake(*a, **k):
            raise exc

        monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)

    response = httpx.Response(403, request=httpx.Request("GET", "https://huggingface.co/x"))
    fail_with(GatedRepoError("gated", response=response))
    assert weights.main(["--dest", str(tmp_path)]) == 1
    response = httpx.Response(401, request=httpx.Request("GET", "https://huggingface.co/x"))
    fail_with(RepositoryNotFoundError("401", response=response))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    try:
        weights.download_weights(tmp_path)
    except weights.DownloadError as err:
        assert "set HF_TOKEN" in str(err) and "401" in str(err)
    else:
        raise AssertionError("no error")
    fail_with(GatedRepoError("gated", response=httpx.Response(403, request=httpx.Request("GET", "https://h/x"))))
    try:
        weights.download_weights(tmp_path, token="x")
    except weights.DownloadError as err:
        assert "accept the Llama 3.2 licence" in str(err) and "403" in str(err)


def test_server_errors_are_named_not_called_unreachable(monkeypatch, tmp_path):
    import httpx
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    from helpers.tools import weights

    for status, words in [(500, "a server error"), (429, "too many requests"), (503, "the service is unavailable")]:
        response = httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/x"))

        def fake(*a, _r=response, **k):
            raise HfHubHTTPError(f"{_r.status_code} error", response=_r)

        monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
        try:
            weights.download_weights(tmp_path, token="x")
        except weights.DownloadError as err:
            assert f"answered HTTP {status} ({words}" in str(err) and "could not reach" not in str(err)
        else:
            raise AssertionError("no error")
