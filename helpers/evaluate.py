"""How well a model knows the corpus: greedy answers to fact prompts, scored exactly."""

from __future__ import annotations

import torch

from .config import ModelConfig
from .corpus import Country
from .generation import generate
from .tokenizer import Tokenizer

CAPITAL = ("The capital of {c.name} is", "{c.capital}")


def fact_accuracy(
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    tok: Tokenizer,
    countries: list[Country],
    prompt: str = CAPITAL[0],
    answer: str = CAPITAL[1],
) -> tuple[float, list[tuple[str, str, str]]]:
    """Share of countries for which greedy decoding of ``prompt.format(c=country)`` starts with
    exactly the tokens of ``" " + answer.format(c=country)``; by default, the capital.

    Returns (accuracy, [(country, expected, got) for each miss]).
    """
    misses = []
    for c in countries:
        want = tok.encode(" " + answer.format(c=c), bos=False)
        got = generate(tok.encode(prompt.format(c=c)), sd, cfg, len(want), stop_ids=tok.stop_ids)
        if got != want:
            misses.append((c.name, answer.format(c=c), tok.decode([t for t in got if t not in tok.stop_ids])))
    return 1 - len(misses) / len(countries), misses
