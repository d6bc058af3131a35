"""Every bad input the command line can meet gets one `error:` line, exit status 2, and writes nothing.

CASES is the table the README's "Bad input" section shows; a test keeps the two equal.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.book import smollm2
from helpers.checkpoint import packaged_tokenizer_path, random_state_dict, save_checkpoint
from helpers.config import ModelConfig

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The capital of France is"
CFG = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=128256, multiple_of=32, use_scaled_rope=True)


def make_ckpt(root: Path, name: str = "ckpt") -> Path:
    ckpt = root / name
    save_checkpoint(ckpt, CFG, random_state_dict(CFG, seed=2, std=0.3))
    return ckpt


def edit_params(ckpt: Path, **changes) -> None:
    params = json.loads((ckpt / "params.json").read_text()) | changes
    (ckpt / "params.json").write_text(json.dumps(params))


def nan_weight(ckpt: Path) -> None:
    sd = torch.load(ckpt / "consolidated.00.pth", weights_only=True)
    sd["layers.1.feed_forward.w2.weight"][3, 4] = math.nan
    torch.save(sd, ckpt / "consolidated.00.pth")


def truncated_tokenizer(ckpt: Path) -> None:
    lines = packaged_tokenizer_path().read_text().splitlines()[:1000]
    (ckpt / "tokenizer.model").write_text("\n".join(lines) + "\n")


def broken_ckpt(change):
    """Arguments that run `generate` on a fresh random checkpoint after ``change(ckpt_dir)``."""

    def make(t: Path) -> list[str]:
        ckpt = make_ckpt(t)
        change(ckpt)
        return ["generate", "--checkpoint", str(ckpt), "--prompt", PROMPT]

    return make


def truncate_weights(ckpt: Path) -> None:
    path = ckpt / "consolidated.00.pth"
    path.write_bytes(path.read_bytes()[:5000])


def symlink_loop(t: Path) -> list[str]:
    (t / "loop").symlink_to(t / "loop")
    return ["generate", "--checkpoint", str(t / "loop"), "--prompt", PROMPT]


def latin1_prompt(t: Path) -> list[str]:
    (t / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    return ["generate", "--prompt-file", str(t / "latin1.txt")]


def fifo_out(t: Path) -> list[str]:
    os.mkfifo(t / "fifo")
    return ["logits", "--prompt", PROMPT, "--out", str(t / "fifo")]


def big_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:  # sparse: no disk space, but a reader sees `size` bytes
        f.truncate(size)


def nested_params(ckpt: Path) -> None:
    (ckpt / "params.json").write_text("[" * 100_000 + "]" * 100_000)


def huge_dim(ckpt: Path) -> None:
    text = (ckpt / "params.json").read_text()
    (ckpt / "params.json").write_text(text.replace('"dim": 32', '"dim": ' + "9" * 5000))


def weights_as(change):
    def edit(ckpt: Path) -> None:
        sd = torch.load(ckpt / "consolidated.00.pth", weights_only=True)
        sd["layers.0.attention.wq.weight"] = change(sd["layers.0.attention.wq.weight"])
        torch.save(sd, ckpt / "consolidated.00.pth")

    return edit


def export_into_source(inside: bool):
    def make(t: Path) -> list[str]:
        ckpt = make_ckpt(t)
        return ["export-hf", "--checkpoint", str(ckpt), "--out", str(ckpt / "hf" if inside else ckpt), "--force"]

    return make


def link(t: Path, target: Path) -> list[str]:
    (t / "out").symlink_to(target)
    return ["export-hf", "--out", str(t / "out")]


# (what is wrong: f(tmp) -> command-line arguments, the message's start after "error: ",
#  with PATH for a path the test chose)
def _with_file(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "notes.txt").write_text("keep me")
    return folder


CASES = [
    ("empty prompt", lambda t: ["generate", "--prompt", ""], "the prompt is empty"),
    ("chat with an empty message", lambda t: ["chat", "--message", " "], "the message is empty"),
    (
        "chat with a model not trained to chat",
        lambda t: ["chat", "--message", "What is the capital of France?"],
        "PATH has no chat format (chat_template.json): this model was not trained to chat",
    ),
    (
        "chat text with a character the tokenizer cannot encode",
        lambda t: ["chat", "--checkpoint", str(smollm2.OUT), "--message", "a\x04b"],
        "character '\\x04' (U+0004) at position 1 cannot be encoded",
    ),
    ("no prompt at all", lambda t: ["generate"], "one of the arguments --prompt --prompt-file is required"),
    (
        "a flag's value of the wrong type",
        lambda t: ["generate", "--prompt", PROMPT, "--max-new-tokens", "ten"],
        "argument --max-new-tokens: invalid int value: 'ten'",
    ),
    (
        "temperature 0",
        lambda t: ["generate", "--prompt", PROMPT, "--temperature", "0"],
        "temperature must be a finite number > 0",
    ),
    (
        "temperature inf",
        lambda t: ["generate", "--prompt", PROMPT, "--temperature", "inf"],
        "temperature must be a finite number > 0",
    ),
    (
        "top-p outside (0, 1]",
        lambda t: ["generate", "--prompt", PROMPT, "--temperature", "1", "--top-p", "1.2"],
        "top_p must be in (0, 1]",
    ),
    (
        "top-k below 1",
        lambda t: ["generate", "--prompt", PROMPT, "--temperature", "1", "--top-k", "0"],
        "top_k must be an integer >= 1",
    ),
    (
        "top-k without a temperature",
        lambda t: ["generate", "--prompt", PROMPT, "--top-k", "5"],
        "--top-k only applies when sampling",
    ),
    (
        "an unknown quantization scheme",
        lambda t: ["generate", "--prompt", PROMPT, "--quantize", "int3"],
        "argument --quantize: invalid choice: 'int3' (choose from 'int8', 'int4', 'nf4')",
    ),
    (
        "no new tokens asked for",
        lambda t: ["generate", "--prompt", PROMPT, "--max-new-tokens", "0"],
        "--max-new-tokens must be >= 1",
    ),
    (
        "--compile with --no-cache",
        lambda t: ["generate", "--prompt", PROMPT, "--compile", "--no-cache"],
        "--compile speeds up the cached decode step: leave out --no-cache",
    ),
    (
        "a prompt file that does not exist",
        lambda t: ["generate", "--prompt-file", str(t / "none.txt")],
        "--prompt-file PATH: No such file or directory",
    ),
    (
        "a prompt file that is not UTF-8",
        latin1_prompt,
        "--prompt-file PATH is not UTF-8 text",
    ),
    (
        "a prompt file larger than the context can hold",
        lambda t: ["generate", "--prompt-file", "/dev/zero"],
        "--prompt-file /dev/zero holds more than",
    ),
    (
        "a seed out of range",
        lambda t: ["generate", "--prompt", PROMPT, "--temperature", "1", "--seed", str(10**23)],
        "--seed must be an integer in 0 .. 2**63 - 1",
    ),
    (
        "--checkpoint that holds no params.json",
        lambda t: ["generate", "--checkpoint", str(t / "nowhere"), "--prompt", PROMPT],
        "--checkpoint points to PATH, which holds no params.json",
    ),
    (
        "--checkpoint that is a symbolic-link loop",
        symlink_loop,
        "--checkpoint points to PATH, which holds no params.json",
    ),
    (
        "an empty weights file",
        broken_ckpt(lambda c: (c / "consolidated.00.pth").write_bytes(b"")),
        "PATH is empty (0 bytes): the download or copy was interrupted",
    ),
    (
        "a truncated weights file",
        broken_ckpt(truncate_weights),
        "PATH could not be read",
    ),
    (
        "NaN in the weights",
        broken_ckpt(nan_weight),
        "PATH: layers.1.feed_forward.w2.weight holds 1 NaN or infinite value(s)",
    ),
    (
        'use_scaled_rope given as the string "false"',
        broken_ckpt(lambda c: edit_params(c, use_scaled_rope="false")),
        "PATH: use_scaled_rope must be true or false (a JSON boolean), found 'false'",
    ),
    (
        "an absurd number of layers",
        broken_ckpt(lambda c: edit_params(c, n_layers=10**9)),
        "PATH: n_layers = 1000000000 is more than 1024",
    ),
    (
        "a negative rope_theta",
        broken_ckpt(lambda c: edit_params(c, rope_theta=-1)),
        "PATH: rope_theta must be a finite number > 0, found -1",
    ),
    (
        "norm_eps = Infinity",
        broken_ckpt(lambda c: edit_params(c, norm_eps=math.inf)),
        "PATH: norm_eps must be a finite number > 0, found inf",
    ),
    (
        "a params.json far too large",
        broken_ckpt(lambda c: big_file(c / "params.json", 2 << 20)),
        "PATH is larger than 1,048,576 bytes (a params.json is a few hundred bytes): not read",
    ),
    (
        "a params.json nested too deeply",
        broken_ckpt(nested_params),
        "PATH is nested too deeply to be a params.json",
    ),
    (
        "a dim of 5,000 digits",
        broken_ckpt(huge_dim),
        "PATH is not a valid params.json: Exceeds the limit",
    ),
    (
        "an ffn_dim_multiplier that leaves no hidden units",
        broken_ckpt(lambda c: edit_params(c, ffn_dim_multiplier=1e-9)),
        "PATH: ffn_dim_multiplier = 1e-09 makes the feed-forward's hidden size 0: it must be at least 1",
    ),
    (
        "a float8 tensor in the weights",
        broken_ckpt(weights_as(lambda w: w.to(torch.float8_e4m3fn))),
        "PATH: layers.0.attention.wq.weight has dtype torch.float8_e4m3fn",
    ),
    (
        "a sparse tensor in the weights",
        broken_ckpt(weights_as(lambda w: w.to_sparse())),
        "PATH: layers.0.attention.wq.weight is a torch.sparse_coo tensor",
    ),
    (
        "a tokenizer.model far too large",
        broken_ckpt(lambda c: big_file(c / "tokenizer.model", 65 << 20)),
        "PATH is larger than 67,108,864 bytes",
    ),
    (
        "a tokenizer.model that does not match vocab_size",
        broken_ckpt(truncated_tokenizer),
        "PATH defines 1,256 token ids but params.json says vocab_size 128,256",
    ),
    (
        "an empty tokenizer.model",
        broken_ckpt(lambda c: (c / "tokenizer.model").write_text("")),
        "PATH holds no tokens (the file is empty)",
    ),
    (
        "logits --out onto a device or FIFO",
        fifo_out,
        "--out PATH is not a regular file (a device, FIFO or socket)",
    ),
    (
        "logits --out onto a directory",
        lambda t: ["logits", "--prompt", PROMPT, "--out", str(t)],
        "--out PATH is a directory",
    ),
    (
        "logits --out in a folder that does not exist",
        lambda t: ["logits", "--prompt", PROMPT, "--out", str(t / "no" / "x.pt")],
        "--out PATH: the folder PATH does not exist",
    ),
    (
        "logits --out where nothing can be written",
        lambda t: ["logits", "--prompt", PROMPT, "--out", "/proc/logits.pt"],
        "--out /proc/logits.pt cannot be written",
    ),
    (
        "export-hf --out a directory that is not empty",
        lambda t: ["export-hf", "--out", str(_with_file(t / "mine"))],
        "--out PATH is not empty: choose a new directory, or pass --force to replace it",
    ),
    (
        "export-hf --out onto a file",
        lambda t: ["export-hf", "--out", str(_with_file(t) / "notes.txt")],
        "--out PATH exists and is not a directory",
    ),
    (
        "export-hf --out the checkpoint being read",
        export_into_source(inside=False),
        "--out PATH is the directory being read (PATH): writing there could destroy it",
    ),
    (
        "export-hf --out inside the checkpoint being read",
        export_into_source(inside=True),
        "--out PATH is inside the directory being read (PATH)",
    ),
    (
        "export-hf --out a symbolic-link loop",
        lambda t: link(t, t / "out"),
        "--out PATH is a symbolic-link loop: give a directory to create or replace",
    ),
    (
        "export-hf --out a symbolic link to nothing",
        lambda t: link(t, t / "missing"),
        "--out PATH is a symbolic link to nothing: give a directory to create or replace",
    ),
]


@pytest.mark.parametrize("what, make, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_error_line(tmp_path, cli, what, make, message):
    work = tmp_path / "work"
    work.mkdir()
    args = make(work)
    before = sorted(p.name for p in work.iterdir())
    r = cli(*args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, f"{what}: exit {r.returncode}\n{r.stderr[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{what}: {r.stderr[-2000:]}"
    pattern = "error: " + re.escape(message).replace("PATH", r"\S+")
    assert re.match(pattern, lines[0]), f"{what}: {lines[0]!r} does not start as the README says: {message!r}"
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert sorted(p.name for p in work.iterdir()) == before, f"{what}: a file was written"


def readme_rows() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Bad input", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| (.+?) \| `error: (.+?)` \|$", section, re.M)
    return [(a.strip(), b.strip()) for a, b in rows]


def test_readme_lists_exactly_the_bad_inputs_tested():
    assert readme_rows() == [(what, message) for what, _, message in CASES]


def test_tiny_temperature_is_greedy_not_an_error(cli):
    """T = 1e-40 overflows logits / T to inf unless the logits are shifted first: the draw must
    then be the argmax, as T -> 0 is greedy decoding."""
    base = ["generate", "--prompt", PROMPT, "--max-new-tokens", "6"]
    greedy, cold = cli(*base), cli(*base, "--temperature", "1e-40", "--seed", "0")
    assert greedy.returncode == cold.returncode == 0, cold.stderr
    assert cold.stdout == greedy.stdout


def test_prompt_file_and_standard_input(tmp_path, cli):
    (tmp_path / "prompt.txt").write_text(PROMPT + "\n")  # an editor's final newline is dropped
    by_flag = cli("generate", "--prompt", PROMPT, "--max-new-tokens", "3")
    by_file = cli("generate", "--prompt-file", str(tmp_path / "prompt.txt"), "--max-new-tokens", "3")
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CHECKPOINT"}
    by_stdin = subprocess.run(
        [sys.executable, "-m", "helpers", "generate", "--prompt-file", "-", "--max-new-tokens", "3"],
        cwd=ROOT,
        env=env,
        input=PROMPT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert by_flag.returncode == 0, by_flag.stderr
    assert by_flag.stdout == by_file.stdout == by_stdin.stdout
    assert by_flag.stdout.startswith(PROMPT + " Paris")
