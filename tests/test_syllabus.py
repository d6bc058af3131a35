"""notebooks/SYLLABUS.md states what the notebooks are: each chapter's reading time by its own formula
(helpers/tools/syllabus.py), each chapter's exercises, and a course plan whose weeks fit about
2.5 hours of reading and exercises."""

import json
import re

from test_notebooks import NOTEBOOKS, chapter_checks

from helpers.tools import syllabus


def test_the_syllabus_states_the_reading_times_the_formula_gives():
    assert syllabus.problems() == [], "run `python -m helpers.tools.syllabus --write` and re-plan the weeks"


def notebook(tmp_path, cells):
    path = tmp_path / "99_x.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": t, "source": s, "metadata": {}} for t, s in cells]}))
    return path


def test_the_formula_counts_words_and_every_code_line_and_times_optional_sections_apart(tmp_path):
    words = " ".join(["word"] * 120)
    path = notebook(
        tmp_path,
        [
            ("markdown", f"## A\n{words}"),
            ("code", "x = 1\n\ny = 2\n" + "z\n" * 13),  # 16 lines, the blank one too: 2 minutes
            ("markdown", f"{words}\n## Optional: more\n{words} {words}"),  # one cell, two sections
            ("code", "w = 3\n" * 8),
            ("markdown", f"## Recap\n{words}"),
        ],
    )
    core, optional = syllabus.chapter_size(path)
    assert core.minutes == (2 + 3 * 120 + 2) / 120 + 16 / 8  # "## A", three times 120 words, "## Recap"
    assert optional.minutes == (3 + 240) / 120 + 1
    assert syllabus.stated_time(core, optional) == "5 min (+ 5 optional)"
    assert syllabus.rounded(72.4) == 70 and syllabus.rounded(72.6) == 75


def test_an_overfull_week_is_reported():
    text = syllabus.SYLLABUS.read_text()
    crammed = re.sub(r"\| 13 \| 14 \|", "| 13 | 10, 11, 14 |", text)
    found = syllabus.problems(crammed)
    assert any(line.startswith("week 13:") and "more than 150" in line for line in found), found


def test_the_chapter_table_lists_each_chapters_exercises_and_the_plan_covers_every_chapter():
    text = syllabus.SYLLABUS.read_text()
    rows = {row[0]: row for row in syllabus.table_rows(text, "#")}
    planned = []
    for row in syllabus.table_rows(text, "week"):
        planned += re.findall(r"\b\d\d\b", row[1])
    for path in NOTEBOOKS:
        number = path.stem[:2]
        assert re.findall(r"`(\w+)`", rows[number][4]) == chapter_checks(path.stem), number
        assert planned.count(number) == 1, f"chapter {number} is planned {planned.count(number)} times"
    assert "Chapter 10's last two sections" in text and "make smollm2" in text.split("| 13 | 14 |")[1]
