"""`make student`: a copy of the book without the exercise solutions that still runs on its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.tools.student import main

ROOT = Path(__file__).resolve().parent.parent


def _run(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CHECKPOINT"}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    env["LLAMA_CHECKPOINT"] = str(cwd / "models" / "tiny-llama-3.2" / "original")
    env["BOOK_ARTIFACTS"] = str(cwd / "artifacts")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_student_copy_has_no_solutions_and_runs_on_its_own(tmp_path, capsys):
    out = tmp_path / "student"
    assert main(["--out", str(out)]) == 0
    assert "no solutions" in capsys.readouterr().out
    assert not (out / "notebooks" / "solutions").exists()
    assert not (out / "tests" / "test_check.py").exists() and not (out / "tests" / "wrong_answers.py").exists()
    assert sorted(p.name for p in (out / "notebooks").glob("*.ipynb")) == sorted(
        p.name for p in (ROOT / "notebooks").glob("*.ipynb")
    )
    assert (out / "README.md").read_text(encoding="utf-8").startswith("> **Student copy.**")
    texts = [p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file() and ".git" not in p.parts]
    assert not any(re.search(r"(?m)^EXERCISES = \[", t) for t in texts), "a solutions file was copied"
    staged = subprocess.run(["git", "ls-files"], cwd=out, capture_output=True, text=True).stdout.split()
    assert "Makefile" in staged and "notebooks/01_tokenizer.ipynb" in staged

    # make test's suite: every test and notebook is collected without the solutions ...
    r = _run(out, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", "tests", "--nbval", "notebooks")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # ... the exercise stubs are checked against the chapters' checks, and chapters 01-03 against their outputs
    r = _run(out, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests/test_notebooks.py", "-k", "exercises_ship")
    assert r.returncode == 0 and " passed" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    nbval = ["--nbval", "--nbval-current-env", "--nbval-sanitize-with", "tests/nbval_sanitize.cfg"]
    r = _run(
        out,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        *nbval,
        *(f"notebooks/{n}.ipynb" for n in ("01_tokenizer", "02_embedding", "03_rmsnorm")),
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # make run's executor, on one chapter
    r = _run(out, "-m", "helpers.tools.book", "smoke", "--checkpoint", "models/tiny-llama-3.2/original", "04")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # make solutions says plainly that there are none
    r = _run(out, "-m", "helpers.tools.solutions")
    assert r.returncode == 2 and "left out of a student copy" in r.stderr


def test_the_student_copy_refuses_to_overwrite(tmp_path):
    out = tmp_path / "student"
    out.mkdir()
    (out / "my notes.md").write_text("mine")
    assert main(["--out", str(out)]) == 2
    assert [p.name for p in out.iterdir()] == ["my notes.md"]
    assert main(["--out", str(ROOT / "notebooks" / "copy")]) == 2
    assert not (ROOT / "notebooks" / "copy").exists()
