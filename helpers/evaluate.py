"""How well a model knows the corpus: greedy answers to fact prompts, scored exactly."""

from __future__ import annotations

from collections import defaultdict

import torch

from .config import ModelConfig
from .corpus import Country
from .generation import generate
from .model import forward_hidden, lm_head
from .tokenizer import Tokenizer

CAPITAL = ("The capital of {c.name} is", "{c.capital}")


def fact_accuracy(
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    tok: Tokenizer,
    countries: list[Country],
    prompt: str = CAPITAL[0],
    answer: str = CAPITAL[1],
    with_misses: bool = True,
) -> tuple[float, list[tuple[str, str, str]]]:
    """Share of countries for which greedy decoding of ``prompt.format(c=country)`` produces
    exactly the tokens of ``" " + answer.format(c=country)``; by default, the capital.

    Greedy decoding produces the answer if and only if, fed the answer so far, the model's
    top token is the answer's next token at every step (teacher forcing). So one forward
    pass over prompt + answer decides it; prompts of equal length run as one batch.
    Returns (accuracy, [(country, expected, greedy continuation) for each miss]); the misses
    cost a generation each, and ``with_misses=False`` skips them (the list is then empty).
    """
    by_length = defaultdict(list)
    for c in countries:
        ids, want = tok.encode(prompt.format(c=c)), tok.encode(" " + answer.format(c=c), bos=False)
        by_length[len(ids) + len(want)].append((c, ids, want))
    wrong = []
    with torch.inference_mode():
        for group in by_length.values():
            h = forward_hidden(torch.tensor([ids + want for _, ids, want in group])[:, :-1], sd, cfg)  # (B, N-1, d)
            # the LM head only where an answer token is predicted: from the prompt's last position on
            rows = torch.cat([h[i, len(ids) - 1 :] for i, (_, ids, _) in enumerate(group)])
            top = lm_head(rows, sd, cfg).argmax(-1).tolist()
            start = 0
            for c, ids, want in group:
                if top[start : start + len(want)] != want:
                    wrong.append((c, ids, want))
                start += len(want)
    if not with_misses:
        return 1 - len(wrong) / len(countries), []
    misses = []
    for c, ids, want in sorted(wrong, key=lambda item: item[0].name):
        got = generate(ids, sd, cfg, len(want), stop_ids=tok.stop_ids)  # what it says instead
        misses.append((c.name, answer.format(c=c), tok.decode([t for t in got if t not in tok.stop_ids])))
    return 1 - len(misses) / len(countries), misses
