"""The exercise self-checks accept the right answer and reject a plausible wrong one."""

import pytest
import torch

from helpers import check
from helpers.attention import scaled_dot_product
from helpers.feed_forward import feed_forward
from helpers.rmsnorm import rms_norm
from helpers.rope import apply_rotary_emb, scale_frequencies
from helpers.sampling import top_k_filter, top_p_filter


def wrong_rms_norm(x, w, eps):  # the write-up's formula: eps outside the square root
    return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * w


def no_mask_attention(q, k, v):
    rep = q.shape[0] // k.shape[0]
    k, v = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1) @ v


CASES = [
    (check.rms_norm, rms_norm, wrong_rms_norm),
    (check.embedding, lambda t, table: table[t], lambda t, table: table[t.clamp(max=2)]),
    (check.causal_attention, scaled_dot_product, no_mask_attention),
    (check.rope, lambda x, f: apply_rotary_emb(x, x, f)[0], lambda x, f: apply_rotary_emb(x, x, f.conj())[0]),
    (check.rope_scaling, scale_frequencies, lambda f, s: f / s),
    (check.feed_forward, feed_forward, lambda x, w1, w2, w3: (torch.relu(x @ w1.T) * (x @ w3.T)) @ w2.T),
    (check.top_k, top_k_filter, lambda z, k: top_k_filter(z, k + 1) if k < 10 else z),
    (check.top_p, top_p_filter, lambda z, p: z.masked_fill(torch.softmax(z, -1) < (1 - p) / 12, float("-inf"))),
]


@pytest.mark.parametrize("checker, right, wrong", CASES, ids=[c[0].__name__ for c in CASES])
def test_check_accepts_right_and_rejects_wrong(checker, right, wrong, capsys):
    checker(right)
    assert capsys.readouterr().out.startswith("✓")
    with pytest.raises(AssertionError):
        checker(wrong)


def test_bpe_check():
    def right(word, ranks):
        parts = [bytes([b]) for b in word]
        while True:
            pairs = [
                (ranks.get(a + b, float("inf")), i) for i, (a, b) in enumerate(zip(parts, parts[1:], strict=False))
            ]
            if not pairs or min(pairs)[0] == float("inf"):
                return [ranks[p] for p in parts]
            _, i = min(pairs)
            parts[i : i + 2] = [parts[i] + parts[i + 1]]

    def leftmost_first(word, ranks):  # merges the first mergeable pair instead of the lowest rank
        parts = [bytes([b]) for b in word]
        merged = True
        while merged:
            merged = False
            for i in range(len(parts) - 1):
                if parts[i] + parts[i + 1] in ranks:
                    parts[i : i + 2] = [parts[i] + parts[i + 1]]
                    merged = True
                    break
        return [ranks[p] for p in parts]

    check.bpe(right)
    with pytest.raises(AssertionError):
        check.bpe(leftmost_first)
