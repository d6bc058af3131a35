"""Chapter 16's exercise checks: instruction tuning."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .common import _gen, call, exercise

IGNORE = -100
LABEL_CASES = {
    "one question": [
        {"role": "user", "content": "What is the capital of Peru?"},
        {"role": "assistant", "content": "The capital of Peru is Lima."},
    ],
    "a system message first": [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "Which continent is Kenya in?"},
        {"role": "assistant", "content": "Kenya is a country in Africa."},
    ],
    "two turns": [
        {"role": "user", "content": "What currency does Japan use?"},
        {"role": "assistant", "content": "The currency of Japan is the Yen."},
        {"role": "user", "content": "And Peru?"},
        {"role": "assistant", "content": "The Sol."},
    ],
}


@exercise
def sft_labels(fn: Callable) -> tuple[float | None, int]:
    """fn(tok, messages) -> (ids, labels): the conversation in Llama 3's chat format and one label
    per position -- the token itself for each assistant reply and the <|eot_id|> that ends it,
    -100 everywhere else."""
    from ..sft import render_with_labels
    from ..tokenizer import Tokenizer

    tok = Tokenizer.load(None)
    eot = tok.special_tokens["<|eot_id|>"]
    for case, messages in LABEL_CASES.items():
        got = call(case, fn, tok, [dict(m) for m in messages])
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise AssertionError(f"{case}: expected (ids, labels), got {type(got).__name__}")
        ids, labels = ([int(x) for x in part] for part in got)
        want_ids, want = render_with_labels(tok, messages)
        if ids != want_ids:
            first = next(
                (i for i, (a, b) in enumerate(zip(ids, want_ids, strict=False)) if a != b), min(len(ids), len(want_ids))
            )
            raise AssertionError(
                f"{case}: the ids differ from position {first} on ({len(ids)} ids, expected {len(want_ids)}): "
                f"got {tok.pieces(ids[first : first + 3])}, expected {tok.pieces(want_ids[first : first + 3])}"
            )
        if len(labels) != len(want):
            raise AssertionError(f"{case}: {len(labels)} labels for {len(ids)} ids: one label per position")
        if labels == want:
            continue
        if labels[:-1] == want[1:] or labels[1:] == want[:-1]:
            raise AssertionError(
                f"{case}: the labels are shifted by one position: label t is the token AT t (the loss does the shift)"
            )
        for t, (g, w) in enumerate(zip(labels, want, strict=True)):
            if g == w:
                continue
            piece = tok.pieces([ids[t]])[0]
            if w == IGNORE:
                raise AssertionError(
                    f"{case}: position {t} ({piece!r}) is part of the prompt, yet labelled {g}: "
                    "the prompt's tokens must be -100 (the loss is on the assistant's tokens only)"
                )
            if w == eot:
                raise AssertionError(
                    f"{case}: position {t} is the <|eot_id|> that ends a reply, labelled {g}: it must be trained "
                    "(its label is its id), or the model never learns to stop"
                )
            raise AssertionError(f"{case}: position {t} ({piece!r}) is labelled {g}, expected {w}")
    return None, len(LABEL_CASES)


@exercise
def sft_masked_loss(fn: Callable) -> tuple[float | None, int]:
    """fn(logits, labels) -> the mean next-token cross-entropy over the labelled positions:
    logits (B, N, V), labels (B, N) with -100 where not trained; row t predicts the label at t + 1."""
    gen, worst, cases = _gen(16), 0.0, 0
    for batch, n, vocab, n_prompt in [(1, 7, 11, 3), (2, 9, 13, 4), (3, 6, 50, 2)]:
        logits = torch.randn(batch, n, vocab, generator=gen, dtype=torch.float64) * 3
        labels = torch.randint(0, vocab, (batch, n), generator=gen)
        labels[:, :n_prompt] = IGNORE  # the prompt
        labels[-1, n - 2 :] = IGNORE  # the last sequence is padded
        want = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)
        case = f"batch {batch} x {n} positions, vocabulary {vocab}, the first {n_prompt} labels -100"
        got = call(case, fn, logits.clone(), labels.clone())
        if not isinstance(got, torch.Tensor | float | int) or (isinstance(got, torch.Tensor) and got.numel() != 1):
            raise AssertionError(f"{case}: expected one number, got {type(got).__name__}")
        got = float(got)
        diff = abs(got - float(want))
        if not math.isfinite(got) or diff > 1e-9 * max(1.0, abs(float(want))):
            hints = {
                "row t scored against the label at t, not t + 1: shift the logits and labels by one": F.cross_entropy(
                    logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE
                ),
                "the logits are shifted the wrong way: row t predicts the label at t + 1": F.cross_entropy(
                    logits[:, 1:].flatten(0, 1), labels[:, :-1].flatten(), ignore_index=IGNORE
                ),
                "divided by every position, not by the number of trained ones": F.cross_entropy(
                    logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE, reduction="sum"
                )
                / labels[:, 1:].numel(),
            }
            hint = next((f" ({h})" for h, v in hints.items() if abs(got - float(v)) < 1e-9), "")
            raise AssertionError(f"{case}: got {got:.6f}, expected {float(want):.6f}{hint}")
        worst, cases = max(worst, diff), cases + 1
    return worst, cases
