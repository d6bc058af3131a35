"""Test sets (chapter 15): multiple-choice questions about the world's countries from the book's
own data, and the reader's own questions from a JSONL file.

An item is ``{"question", "choices", "answer"}`` -- the question text, at least two choices,
the index of the right one -- the shape of lm-evaluation-harness's ``multiple_choice`` tasks.
The country tasks add ``"country"`` and ``"split"``: whether chapter 11 trained on the
country (``"training"``) or kept it apart (``"held-out"``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .corpus import Country, load_countries
from .files import display_path, read_text_file

# Each task: the start of the corpus sentence that states the fact, and the field that ends it.
COUNTRY_TASKS = {
    "capitals": ("The capital of {c.name} is", "capital"),  # "The capital of France is Paris."
    "continents": ("{c.name} is a country in", "continent"),  # "France is a country in Europe."
    "currencies": ("The currency of {c.name} is the", "currency"),  # "The currency of France is the Euro."
}
N_CHOICES = 4
# A task file of a million four-choice questions weighs about 100 MB; a larger one is refused unread.
MAX_TASK_BYTES = 128 << 20


def held_out_countries(countries: list[Country]) -> list[Country]:
    """Chapter 11's split: a tenth of the countries, drawn with seed 0, kept out of training
    (sorted by name). ``countries`` is ``load_countries()``; the rest are the training countries.

    The embedded model was trained on every country: for it, "held-out" only names the same
    countries chapter 11 held out; a model trained as chapter 11 trains its small one has
    never read a sentence about them."""
    return sorted(random.Random(0).sample(countries, len(countries) // 10), key=lambda c: c.name)


def country_items(
    task: str,
    countries: list[Country] | None = None,
    seed: int = 0,
    n_choices: int = N_CHOICES,
    prompt: str | None = None,
) -> list[dict]:
    """The items of one of ``COUNTRY_TASKS`` ("capitals", "continents", "currencies"), one per
    country that has the fact, in the order of ``countries`` (default: all, by name).

    The question is the fact's sentence up to the answer ("The capital of France is"), or
    ``prompt`` formatted with the country as ``c`` (another template, e.g. "Q: What is the
    capital of {c.name}?\nA:"; the choices do not change with it). The wrong choices are other
    values of the same field (other capitals), drawn with a generator seeded with ``seed``, and
    the right one is put among them at a random place: the same test set on every run. Each
    item also holds ``"country"`` and ``"split"`` (chapter 11's).
    """
    if task not in COUNTRY_TASKS:
        raise ValueError(f"unknown task {task!r}: one of {', '.join(COUNTRY_TASKS)}")
    default, field = COUNTRY_TASKS[task]
    prompt = default if prompt is None else prompt
    countries = load_countries() if countries is None else countries
    held_out = {c.name for c in held_out_countries(load_countries())}
    values = sorted({getattr(c, field) for c in countries if getattr(c, field)})
    if len(values) < n_choices:
        raise ValueError(f"{task}: only {len(values)} different answers, fewer than {n_choices} choices")
    rng = random.Random(seed)
    items = []
    for c in countries:
        answer = getattr(c, field)
        if not answer:  # a few countries have no currency in GeoNames
            continue
        choices = rng.sample([v for v in values if v != answer], n_choices - 1) + [answer]
        rng.shuffle(choices)
        items.append(
            {
                "question": prompt.format(c=c),
                "choices": choices,
                "answer": choices.index(answer),
                "country": c.name,
                "split": "held-out" if c.name in held_out else "training",
            }
        )
    return items


def check_item(item, where: str) -> dict:
    """An item read from a file, checked: a JSON object with a non-empty "question" (text), a
    list of at least two non-empty texts "choices", and an integer "answer" indexing them.
    Returns ``{"question", "choices", "answer"}``; raises ValueError naming ``where``."""
    if not isinstance(item, dict):
        raise ValueError(f'{where}: expected a JSON object {{"question", "choices", "answer"}}')
    missing = [key for key in ("question", "choices", "answer") if key not in item]
    if missing:
        raise ValueError(f"{where}: no {', '.join(repr(k) for k in missing)}")
    question, choices, answer = item["question"], item["choices"], item["answer"]
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: the question must be a non-empty text")
    if not isinstance(choices, list) or len(choices) < 2:
        raise ValueError(f"{where}: 'choices' must be a list of at least 2 texts")
    for i, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice:
            raise ValueError(f"{where}: choice {i} must be a non-empty text (got {json.dumps(choice)[:40]})")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise ValueError(
            f"{where}: 'answer' must be the index of the right choice, an integer in 0..{len(choices) - 1} "
            f"(got {json.dumps(answer)[:40]})"
        )
    return {"question": question, "choices": list(choices), "answer": answer}


def read_items(path: str | Path) -> list[dict]:
    """The items of a JSONL file: one JSON object per line (blank lines skipped), each checked
    by ``check_item``. The file is read up to ``MAX_TASK_BYTES`` (a larger or endless one is
    refused) and must be UTF-8; an error names the line."""
    where = display_path(path)
    text = read_text_file(path, MAX_TASK_BYTES, f"task file {where}", "a million questions weigh about 100 MB")
    items = []
    for lineno, line in enumerate(text.split("\n"), 1):  # JSON text may hold U+2028, which splitlines() splits at
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (ValueError, RecursionError) as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else type(err).__name__
            raise ValueError(f"task file {where} line {lineno} is not JSON ({reason})") from None
        items.append(check_item(item, f"task file {where} line {lineno}"))
    if not items:
        raise ValueError(f"task file {where} holds no items: one JSON object per line")
    return items
