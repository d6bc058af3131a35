"""Self-checks for the exercises: call one with your own function.

    from helpers import check
    check.rms_norm(my_rms_norm)

Each check runs your function and the book's on random inputs of several shapes and
either prints a line saying it matches (with the largest difference) or raises an
AssertionError saying what differs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .attention import scaled_dot_product
from .config import ModelConfig
from .feed_forward import feed_forward as _feed_forward
from .rmsnorm import rms_norm as _rms_norm
from .rope import apply_rotary_emb, precompute_freqs_cis, scale_frequencies
from .sampling import top_k_filter, top_p_filter

TOL = 1e-5


def _compare(name: str, got, want, tol: float = TOL) -> float:
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{name}: expected a tensor, got {type(got).__name__}")
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    both_inf = torch.isinf(got) & torch.isinf(want) & (got.sign() == want.sign())
    diff = torch.where(both_inf, torch.zeros_like(want), (got.float() - want.float()).abs())
    worst = float(diff.nan_to_num(float("inf")).max()) if diff.numel() else 0.0
    if worst > tol:
        raise AssertionError(f"{name}: differs from the book's version by up to {worst:.3g} (tolerance {tol})")
    return worst


def _report(name: str, worst: float, cases: int) -> None:
    print(f"✓ {name} matches the book's version on {cases} random cases (max |difference| {worst:.1e})")


def rms_norm(fn: Callable) -> None:
    """fn(x, weight, eps) -> RMSNorm of x over the last dimension."""
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for shape in [(4, 8), (2, 3, 16), (1, 64)]:
        x = torch.randn(shape, generator=gen) * 3
        w = torch.randn(shape[-1], generator=gen)
        for eps in (1e-5, 1e-2):
            worst = max(worst, _compare("rms_norm", fn(x, w, eps), _rms_norm(x, w, eps)))
    _report("rms_norm", worst, 6)


def embedding(fn: Callable) -> None:
    """fn(tokens, table) -> rows of table, (N,) -> (N, d)."""
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for n, v, d in [(5, 10, 4), (1, 3, 7), (12, 50, 16)]:
        table = torch.randn(v, d, generator=gen)
        tokens = torch.randint(0, v, (n,), generator=gen)
        worst = max(worst, _compare("embedding", fn(tokens, table), table[tokens]))
    _report("embedding", worst, 3)


def causal_attention(fn: Callable) -> None:
    """fn(q, k, v) with q (H, N, hd), k and v (H_kv, N, hd) -> (H, N, hd): causal, GQA."""
    gen = torch.Generator().manual_seed(2)
    worst = 0.0
    for h, h_kv, n, hd in [(4, 4, 5, 8), (8, 2, 6, 16), (4, 1, 3, 4)]:
        q = torch.randn(h, n, hd, generator=gen)
        k, v = torch.randn(h_kv, n, hd, generator=gen), torch.randn(h_kv, n, hd, generator=gen)
        worst = max(worst, _compare("causal_attention", fn(q, k, v), scaled_dot_product(q, k, v)))
    _report("causal_attention", worst, 3)


def rope(fn: Callable) -> None:
    """fn(x, freqs_cis) with x (N, H, hd) -> x rotated (Meta's interleaved pairs)."""
    gen = torch.Generator().manual_seed(3)
    worst = 0.0
    for n, h, hd in [(6, 2, 8), (3, 4, 16)]:
        cfg = ModelConfig(dim=h * hd, n_layers=1, n_heads=h, n_kv_heads=h, vocab_size=2)
        freqs = precompute_freqs_cis(cfg, n)
        x = torch.randn(n, h, hd, generator=gen)
        worst = max(worst, _compare("rope", fn(x, freqs), apply_rotary_emb(x, x, freqs)[0]))
    _report("rope", worst, 2)


def rope_scaling(fn: Callable) -> None:
    """fn(freqs, factor) -> Llama 3 scaled frequencies (low 1, high 4, original context 8192)."""
    worst = 0.0
    for hd in (64, 128):
        freqs = 1.0 / (500000.0 ** (torch.arange(0, hd, 2).float() / hd))
        for factor in (8.0, 32.0):
            worst = max(worst, _compare("rope_scaling", fn(freqs, factor), scale_frequencies(freqs, factor), tol=1e-9))
    _report("rope_scaling", worst, 4)


def feed_forward(fn: Callable) -> None:
    """fn(x, w1, w2, w3) -> SwiGLU feed-forward."""
    gen = torch.Generator().manual_seed(4)
    worst = 0.0
    for n, d, f in [(3, 8, 16), (5, 16, 40)]:
        x = torch.randn(n, d, generator=gen)
        w1, w3 = torch.randn(f, d, generator=gen), torch.randn(f, d, generator=gen)
        w2 = torch.randn(d, f, generator=gen)
        worst = max(worst, _compare("feed_forward", fn(x, w1, w2, w3), _feed_forward(x, w1, w2, w3), tol=1e-4))
    _report("feed_forward", worst, 2)


def top_k(fn: Callable) -> None:
    """fn(logits, k) -> logits with all but the k largest set to -inf."""
    gen = torch.Generator().manual_seed(5)
    for k in (1, 3, 10):
        logits = torch.randn(10, generator=gen)
        _compare("top_k", fn(logits, k), top_k_filter(logits, k))
    _report("top_k", 0.0, 3)


def top_p(fn: Callable) -> None:
    """fn(logits, p) -> logits outside the nucleus set to -inf."""
    gen = torch.Generator().manual_seed(6)
    for p in (0.1, 0.5, 0.9, 1.0):
        logits = torch.randn(12, generator=gen) * 2
        _compare("top_p", fn(logits, p), top_p_filter(logits, p))
    _report("top_p", 0.0, 4)


def bpe(fn: Callable) -> None:
    """fn(chunk: bytes, ranks) -> token ids of one pre-tokenized chunk, by lowest-rank-first merging."""
    from .tokenizer import Tokenizer, load_ranks

    tok = Tokenizer.load(None)
    ranks = load_ranks(tok.path)
    words = [" capital", " Ouagadougou", "lowest", " Burkina", " antidisestablishmentarianism", " Zürich", "!!!"]
    for word in words:
        got, want = list(fn(word.encode(), ranks)), tok.encode(word, bos=False)
        if got != want:
            raise AssertionError(f"bpe: {word!r} -> {got}, expected {want} ({tok.pieces(want)})")
    _report("bpe", 0.0, len(words))
