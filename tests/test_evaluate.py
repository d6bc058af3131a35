"""`python -m helpers evaluate` (chapter 15): its output file, its determinism, and one `error:` line
for each bad input, run in-process through the command line's ``main``.

BAD_INPUTS is the table the README's "Bad input to evaluate" section shows; a test keeps the two equal.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from helpers import scoring
from helpers.checkpoint import TINY_DIR, load_checkpoint
from helpers.tokenizer import Tokenizer
from helpers.tools.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = str(TINY_DIR)
ITEMS = [
    {"question": "The capital of France is", "choices": ["Paris", "Lyon", "Kabul", "Lima"], "answer": 0},
    {"question": "Kenya is a country in", "choices": ["North America", "Africa", "Asia"], "answer": 1},
    {"question": "The currency of Japan is the", "choices": ["Euro", "Yen"], "answer": 1},
    {"question": "Peru is a country in", "choices": ["South America", "Europe", "Oceania", "Asia"], "answer": 0},
    {"question": "The capital of Atlantis is", "choices": ["Paris", "Ouagadougou"], "answer": 1},
]
TEXT = "The capital of France is Paris. Kenya is a country in Africa.\n"


def write_jsonl(path: Path, items: list) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(["evaluate", "--checkpoint", TINY, *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny():
    cfg, sd = load_checkpoint(TINY_DIR, dtype=torch.float32)
    return sd, cfg, Tokenizer.load(TINY_DIR)


def test_the_output_file_holds_the_metrics_of_its_items(tmp_path, capsys, tiny):
    task, out = write_jsonl(tmp_path / "mine.jsonl", ITEMS), tmp_path / "result.json"
    code, stdout, _ = run(["--task", str(task), "--out", str(out)], capsys)
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report) == {"task", "checkpoint", "shots", "n", "metrics", "items"}
    assert report["task"] == str(task) and report["checkpoint"] == "models/tiny-llama-3.2/original"
    assert report["n"] == len(ITEMS) == len(report["items"]) and report["shots"] == 0
    assert set(report["metrics"]) == {"acc", "acc_norm", "acc_per_token"}
    for item, scored in zip(ITEMS, report["items"], strict=True):
        assert set(scored) == {"loglikelihoods", "n_tokens", "greedy", "gold"}
        assert scored["gold"] == item["answer"] and len(scored["loglikelihoods"]) == len(item["choices"])
    # acc is the mean of argmax == gold; acc_norm divides by the choice's characters (lm-eval's)
    lls = [s["loglikelihoods"] for s in report["items"]]
    acc = [int(scoring.index_of_max(ll) == i["answer"]) for ll, i in zip(lls, ITEMS, strict=True)]
    norm = [
        int(scoring.index_of_max([x / len(c) for x, c in zip(ll, i["choices"], strict=True)]) == i["answer"])
        for ll, i in zip(lls, ITEMS, strict=True)
    ]
    for name, outcomes in [("acc", acc), ("acc_norm", norm)]:
        metric = report["metrics"][name]
        assert metric["value"] == sum(outcomes) / len(outcomes)
        assert math.isclose(metric["stderr"], scoring.mean_stderr(outcomes)[1], rel_tol=1e-12)
        assert metric["interval"] == list(scoring.bootstrap_interval(outcomes))
        assert metric["wilson"] == list(scoring.wilson_interval(outcomes))
        assert f"{name:<14} {metric['value']:.4f} ± {metric['stderr']:.4f}" in stdout
    assert acc != norm  # "North America" and "South America": the two scores differ on these items
    # the log-likelihoods are the library's: the same batches, so the same numbers to the last bit
    library = scoring.score_choices(*tiny, ITEMS)
    assert [s["loglikelihoods"] for s in report["items"]] == [r["loglikelihoods"] for r in library]
    assert "95% bootstrap interval" in stdout and stdout.endswith(f"wrote {out}\n")
    assert {p.name for p in tmp_path.iterdir()} == {"mine.jsonl", "result.json"}  # no temporary file left


def test_the_same_command_writes_the_same_bytes(tmp_path, capsys):
    args = ["--task", "capitals", "--limit", "6", "--shots", "2"]
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert run([*args, "--out", str(first)], capsys)[0] == 0
    assert run([*args, "--out", str(second)], capsys)[0] == 0
    assert first.read_bytes() == second.read_bytes()
    report = json.loads(first.read_text())
    assert report["n"] == 6 and report["shots"] == 2 and report["task"] == "capitals"
    assert set(report["splits"]) == {"training", "held-out"} or set(report["splits"]) == {"training"}
    assert sum(s["n"] for s in report["splits"].values()) == 6
    assert all({"country", "split"} <= set(item) for item in report["items"])
    assert report["items"][0]["country"] == "Afghanistan"


def test_out_is_replaced_only_with_force(tmp_path, capsys):
    task, out = write_jsonl(tmp_path / "mine.jsonl", ITEMS[:2]), tmp_path / "result.json"
    out.write_text("keep me")
    code, _, err = run(["--task", str(task), "--out", str(out)], capsys)
    assert code == 2 and err.startswith(f"error: --out {out} exists") and out.read_text() == "keep me"
    assert run(["--task", str(task), "--out", str(out), "--force"], capsys)[0] == 0
    assert json.loads(out.read_text())["n"] == 2
    assert {p.name for p in tmp_path.iterdir()} == {"mine.jsonl", "result.json"}


def test_bits_per_byte_of_a_text_file(tmp_path, capsys, tiny):
    text, out = tmp_path / "essay.txt", tmp_path / "bpb.json"
    text.write_text(TEXT)
    code, stdout, _ = run(["--task", "bits-per-byte", "--text", str(text), "--out", str(out)], capsys)
    assert code == 0
    report = json.loads(out.read_text())
    assert "items" not in report and report["task"] == "bits-per-byte"
    want = scoring.bits_per_byte(*tiny, TEXT)
    assert report["n"] == want["n_tokens"] and report["n_bytes"] == len(TEXT.encode())
    assert report["metrics"]["bits_per_byte"]["value"] == want["bits_per_byte"]  # the same computation
    assert report["metrics"]["bits_per_byte"]["stderr"] is None
    assert f"bits_per_byte  {want['bits_per_byte']:.4f}" in stdout


def test_bits_per_byte_of_the_corpus_reads_one_document_per_country(tmp_path, capsys, monkeypatch, tiny):
    from helpers import corpus

    two = corpus.load_countries()[:2]
    monkeypatch.setattr(corpus, "load_countries", lambda: two)
    out = tmp_path / "bpb.json"
    assert run(["--task", "bits-per-byte", "--out", str(out)], capsys)[0] == 0
    report = json.loads(out.read_text())
    want = scoring.bits_per_byte(*tiny, [" ".join(corpus.sentences(c)) for c in two])
    assert report["n_documents"] == 2 and report["metrics"]["bits_per_byte"]["value"] == want["bits_per_byte"]


def bad_line(t: Path, line: str) -> list[str]:
    path = t / "task.jsonl"
    path.write_text(json.dumps(ITEMS[0]) + "\n" + line + "\n")
    return ["--task", str(path)]


def a_file(t: Path, name: str, data: bytes) -> str:
    (t / name).write_bytes(data)
    return str(t / name)


BAD_INPUTS = [
    ("a task file that does not exist", lambda t: ["--task", str(t / "no.jsonl")], "task file PATH does not exist"),
    ("a task line that is not JSON", lambda t: bad_line(t, '{"question": '), "task file PATH line 2 is not JSON"),
    (
        "an item with fewer than 2 choices",
        lambda t: bad_line(t, '{"question": "Q", "choices": ["a"], "answer": 0}'),
        "task file PATH line 2: 'choices' must be a list of at least 2 texts",
    ),
    (
        "an item with no choices",
        lambda t: bad_line(t, '{"question": "Q", "choices": [], "answer": 0}'),
        "task file PATH line 2: 'choices' must be a list of at least 2 texts",
    ),
    (
        "an answer out of range",
        lambda t: bad_line(t, '{"question": "Q", "choices": ["a", "b"], "answer": 2}'),
        "task file PATH line 2: 'answer' must be the index of the right choice, an integer in 0..1 (got 2)",
    ),
    (
        "a choice that is not text",
        lambda t: bad_line(t, '{"question": "Q", "choices": ["a", 3], "answer": 0}'),
        "task file PATH line 2: choice 1 must be a non-empty text (got 3)",
    ),
    (
        "an empty question",
        lambda t: bad_line(t, '{"question": "", "choices": ["a", "b"], "answer": 0}'),
        "task file PATH line 2: the question must be a non-empty text",
    ),
    ("an empty task file", lambda t: ["--task", a_file(t, "empty.jsonl", b"\n")], "task file PATH holds no items"),
    (
        "a task file that is not UTF-8",
        lambda t: ["--task", a_file(t, "latin1.jsonl", b'{"question": "Caf\xe9"}\n')],
        "task file PATH is not UTF-8 text",
    ),
    ("an endless task file", lambda t: ["--task", "/dev/zero"], "task file /dev/zero is larger than 134,217,728 bytes"),
    (
        "an unknown task",
        lambda t: ["--task", "capital"],
        "unknown task 'capital': one of capitals, continents, currencies, bits-per-byte, or a .jsonl file",
    ),
    ("--shots below 0", lambda t: ["--task", "capitals", "--shots", "-1"], "--shots must be >= 0 (got -1)"),
    (
        "--shots more than the other examples",
        lambda t: ["--task", "capitals", "--shots", "500"],
        "--shots 500: the task has 221 other examples to draw from",
    ),
    ("--limit below 1", lambda t: ["--task", "capitals", "--limit", "0"], "--limit must be >= 1 (got 0)"),
    (
        "--text that does not exist",
        lambda t: ["--task", "bits-per-byte", "--text", str(t / "no.txt")],
        "--text PATH does not exist",
    ),
    (
        "--text that is not UTF-8",
        lambda t: ["--task", "bits-per-byte", "--text", a_file(t, "latin1.txt", b"Caf\xe9\n")],
        "--text PATH is not UTF-8 text",
    ),
    (
        "--text that is empty",
        lambda t: ["--task", "bits-per-byte", "--text", a_file(t, "blank.txt", b" \n")],
        "--text PATH is empty: there is nothing to score",
    ),
    (
        "--text with a multiple-choice task",
        lambda t: ["--task", "capitals", "--text", a_file(t, "essay.txt", b"Hello.\n")],
        "--text is the text that --task bits-per-byte scores",
    ),
    (
        "--shots or --limit with bits-per-byte",
        lambda t: ["--task", "bits-per-byte", "--limit", "3"],
        "--shots and --limit apply to multiple-choice tasks, not to bits-per-byte",
    ),
    (
        "--out that exists, without --force",
        lambda t: ["--task", "capitals", "--out", a_file(t, "old.json", b"{}")],
        "--out PATH exists: choose another name, or pass --force to replace it",
    ),
    (
        "--out in a folder that does not exist",
        lambda t: ["--task", "capitals", "--out", str(t / "no" / "out.json")],
        "--out PATH: the folder PATH does not exist",
    ),
]


@pytest.mark.parametrize("what, make, message", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_to_evaluate_gets_one_error_line(tmp_path, capsys, what, make, message):
    argv = make(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, out, err = run(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, f"{what}: exit {code}\n{err[-2000:]}"
    assert len(lines) == 1 and out == "", f"{what}: {err[-2000:]}"
    pattern = "error: " + re.escape(message).replace("PATH", r"\S+")
    assert re.match(pattern, lines[0]), f"{what}: {lines[0]!r} does not start as the README says: {message!r}"
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before, f"{what}: a file changed"


def test_readme_lists_exactly_the_bad_inputs_to_evaluate_tested():
    text = (ROOT / "README.md").read_text()
    section = text.split("### Bad input to `evaluate`", 1)[1].split("\n#", 1)[0]
    rows = [(a.strip(), b.strip()) for a, b in re.findall(r"^\| (.+?) \| `error: (.+?)` \|$", section, re.M)]
    assert rows == [(what, message) for what, _, message in BAD_INPUTS]


def test_a_file_created_while_the_output_is_written_is_left_alone(tmp_path):
    """--out without --force: the final step is a hard link, which the kernel refuses onto any
    existing name, so a file that appears while the results are written is never replaced."""
    from helpers.files import TargetExists, atomic_write

    out = tmp_path / "result.json"

    def write(f):
        out.write_text("someone else's")
        f.write(b"{}")

    with pytest.raises(TargetExists, match="exists: choose another name, or pass --force"):
        atomic_write(out, write, "--out", replace=False)
    assert out.read_text() == "someone else's" and [p.name for p in tmp_path.iterdir()] == ["result.json"]
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere")
    with pytest.raises(TargetExists):
        atomic_write(tmp_path / "dangling.json", lambda f: f.write(b"{}"), "--out", replace=False)
    assert not (tmp_path / "nowhere").exists()
    atomic_write(tmp_path / "new.json", lambda f: f.write(b"{}"), "--out", replace=False)
    assert (tmp_path / "new.json").read_bytes() == b"{}"


def test_text_the_tokenizer_cannot_encode_is_refused_before_the_weights_are_read(tmp_path, capsys, monkeypatch):
    """SmolLM2's vocabulary lacks 21 single bytes (chapter 14): an item or a text holding one is
    one error line, naming the character, before the weights are read."""
    from helpers.book import smollm2
    from helpers.tools import cli

    if not (smollm2.OUT / "params.json").is_file():
        pytest.skip("SmolLM2 is converted by make smollm2 (make test runs it first)")

    def never(*args, **kwargs):
        raise AssertionError("the weights were read")

    monkeypatch.setattr(cli, "load_checkpoint", never)
    task = write_jsonl(tmp_path / "mine.jsonl", [ITEMS[0], {"question": "Q\x04", "choices": ["a", "b"], "answer": 0}])
    text = tmp_path / "essay.txt"
    text.write_text("Hello\x04 world\n")
    for argv in (["--task", str(task)], ["--task", "bits-per-byte", "--text", str(text)]):
        code = main(["evaluate", "--checkpoint", str(smollm2.OUT), *argv])
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and err.startswith("error: character '\\x04' (U+0004) at position")
        assert len(err.strip().splitlines()) == 1
