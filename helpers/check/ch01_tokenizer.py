"""Chapter 01's exercise checks: the tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

from .common import call, equal, exercise


@exercise
def bpe(fn: Callable) -> tuple[float | None, int]:
    """fn(chunk: bytes, ranks) -> token ids of one pre-tokenized chunk, by lowest-rank-first merging."""
    from ..tokenizer import Tokenizer, load_ranks

    tok = Tokenizer.load(None)
    ranks = load_ranks(tok.path)
    words = [" capital", " Ouagadougou", "lowest", " Burkina", " antidisestablishmentarianism", " Zürich", "!!!"]
    for word in words:
        got, want = list(call(repr(word), fn, word.encode(), ranks)), tok.encode(word, bos=False)
        if got != want:
            raise AssertionError(f"{word!r}: got {got}, expected {want} ({tok.pieces(want)})")
    return None, len(words)


@exercise
def bpe_merges(fn: Callable) -> tuple[float | None, int]:
    """fn(words: list[str], n: int) -> the first n merges [(left, right), ...] of BPE training.

    Checked by replaying them: each merge must join a pair that is, at that moment, the
    most frequent adjacent pair of the corpus (any of them, when several tie).
    """
    from collections import Counter

    corpora = [
        ["lower", "lowest", "newer", "wider", "low"],
        ["hug", "pug", "pun", "bun", "hugs", "hugs"],
        ["aaab", "aab", "ab", "abab"],
        ["nanana", "nanana", "xy", "xyz", "xyw"],  # n+a occurs 6 times, in 2 words; x+y 3 times, in 3
    ]
    for corpus in corpora:
        merges = list(call(f"corpus {corpus}", fn, list(corpus), 4))
        if len(merges) != 4:
            raise AssertionError(f"corpus {corpus}: {len(merges)} merges returned, 4 asked for")
        words = [list(w) for w in corpus]
        for step, pair in enumerate(merges):
            counts = Counter(p for w in words for p in pairwise(w))
            best = max(counts.values())
            if counts.get(tuple(pair), 0) != best:
                tops = [f"{a}+{b}" for (a, b), c in counts.items() if c == best]
                raise AssertionError(
                    f"corpus {corpus}, merge {step}: {pair[0]!r}+{pair[1]!r} occurs {counts.get(tuple(pair), 0)}x, "
                    f"but {' / '.join(tops)} occur{'s' if len(tops) == 1 else ''} {best}x"
                )
            words = [_merge(w, tuple(pair)) for w in words]
    return None, len(corpora)


def _merge(word: list[str], pair: tuple[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


@exercise
def digit_chunks(fn: Callable) -> tuple[float | None, int]:
    """fn(digits: str) -> how Llama 3's pre-tokenization cuts a run of digits (without the regex)."""
    import regex

    from ..tokenizer import PATTERN

    cases = ["7", "42", "123", "1234", "1000000", "3141592653589", "00000"]
    for digits in cases:
        equal(f"{digits!r}", list(call(repr(digits), fn, digits)), regex.findall(PATTERN, digits))
    return None, len(cases)
