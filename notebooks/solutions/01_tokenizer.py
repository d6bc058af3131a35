"""Chapter 01: byte-pair encoding."""

from collections import Counter
from itertools import pairwise

from helpers import check


def my_bpe(word: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Encode one pre-tokenized chunk: start from bytes, merge the lowest-rank adjacent pair until none merges."""
    parts = [bytes([b]) for b in word]
    while len(parts) > 1:
        ranked = [(ranks.get(a + b), i) for i, (a, b) in enumerate(pairwise(parts))]
        ranked = [(r, i) for r, i in ranked if r is not None]
        if not ranked:
            break
        _, i = min(ranked)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[p] for p in parts]


def my_bpe_merges(words: list[str], n: int) -> list[tuple[str, str]]:
    """The first n merges of BPE training: each time, join the most frequent adjacent pair everywhere."""
    split = [list(w) for w in words]
    merges = []
    for _ in range(n):
        counts = Counter(p for w in split for p in pairwise(w))
        pair = counts.most_common(1)[0][0]
        merges.append(pair)
        joined = []
        for w in split:
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == pair:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            joined.append(out)
        split = joined
    return merges


def my_digit_chunks(digits: str) -> list[str]:
    """\\p{N}{1,3}: groups of at most three digits, from the left."""
    return [digits[i : i + 3] for i in range(0, len(digits), 3)]


EXERCISES = [(check.bpe, my_bpe), (check.bpe_merges, my_bpe_merges), (check.digit_chunks, my_digit_chunks)]
