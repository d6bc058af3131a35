"""The exercise self-checks: the solutions pass, a plausible wrong answer fails naming its case,
and a stub that still raises NotImplementedError is reported as not written yet."""

from __future__ import annotations

import re

import pytest
from wrong_answers import ALTERNATIVES, WRONG, solutions

from helpers import check
from helpers.attention import scaled_dot_product
from helpers.rope import scale_frequencies


def test_every_check_has_a_solution_and_wrong_answers():
    names = {name for name, f in vars(check).items() if callable(f) and getattr(f, "__wrapped__", None)}
    assert names == set(solutions()) == set(WRONG)
    assert all(len(wrongs) >= 2 for wrongs in WRONG.values()), [n for n, w in WRONG.items() if len(w) < 2]


@pytest.mark.parametrize("name", sorted(WRONG))
def test_check_accepts_the_solution(name, capsys):
    checker, solution = solutions()[name]
    checker.__wrapped__(solution)  # no AssertionError, no NotImplementedError
    checker(solution)
    assert capsys.readouterr().out.startswith(f"✓ {name}: right on all")


@pytest.mark.parametrize(
    ("name", "i"), [(name, i) for name, wrongs in sorted(WRONG.items()) for i in range(len(wrongs))]
)
def test_check_rejects_each_wrong_answer_naming_the_case(name, i):
    checker, _ = solutions()[name]
    wrong, case = WRONG[name][i]
    with pytest.raises(AssertionError, match=re.escape(case)):
        checker(wrong)


@pytest.mark.parametrize(
    ("name", "i"), [(name, i) for name, alts in sorted(ALTERNATIVES.items()) for i in range(len(alts))]
)
def test_check_accepts_another_correct_answer(name, i):
    checker, _ = solutions()[name]
    checker.__wrapped__(ALTERNATIVES[name][i])


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_stub_is_reported_as_not_written(name, capsys):
    checker, _ = solutions()[name]

    def stub(*args, **kwargs):
        raise NotImplementedError

    assert checker(stub) is None  # a note, not an exception: the notebook's cell runs on
    assert capsys.readouterr().out.startswith(f"… {name}: not written yet")
    with pytest.raises(NotImplementedError):
        checker.__wrapped__(stub)


def test_the_printed_difference_is_measured_not_a_constant(capsys):
    check.causal_attention(lambda q, k, v: scaled_dot_product(q, k, v) + 3e-6)
    out = capsys.readouterr().out
    assert re.search(r"max \|difference\| 3\.[01]e-06", out), out


def test_rope_scaling_check_accepts_the_book_function():
    check.rope_scaling.__wrapped__(scale_frequencies)
