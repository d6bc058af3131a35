"""What the commands must never do to a user's files, and the odd inputs that must give one
`error:` line: races on export-hf's destination, planted symbolic links, the source checkpoint
as the destination, a full disk, unbounded reads, standard input, forged artifacts.
(tests/test_bad_inputs.py holds the one-line refusals the README's table lists.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import helpers.hf as hf
from helpers.artifacts import file_sha256, save_artifact, tensors_sha256
from helpers.checkpoint import TINY_DIR, load_checkpoint, random_state_dict, save_checkpoint
from helpers.config import ModelConfig
from helpers.files import atomic_write, new_directory
from helpers.quantize import QuantizedWeight, quantize_state_dict
from helpers.sampling import sample_next_token
from helpers.stages import load_stage

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The capital of France is"
EXPORT = sorted(
    ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
)


def cli(*args, stdin=None, input=None, timeout=300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CHECKPOINT"}
    return subprocess.run(
        [sys.executable, "-m", "helpers", *args],
        cwd=ROOT,
        env=env,
        stdin=stdin,
        input=input,
        capture_output=True,
        timeout=timeout,
    )


def strays(folder: Path) -> list[str]:
    """Temporary files or directories a command left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def small_vocab_ckpt(tmp_path) -> Path:
    cfg = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=128256, multiple_of=64)
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, cfg, random_state_dict(cfg, seed=2, std=0.3))
    return ckpt


# ---------------------------------------------------------------- export-hf's destination


def test_a_directory_filled_during_the_export_is_left_alone(tmp_path, monkeypatch):
    """The user creates --out and puts a file in it while the export runs: the final move must
    not replace it (a rename onto a non-empty directory fails), and nothing is left behind."""
    out = tmp_path / "D"
    real = hf.hf_tokenizer

    def meanwhile(tok):
        out.mkdir()
        (out / "important.txt").write_text("mine")
        return real(tok)

    monkeypatch.setattr(hf, "hf_tokenizer", meanwhile)
    with pytest.raises(ValueError, match="was created or filled by something else while writing: it was left as it is"):
        hf.export_hf(TINY_DIR, out)
    assert sorted(p.name for p in out.iterdir()) == ["important.txt"] and (out / "important.txt").read_text() == "mine"
    assert strays(tmp_path) == []


def test_two_exports_into_one_directory_at_once(tmp_path):
    """Both see an empty destination at the start; exactly one may fill it, the other refuses."""
    out = tmp_path / "D"
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CHECKPOINT"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "helpers", "export-hf", "--out", str(out)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in runs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    refused = next(err for rc, err in results if rc == 2)
    assert refused.startswith("error: --out") and ("not empty" in refused or "created or filled" in refused)
    assert sorted(p.name for p in out.iterdir()) == EXPORT
    assert strays(tmp_path) == []


def test_the_checkpoint_being_read_is_never_the_destination(tmp_path, small_vocab_ckpt):
    before = sorted(p.name for p in small_vocab_ckpt.iterdir())
    for out, relation in [
        (small_vocab_ckpt, "is"),
        (small_vocab_ckpt / "hf", "is inside"),
        (small_vocab_ckpt.parent, "contains"),
    ]:
        r = cli("export-hf", "--checkpoint", str(small_vocab_ckpt), "--out", str(out), "--force")
        assert r.returncode == 2 and f"{relation} the directory being read".encode() in r.stderr, r.stderr
    link = tmp_path / "link"
    link.symlink_to(small_vocab_ckpt)  # the same directory by another name
    r = cli("export-hf", "--checkpoint", str(small_vocab_ckpt), "--out", str(link), "--force")
    assert r.returncode == 2 and b"is the directory being read" in r.stderr
    assert sorted(p.name for p in small_vocab_ckpt.iterdir()) == before
    load_checkpoint(small_vocab_ckpt)  # still whole


def test_out_a_symbolic_link_to_a_directory_exports_into_it(tmp_path):
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    hf.export_hf(TINY_DIR, link)
    assert link.is_symlink() and sorted(p.name for p in target.iterdir()) == EXPORT
    assert strays(tmp_path) == []
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    nowhere = tmp_path / "nowhere"
    nowhere.symlink_to(tmp_path / "missing")
    for bad, problem in [(loop, "a symbolic-link loop"), (nowhere, "a symbolic link to nothing")]:
        with pytest.raises(ValueError, match=problem):
            with new_directory(bad):
                raise AssertionError("the work ran although the destination is refused up front")


def test_sigterm_during_an_export_leaves_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CHECKPOINT"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "helpers", "export-hf", "--out", str(tmp_path / "D")],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not any(p.name.startswith(".D.partial-") for p in tmp_path.iterdir()):  # the export has begun
        assert proc.poll() is None and time.monotonic() < deadline, "the export ended before it could be stopped"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    assert "error: terminated (SIGTERM); nothing was written" in proc.stderr.read()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_full_disk_during_the_export_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    """safetensors wraps ENOSPC in its own exception type: it must still read as a full disk."""

    def full(self, *_, **__):
        raise Exception(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )  # noqa: E501

    monkeypatch.setattr(hf.transformers_module().PreTrainedModel, "save_pretrained", full)
    with pytest.raises(OSError, match=r"--out \S+: the disk is full; the partial export was removed"):
        hf.export_hf(TINY_DIR, tmp_path / "D")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    from helpers.tools.cli import main

    assert main(["export-hf", "--out", str(tmp_path / "D")]) == 2


# ---------------------------------------------------------------- temporary files


def test_a_planted_symbolic_link_beside_the_target_is_never_written_through(tmp_path, monkeypatch):
    """The temporary file's name is random and created exclusively: a link planted at the name an
    older version used (.NAME.tmpPID), or at the very name mkstemp draws first, is not followed."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "l.pt"
    (tmp_path / f".l.pt.tmp{os.getpid()}").symlink_to(victim)
    names = iter(["planted", "fresh123", "fresh456"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    (tmp_path / ".l.pt.tmp-planted.tmp").symlink_to(victim)
    atomic_write(out, lambda f: torch.save({"x": torch.ones(2)}, f))
    assert victim.read_text() == "precious"
    assert torch.equal(torch.load(out, weights_only=True)["x"], torch.ones(2))
    assert not (tmp_path / ".l.pt.tmp-fresh123.tmp").exists()  # the temporary file was renamed


def test_a_long_out_name_is_not_refused_for_its_temporary_name(tmp_path):
    out = tmp_path / ("x" * 240 + ".pt")  # a 243-byte name: a temporary ".NAME.tmp..." would exceed 255
    atomic_write(out, lambda f: f.write(b"data"))
    assert out.read_bytes() == b"data" and strays(tmp_path) == []


# ---------------------------------------------------------------- reads and standard input


def test_prompt_files_and_standard_input_follow_one_rule(tmp_path):
    """A final newline (or CRLF) is dropped from either, everything else is kept, both must be UTF-8."""
    base = ("generate", "--max-new-tokens", "3")
    by_flag = cli(*base, "--prompt", PROMPT).stdout
    assert cli(*base, "--prompt-file", "-", input=(PROMPT + "\n").encode()).stdout == by_flag
    (tmp_path / "crlf.txt").write_bytes(b"a\r\nb\r\n")
    from helpers.tools.cli import read_prompt

    class Args:
        prompt = None
        prompt_file = str(tmp_path / "crlf.txt")

    assert read_prompt(Args, 100) == "a\r\nb"  # the inner CRLF kept, the final one dropped
    r = cli(*base, "--prompt-file", "-", input="café".encode("latin-1"))
    assert r.returncode == 2 and r.stderr.decode().strip() == "error: standard input is not UTF-8 text"
    r = cli(*base, "--prompt-file", "-", stdin=subprocess.DEVNULL, input=None)
    assert r.returncode == 2 and b"the prompt is empty" in r.stderr


def test_closed_standard_input_is_one_error_line():
    r = subprocess.run(
        f"exec {sys.executable} -m helpers generate --prompt-file - <&-",
        shell=True,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "LLAMA_CHECKPOINT"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and r.stderr.strip().startswith("error: --prompt-file -: standard input is closed")
    assert "Traceback" not in r.stderr


def test_an_endless_prompt_is_refused_after_a_bounded_read():
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CHECKPOINT"}
    # The peak is read from /proc (VmHWM, this address space only): getrusage's ru_maxrss
    # carries the parent's peak across exec, so under a large pytest process it measures pytest.
    code = (
        "import re, sys;"
        "sys.argv = ['helpers', 'generate', '--prompt-file', '-'];"
        "from helpers.tools.cli import main;"
        "rc = main();"
        "peak = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1);"
        "print(peak, file=sys.stderr); sys.exit(rc)"
    )
    with open("/dev/zero", "rb") as zeros:
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, stdin=zeros, capture_output=True, text=True)
    error, peak_kb = r.stderr.strip().splitlines()
    assert r.returncode == 2 and error.startswith("error: standard input holds more than"), r.stderr
    assert int(peak_kb) < 2_000_000, f"{peak_kb} kB resident: the prompt was read whole"


# ---------------------------------------------------------------- the remaining odd inputs


def test_int4_kernels_leave_a_matrix_whose_rows_are_not_blocks_of_64_on_the_dequantize_path():
    from helpers.kernels import for_cpu_kernels

    cfg = ModelConfig(dim=96, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=64, multiple_of=32)
    q = quantize_state_dict(random_state_dict(cfg, seed=1), "int4")
    kernels = for_cpu_kernels(q)  # raised "shape '[96, 1]' is invalid" for a width of 96
    key = "layers.0.attention.wq.weight"
    assert isinstance(kernels[key], QuantizedWeight)
    x = torch.randn(2, 96)
    torch.testing.assert_close(kernels[key].linear(x), q[key].linear(x), rtol=0, atol=0)


def test_tiny_temperatures_and_top_p_are_the_greedy_choice_and_nan_is_refused():
    logits = torch.tensor([0.5, 3.0, 1.0])
    for kwargs in ({"temperature": 1e-320}, {"temperature": 1.0, "top_p": 1e-300}):
        assert sample_next_token(logits, generator=torch.Generator().manual_seed(0), **kwargs) == 1, kwargs
    with pytest.raises(ValueError, match="the logits hold NaN"):
        sample_next_token(torch.tensor([float("nan"), 1.0]))  # greedy too, not token 0


@pytest.mark.parametrize("delay", [0.1, 0.3, 0.6, 1.0, 2.0])
def test_ctrl_c_while_starting_is_one_line(delay):
    """Ctrl-C at any moment of the start (torch and numpy half imported, or main() running)."""
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CHECKPOINT"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "helpers", "generate", "--prompt", PROMPT, "--max-new-tokens", "200", "--no-cache"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)  # the whole run takes about 6 s
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and err.strip().startswith("error: interrupted"), err
    assert len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------- artifacts


def _forge(path: Path, change) -> None:
    """Rewrite an artifact with changed tensors and a recomputed hash: it passes the hash check."""
    payload = torch.load(path, weights_only=True)
    payload["tensors"] = change(payload["tensors"])
    payload["sha256"] = tensors_sha256(payload["tensors"])
    torch.save(payload, path)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: {"tokens": t["tokens"][:-1]},  # wrong shape
        lambda t: {"tokens": t["tokens"] * 0 + 999_999},  # ids outside the vocabulary
        lambda t: {"ids": t["tokens"]},  # a renamed key
    ],
    ids=["shape", "ids", "key"],
)
def test_a_forged_artifact_is_rebuilt(tmp_path, change, capsys):
    root = tmp_path / "artifacts"
    tokens = load_stage("01_tokens", TINY_DIR, PROMPT, torch.float32, root)["tokens"]
    path = root / "tiny-llama-3.2" / "01_tokens.pt"
    _forge(path, change)
    capsys.readouterr()
    again = load_stage("01_tokens", TINY_DIR, PROMPT, torch.float32, root)
    assert torch.equal(again["tokens"], tokens)
    assert "rebuilt with helpers" in capsys.readouterr().out


def test_the_rebuild_message_names_a_long_prompt_without_printing_it(tmp_path, capsys):
    root = tmp_path / "artifacts"
    long_prompt = "The capital of France is " * 400
    save_artifact("01_tokens", {"tokens": torch.tensor([1, 2])}, TINY_DIR, long_prompt, torch.float32, root)
    capsys.readouterr()
    load_stage("01_tokens", TINY_DIR, PROMPT, torch.float32, root)
    line = capsys.readouterr().out
    assert "rebuilt" in line and len(line) < 400 and "10,000 characters" in line


def test_the_hash_cache_sees_an_edit_that_restores_the_modification_time(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 100)
    first = file_sha256(f, tmp_path)
    st = f.stat()
    f.write_bytes(b"b" * 100)  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old modification time
    assert file_sha256(f, tmp_path) != first
