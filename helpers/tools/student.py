"""``make student``: a copy of the book for students, without the exercise solutions.

The copy (``build/student/`` by default) holds every tracked file except the solutions
(``notebooks/solutions/``) and the tests that would give them away (``tests/test_check.py``
and its list of wrong answers). It is a directory of its own: ``make run`` and ``make test``
work in it as in the book, and it starts as a git repository with every file staged, ready
for a teacher to commit and hand out. An existing non-empty directory is refused unless
``--force``; the copy appears whole or not at all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

from ..files import REPO_ROOT, display_path, new_directory
from .command import run_command

LEFT_OUT = ("notebooks/solutions/", "tests/test_check.py", "tests/wrong_answers.py", ".ci/")
BANNER = (
    "> **Student copy.** The exercise solutions (`notebooks/solutions/`) and the tests that hold\n"
    "> them are left out; each exercise's check still tells you whether your answer is right.\n\n"
)


def tracked_files(root: Path = REPO_ROOT) -> list[str]:
    """The files git tracks in ``root``: the book as committed, without anything generated."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise ValueError(f"make student copies the files git tracks, and git could not list them: {err}") from None
    return [name for name in out.split("\0") if name]


def student_files(names: list[str]) -> list[str]:
    return [n for n in names if not n.startswith(LEFT_OUT) and n not in LEFT_OUT]


def build(out: Path, force: bool = False) -> Path:
    """Write the copy into ``out``: a new or empty directory (``force``: any directory) outside the
    book or inside its build/ folder. A directory that is, holds or lies elsewhere inside the book
    is refused even with ``force``: replacing it would delete the book."""
    names = student_files(tracked_files())
    inside_build = Path(os.path.realpath(REPO_ROOT / "build")) in Path(os.path.realpath(out)).parents
    book = None if inside_build else REPO_ROOT
    force_flag = "--force (make student FORCE=1)"
    with new_directory(
        out,
        force,
        "--out",
        book,
        source_name="the book (use build/student or a directory outside the book)",
        force_flag=force_flag,
    ) as tmp:
        for name in names:
            src, dst = REPO_ROOT / name, tmp / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():  # notebooks/helpers -> ../helpers: the link, not a copy of its target
                dst.symlink_to(src.readlink())
            else:
                shutil.copy2(src, dst)
        readme = tmp / "README.md"
        readme.write_text(BANNER + readme.read_text(encoding="utf-8"), encoding="utf-8")
        if shutil.which("git"):
            subprocess.run(["git", "init", "-q"], cwd=tmp, check=True, timeout=60)
            subprocess.run(["git", "add", "-A"], cwd=tmp, check=True, timeout=120)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.tools.student", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO_ROOT / "build" / "student"), help="where to write the copy")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")
    args = parser.parse_args(argv)
    out = Path(args.out)

    def run() -> int:
        build(out, args.force)
        n = len(student_files(tracked_files()))
        print(f"student copy: {display_path(out)} ({n} files; no solutions). In it: make run, make test")
        return 0

    return run_command(run)


if __name__ == "__main__":
    raise SystemExit(main())
