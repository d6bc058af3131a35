"""The book's one table of chapters, ``notebooks/book.json``: what everything that lists
chapters reads (the tests' order and structure rules, the smoke step on the real model, the
exercise checks, the README's and the syllabus's chapter lists are checked against it).

A row: ``number`` ("15"), ``stem`` (the notebook's file name without ``.ipynb``), ``title``,
``concepts`` (the ``helpers`` modules the chapter introduces: it shows their definitions, and
no earlier chapter may use them), ``also`` (library modules complete by this chapter that it
does not teach: measuring memory, fast kernels, the book's stages), ``saves`` (the stages it hands to later chapters, see
``helpers.book.stages``), ``checks`` (its module in ``helpers/check/``), ``smoke`` (whether
``make test`` also runs it on SmolLM2) and ``week`` (its week in the syllabus's course plan).

Adding a chapter: the notebook, one row here, its concept module(s), its checks module and its
solution file (``notebooks/solutions/<stem>.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .files import REPO_ROOT

BOOK_FILE = REPO_ROOT / "notebooks" / "book.json"
# Modules every chapter may use from the start: reading a checkpoint and its config, safe files,
# passing tensors between chapters, pictures.
BASE_MODULES = ("files", "config", "checkpoint", "artifacts", "plots", "chapters")


@dataclass(frozen=True)
class Chapter:
    number: str
    stem: str
    title: str
    concepts: tuple[str, ...]
    also: tuple[str, ...]
    saves: tuple[str, ...]
    checks: str
    smoke: bool
    week: int

    @property
    def path(self) -> Path:
        return REPO_ROOT / "notebooks" / f"{self.stem}.ipynb"


@cache
def chapters(book_file: Path = BOOK_FILE) -> tuple[Chapter, ...]:
    """Every chapter, in book order; refuses a table whose rows are incomplete or out of order."""
    rows = json.loads(Path(book_file).read_text(encoding="utf-8"))["chapters"]
    out = []
    for i, row in enumerate(rows):
        missing = {f for f in Chapter.__dataclass_fields__} - set(row)
        if missing:
            raise ValueError(f"{book_file.name}: chapter row {i + 1} lacks {sorted(missing)}")
        out.append(
            Chapter(
                **{
                    k: tuple(v) if isinstance(v, list) else v
                    for k, v in row.items()
                    if k in Chapter.__dataclass_fields__
                }
            )
        )
    numbers = [c.number for c in out]
    if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
        raise ValueError(f"{book_file.name}: chapter numbers must be unique and in order, found {numbers}")
    for c in out:
        if not c.stem.startswith(c.number + "_"):
            raise ValueError(f"{book_file.name}: chapter {c.number}'s stem {c.stem!r} must start with {c.number}_")
    return tuple(out)


def chapter_of_module() -> dict[str, int]:
    """Each library module and the chapter that introduces it (0: the base modules)."""
    out = {m: 0 for m in BASE_MODULES}
    for c in chapters():
        out.update({m: int(c.number) for m in c.concepts + c.also})
    return out
