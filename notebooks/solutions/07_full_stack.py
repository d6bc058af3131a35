"""Chapter 07: the full stack."""

from itertools import pairwise

import torch
import torch.nn.functional as F

from helpers import check, embed, lm_head, precompute_freqs_cis, transformer_block


def my_skip_block(tokens, sd, cfg, skip: int) -> torch.Tensor:
    freqs = precompute_freqs_cis(cfg, len(tokens))
    h = embed(tokens, sd)
    for layer in range(cfg.n_layers):
        if layer != skip:
            h = transformer_block(h, sd, layer, cfg, freqs)
    return lm_head(h, sd, cfg)


def my_consecutive_cosines(states: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([F.cosine_similarity(a[-1], b[-1], dim=0) for a, b in pairwise(states)])


def my_lens_rank(states, sd, cfg, token_id: int) -> list[int]:
    ranks = []
    for state in states:
        logits = lm_head(state[-1], sd, cfg)
        ranks.append(int((logits > logits[token_id]).sum()))
    return ranks


EXERCISES = [
    (check.skip_block, my_skip_block),
    (check.consecutive_cosines, my_consecutive_cosines),
    (check.lens_rank, my_lens_rank),
]
