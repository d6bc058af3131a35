"""Chapter 07's exercise checks: the full stack."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from itertools import pairwise

import torch
import torch.nn.functional as F

from ..checkpoint import random_state_dict
from ..model import forward, hidden_states, lm_head
from .common import SMALL, _gen, call, compare, equal, exercise


@exercise
def skip_block(fn: Callable) -> tuple[float | None, int]:
    """fn(tokens, sd, cfg, skip) -> logits (N, V) of the model run without block ``skip``."""
    gen, worst = _gen(8), 0.0
    cfg = dataclasses.replace(SMALL[1], n_layers=4)
    sd = random_state_dict(cfg, seed=8, std=0.2)
    tokens = torch.randint(0, cfg.vocab_size, (9,), generator=gen)
    for skip in range(cfg.n_layers):
        # a block whose two output projections are zero adds nothing to the residual stream
        zeroed = dict(sd)
        for name in ("attention.wo.weight", "feed_forward.w2.weight"):
            zeroed[f"layers.{skip}.{name}"] = torch.zeros_like(sd[f"layers.{skip}.{name}"])
        case = f"block {skip} skipped"
        worst = max(worst, compare(case, call(case, fn, tokens, sd, cfg, skip), forward(tokens, zeroed, cfg)))
    return worst, cfg.n_layers


@exercise
def consecutive_cosines(fn: Callable) -> tuple[float | None, int]:
    """fn(states) with states [X^0, ..., X^L], each (N, d) -> (L,): cosine between X^l and X^{l+1}
    of the last token."""
    gen, worst = _gen(9), 0.0
    for n_layers, n, d in [(3, 4, 8), (6, 2, 16)]:
        states = [torch.randn(n, d, generator=gen) for _ in range(n_layers + 1)]
        want = torch.stack([F.cosine_similarity(a[-1], b[-1], dim=0) for a, b in pairwise(states)])
        case = f"{n_layers} layers"
        worst = max(worst, compare(case, torch.as_tensor(call(case, fn, states)), want))
    return worst, 2


@exercise
def lens_rank(fn: Callable) -> tuple[float | None, int]:
    """fn(states, sd, cfg, token_id) -> [rank of token_id at the last position through the LM head,
    for each X^l] (0 = the top prediction)."""
    cfg = SMALL[0]
    sd = random_state_dict(cfg, seed=10, std=0.3)
    tokens = torch.randint(0, cfg.vocab_size, (6,), generator=_gen(10))
    states = hidden_states(tokens, sd, cfg)
    for token in (3, 17):
        logits = torch.stack([lm_head(s[-1], sd, cfg) for s in states])
        want = [int((row > row[token]).sum()) for row in logits]
        equal(f"token {token}", [int(r) for r in call(f"token {token}", fn, states, sd, cfg, token)], want)
    return None, 2
