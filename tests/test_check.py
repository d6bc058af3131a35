"""The exercise self-checks: the solutions pass, a plausible wrong answer fails naming its case,
a stub that still raises NotImplementedError is reported as not written yet, and a check never
raises in a notebook: every check of a cell runs and prints one line."""

from __future__ import annotations

import re

import pytest
import torch
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
def test_check_rejects_each_wrong_answer_naming_the_case(name, i, capsys):
    checker, _ = solutions()[name]
    wrong, case = WRONG[name][i]
    with pytest.raises(AssertionError, match=re.escape(case)):
        checker.__wrapped__(wrong)
    assert checker(wrong) is None  # in a notebook: one line, no traceback
    out = capsys.readouterr().out
    assert out.startswith(f"✗ {name}: ") and case in out and out.count("\n") == 1, out


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


def test_every_check_of_a_cell_runs_and_reports(capsys):
    """A wrong answer no longer stops the cell: the checks after it still run."""
    _, right = solutions()["q4_1_blocks"]
    wrong, _ = WRONG["q8_0_blocks"][0]
    check.q8_0_blocks(wrong)
    check.q4_1_blocks(right)
    lines = capsys.readouterr().out.splitlines()
    assert [line[:2] for line in lines] == ["✗ ", "✓ "], lines


def test_an_exception_in_the_readers_code_is_one_line_naming_the_case(capsys):
    def broken(x, weight, eps):
        return x.norm(dim=-1, keepdim=True, p="two")

    assert check.rms_norm(broken) is None
    out = capsys.readouterr().out
    assert out.startswith("✗ rms_norm: x of shape (4, 8), eps 1e-05: your function raised ") and "Error" in out, out
    assert out.count("\n") == 1 and "Traceback" not in out
    with pytest.raises(AssertionError, match=r"x of shape \(4, 8\), eps 1e-05: your function raised"):
        check.rms_norm.__wrapped__(broken)


def test_a_return_value_the_check_cannot_use_names_the_case(capsys):
    check.nf4_block(lambda block: block)  # one tensor where (codes, absmax) was asked for
    out = capsys.readouterr().out
    assert out.startswith("✗ nf4_block: a normal block: ValueError") and out.count("\n") == 1, out


def test_non_finite_values_are_reported_as_such(capsys):
    check.rms_norm(lambda x, w, eps: (x - x) / (x - x))  # 0 / 0 everywhere
    out = capsys.readouterr().out
    assert "got nan, expected" in out and "3.4e+38" not in out, out
    check.rms_norm(lambda x, w, eps: x.abs() / 0.0)
    assert "got inf, expected" in capsys.readouterr().out
    from helpers.check.common import compare

    compare("equal infinities", torch.tensor([float("inf"), 1.0]), torch.tensor([float("inf"), 1.0]))
    with pytest.raises(AssertionError, match="got -inf, expected inf"):
        compare("opposite infinities", torch.tensor([-float("inf")]), torch.tensor([float("inf")]))


def test_chatml_failures_show_text_and_the_first_difference(capsys):
    wrong, _ = WRONG["chatml"][0]  # control tokens written as text: the same text, other ids
    check.chatml(wrong)
    out = capsys.readouterr().out
    assert "first difference at index 0" in out and "'<|im_start|>'" in out and "the same text" in out, out
    assert "[1, " not in out  # no raw id lists
