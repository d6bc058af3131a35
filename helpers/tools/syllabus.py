"""Reading times by the syllabus's formula, and the check that notebooks/SYLLABUS.md agrees.

A chapter's reading time is its size read at 120 words of prose and 8 lines of code a minute:
every word of its Markdown cells, every line of its code cells (the definitions a cell shows
from helpers/ included, blank lines too). Sections whose heading starts with ``## Optional``
are timed apart. The course plan adds 15 minutes per exercise a week assigns (those it
lists after "optional" are extra), and a week holds at most about 2.5 hours of both.

    python -m helpers.tools.syllabus            # each chapter's words, code lines and minutes
    python -m helpers.tools.syllabus --check    # exit 1 naming each time SYLLABUS.md misstates
    python -m helpers.tools.syllabus --write    # put the computed times into SYLLABUS.md's table
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..files import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
SYLLABUS = NOTEBOOKS_DIR / "SYLLABUS.md"
WORDS_PER_MINUTE = 120
CODE_LINES_PER_MINUTE = 8
MINUTES_PER_EXERCISE = 15
MAX_WEEK_MINUTES = 150  # reading and exercises of one week of the course plan: about 2.5 hours
OPTIONAL = "## Optional"


@dataclass(frozen=True)
class Size:
    """What a reader reads in one part of a chapter."""

    words: int = 0
    code_lines: int = 0

    @property
    def minutes(self) -> float:
        return self.words / WORDS_PER_MINUTE + self.code_lines / CODE_LINES_PER_MINUTE

    def __add__(self, other: Size) -> Size:
        return Size(self.words + other.words, self.code_lines + other.code_lines)


def chapter_size(path: Path) -> tuple[Size, Size]:
    """(the chapter without its optional sections, its optional sections) of one notebook."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    core, optional, in_optional = Size(), Size(), False
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":  # a cell may hold several sections: each line goes to its own
            for line in source.splitlines():
                if line.startswith("## "):
                    in_optional = line.startswith(OPTIONAL)
                words = Size(words=len(line.split()))
                optional, core = (optional + words, core) if in_optional else (optional, core + words)
        elif cell["cell_type"] == "code":
            lines = Size(code_lines=len(source.splitlines()))
            optional, core = (optional + lines, core) if in_optional else (optional, core + lines)
    return core, optional


def rounded(minutes: float) -> int:
    """To the nearest 5 minutes, as the syllabus states times."""
    return 5 * round(minutes / 5)


def stated_time(core: Size, optional: Size) -> str:
    """The syllabus's 'read' entry: '75 min', or '100 min (+ 30 optional)'."""
    text = f"{rounded(core.minutes)} min"
    return text + (f" (+ {rounded(optional.minutes)} optional)" if optional.words or optional.code_lines else "")


def chapters() -> dict[str, Path]:
    return {p.name[:2]: p for p in sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))}


def table_rows(text: str, first_header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header starts with ``| first_header |``, as cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def problems(text: str | None = None) -> list[str]:
    """What SYLLABUS.md states differently from the notebooks: each chapter's reading time, and
    any week of the course plan over MAX_WEEK_MINUTES of reading and exercises."""
    text = SYLLABUS.read_text(encoding="utf-8") if text is None else text
    sizes = {number: chapter_size(path) for number, path in chapters().items()}
    found = []
    stated = {row[0]: row[3] for row in table_rows(text, "#")}
    for number, (core, optional) in sizes.items():
        want = stated_time(core, optional)
        if stated.get(number) != want:
            found.append(f"chapter {number}: SYLLABUS.md says {stated.get(number)!r}, the formula gives {want!r}")
    for row in table_rows(text, "week"):
        week, numbers = row[0], re.findall(r"\b\d\d\b", row[1])
        assigned = row[3].split("optional", 1)[0]  # exercises named after "optional" are extra
        reading = sum(sizes[n][0].minutes for n in numbers if n in sizes)
        exercises = len(re.findall(r"`\w+`", assigned)) * MINUTES_PER_EXERCISE
        if reading + exercises > MAX_WEEK_MINUTES:
            found.append(
                f"week {week}: {reading:.0f} min of reading and {exercises} of exercises, more than "
                f"{MAX_WEEK_MINUTES} (~2.5 hours)"
            )
    return found


def with_times(text: str) -> str:
    """SYLLABUS.md with the 'read' column of its chapter table (the one headed ``| # |``) set to the
    computed times."""
    sizes = {number: chapter_size(path) for number, path in chapters().items()}
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("| # |"))
    for i in range(start + 2, len(lines)):
        cells = lines[i].split("|")
        if not lines[i].startswith("|"):
            break
        if cells[1].strip() in sizes:
            cells[4] = f" {stated_time(*sizes[cells[1].strip()])} "
            lines[i] = "|".join(cells)
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with notebooks/SYLLABUS.md")
    parser.add_argument("--write", action="store_true", help="write the computed times into notebooks/SYLLABUS.md")
    args = parser.parse_args(argv)
    if args.write:
        SYLLABUS.write_text(with_times(SYLLABUS.read_text(encoding="utf-8")), encoding="utf-8")
    if args.check:
        found = problems()
        for line in found:
            print(line, file=sys.stderr)
        print("SYLLABUS.md agrees with the notebooks" if not found else f"{len(found)} disagreement(s)")
        return 1 if found else 0
    formula = f"{WORDS_PER_MINUTE} words and {CODE_LINES_PER_MINUTE} code lines a minute"
    print(f"{'chapter':<28} {'words':>6} {'code lines':>10} {'minutes':>8}   ({formula})")
    for path in chapters().values():
        core, optional = chapter_size(path)
        total = core + optional
        extra = f"   of which optional: {optional.minutes:.1f}" if optional.words else ""
        print(f"{path.stem:<28} {total.words:>6,} {total.code_lines:>10,} {total.minutes:>8.1f}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
