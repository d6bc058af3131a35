"""Self-checks for the exercises: call one with your own function.

    from helpers import check
    check.rms_norm(my_rms_norm)

Each check runs your function on several cases and compares with an independent
answer (the book's function, a formula, or a property the answer must have):

- right on every case: one line starting with ✓, with the largest difference seen;
- not written yet (your function still raises NotImplementedError): one line saying so;
- wrong: an AssertionError naming the case that failed and what differs.

The solutions a teacher can hand out later live in ``notebooks/solutions/``;
``make solutions`` runs each of them through these same checks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from itertools import pairwise

import torch
import torch.nn.functional as F

from .attention import scaled_dot_product
from .checkpoint import expected_shapes, random_state_dict
from .config import ModelConfig
from .feed_forward import feed_forward as _feed_forward
from .kv_cache import KVCache
from .model import forward, hidden_states, lm_head, transformer_block
from .rmsnorm import rms_norm as _rms_norm
from .rope import apply_rotary_emb, precompute_freqs_cis, rope_frequencies, scale_frequencies
from .sampling import top_k_filter, top_p_filter

TOL = 1e-5


def exercise(check: Callable) -> Callable:
    """Run a check; turn "not written yet" into a note and success into a ✓ line.

    The wrapped check returns (largest difference or None, number of cases) or raises
    AssertionError; it stays reachable as ``.__wrapped__`` (the tests call it directly).
    Returns None, so that a notebook cell ending with a check shows only the printed line.
    """

    @functools.wraps(check)
    def run(*functions) -> None:
        name = check.__name__
        try:
            worst, cases = check(*functions)
        except NotImplementedError:
            print(f"… {name}: not written yet — replace `raise NotImplementedError` with your code, then run the cell")
            return
        detail = f" (max |difference| {worst:.1e})" if worst is not None else ""
        print(f"✓ {name}: right on all {cases} cases{detail}")

    return run


def compare(case: str, got, want, tol: float = TOL) -> float:
    """Largest |got - want|, or an AssertionError naming the case when it exceeds ``tol``."""
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{case}: expected a tensor, got {type(got).__name__}")
    if got.shape != want.shape:
        raise AssertionError(f"{case}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    both_inf = torch.isinf(got) & torch.isinf(want) & (got.sign() == want.sign())
    diff = torch.where(both_inf, torch.zeros_like(want, dtype=torch.float32), (got.float() - want.float()).abs())
    worst = float(diff.nan_to_num(float("inf")).max()) if diff.numel() else 0.0
    if worst > tol:
        where = tuple(int(i) for i in torch.nonzero(diff.nan_to_num(float("inf")) == worst)[0])
        raise AssertionError(
            f"{case}: differs by up to {worst:.3g} (tolerance {tol}), first at index {where}: "
            f"got {float(got[where]):.6g}, expected {float(want[where]):.6g}"
        )
    return worst


def equal(case: str, got, want) -> None:
    if got != want:
        raise AssertionError(f"{case}: got {got!r}, expected {want!r}")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- chapter 01: the tokenizer


@exercise
def bpe(fn: Callable) -> tuple[float | None, int]:
    """fn(chunk: bytes, ranks) -> token ids of one pre-tokenized chunk, by lowest-rank-first merging."""
    from .tokenizer import Tokenizer, load_ranks

    tok = Tokenizer.load(None)
    ranks = load_ranks(tok.path)
    words = [" capital", " Ouagadougou", "lowest", " Burkina", " antidisestablishmentarianism", " Zürich", "!!!"]
    for word in words:
        got, want = list(fn(word.encode(), ranks)), tok.encode(word, bos=False)
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
    ]
    for corpus in corpora:
        merges = list(fn(list(corpus), 4))
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

    from .tokenizer import PATTERN

    cases = ["7", "42", "123", "1234", "1000000", "3141592653589", "00000"]
    for digits in cases:
        equal(f"{digits!r}", list(fn(digits)), regex.findall(PATTERN, digits))
    return None, len(cases)


# ---------------------------------------------------------------- chapter 02: the embedding


class _NoLookup(torch.Tensor):
    """A table that refuses to be indexed: an embedding computed from it must be a product."""

    LOOKUPS = {torch.Tensor.__getitem__, torch.index_select, torch.Tensor.index_select, F.embedding, torch.take}

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in cls.LOOKUPS:
            raise AssertionError(
                "the rows were looked up by index: build the one-hot matrix (F.one_hot) and multiply it by the table"
            )
        return super().__torch_function__(func, types, args, kwargs or {})


@exercise
def embedding(fn: Callable) -> tuple[float | None, int]:
    """fn(tokens, table) -> one_hot(tokens) @ table: (N,) -> (N, d), without indexing the table."""
    gen, worst = _gen(1), 0.0
    for n, v, d in [(5, 10, 4), (1, 3, 7), (12, 50, 16)]:
        table = torch.randn(v, d, generator=gen)
        tokens = torch.randint(0, v, (n,), generator=gen)
        got = fn(tokens, table.as_subclass(_NoLookup))
        got = got.as_subclass(torch.Tensor) if isinstance(got, torch.Tensor) else got
        worst = max(worst, compare(f"{n} tokens, table ({v}, {d})", got, table[tokens]))
    return worst, 3


@exercise
def nearest(fn: Callable) -> tuple[float | None, int]:
    """fn(table, token_id, k) -> the k token ids whose rows are most similar (cosine) to row token_id,
    most similar first, leaving out all-zero rows (never-trained tokens)."""
    gen = _gen(7)
    for case in range(3):
        table = torch.randn(40, 8, generator=gen)
        table[torch.randperm(40, generator=gen)[:15]] = 0.0
        query = int(torch.nonzero(table.abs().sum(-1) > 0)[case])
        unit = table / table.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        cos = (unit @ unit[query]).masked_fill(table.abs().sum(-1) == 0, -2.0)
        want = torch.topk(cos, 5).indices.tolist()
        equal(f"case {case} (token {query}, 5 nearest)", [int(i) for i in fn(table, query, 5)], want)
    return None, 3


@exercise
def table_bytes(fn: Callable) -> tuple[float | None, int]:
    """fn(vocab_size, dim, bits) -> bytes of a (vocab_size, dim) table at ``bits`` bits per number."""
    cases = [(128256, 2048, 16), (128256, 2048, 4), (128256, 128, 32), (10, 3, 8)]
    for v, d, bits in cases:
        equal(f"table ({v}, {d}) at {bits} bits", fn(v, d, bits), v * d * bits // 8)
    return None, len(cases)


# ---------------------------------------------------------------- chapter 03: RMSNorm


@exercise
def rms_norm(fn: Callable) -> tuple[float | None, int]:
    """fn(x, weight, eps) -> RMSNorm of x over the last dimension."""
    gen, worst = _gen(0), 0.0
    for shape in [(4, 8), (2, 3, 16), (1, 64)]:
        x = torch.randn(shape, generator=gen) * 3
        w = torch.randn(shape[-1], generator=gen)
        for eps in (1e-5, 1e-2):
            worst = max(worst, compare(f"x of shape {shape}, eps {eps}", fn(x, w, eps), _rms_norm(x, w, eps)))
    return worst, 6


@exercise
def eps_after_scaling(fn: Callable) -> tuple[float | None, int]:
    """fn(eps, c) -> the eps' for which rms_norm(c * x, g, eps) == rms_norm(x, g, eps') for every x."""
    gen, worst = _gen(3), 0.0
    cases = [(1e-5, 1000.0), (1e-5, 0.01), (1e-2, 3.0), (0.5, 0.5)]
    for eps, c in cases:
        x, g = torch.randn(4, 32, generator=gen, dtype=torch.float64) * 0.1, torch.randn(32, dtype=torch.float64)
        eps2 = fn(eps, c)
        want = _rms_norm(c * x, g, eps)
        worst = max(worst, compare(f"eps {eps}, scale c = {c}", _rms_norm(x, g, eps2), want, tol=1e-5))
    return worst, len(cases)


@exercise
def norm_parameters(fn: Callable) -> tuple[float | None, int]:
    """fn(sd) -> the number of RMSNorm gain parameters in a state dict."""
    shapes = [ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, multiple_of=16)]
    shapes.append(ModelConfig(dim=48, n_layers=5, n_heads=4, n_kv_heads=1, vocab_size=70, multiple_of=16))
    for cfg in shapes:
        equal(f"{cfg.n_layers} layers of width {cfg.dim}", fn(random_state_dict(cfg)), (2 * cfg.n_layers + 1) * cfg.dim)
    return None, len(shapes)


# ---------------------------------------------------------------- chapter 04: attention


@exercise
def causal_attention(fn: Callable) -> tuple[float | None, int]:
    """fn(q, k, v) with q (H, N, hd), k and v (G, N, hd) -> (H, N, hd): causal, GQA."""
    gen, worst = _gen(2), 0.0
    for h, h_kv, n, hd in [(4, 4, 5, 8), (8, 2, 6, 16), (4, 1, 3, 4)]:
        q = torch.randn(h, n, hd, generator=gen)
        k, v = torch.randn(h_kv, n, hd, generator=gen), torch.randn(h_kv, n, hd, generator=gen)
        worst = max(worst, compare(f"H={h}, G={h_kv}, N={n}", fn(q, k, v), scaled_dot_product(q, k, v)))
    return worst, 3


@exercise
def attention_parameters(fn: Callable) -> tuple[float | None, int]:
    """fn(d, H, G) -> parameters of one attention layer: W^Q, W^K, W^V, W^O, with G key/value heads."""
    cases = [(2048, 32, 8), (2048, 32, 32), (2048, 32, 1), (128, 8, 2), (96, 6, 3)]
    for d, h, g in cases:
        cfg = ModelConfig(dim=d, n_layers=1, n_heads=h, n_kv_heads=g, vocab_size=2)
        want = sum(math.prod(s) for k, s in expected_shapes(cfg).items() if ".attention.w" in k)
        equal(f"d={d}, H={h}, G={g}", fn(d, h, g), want)
    return None, len(cases)


@exercise
def per_head_attention(fn: Callable) -> tuple[float | None, int]:
    """fn(x, wq, wk, wv, wo, H, G) -> (N, d): causal attention (no RoPE) head by head, each query
    head h reading key/value head h // (H/G), the heads concatenated and mixed by wo."""
    gen, worst = _gen(4), 0.0
    for d, h, g, n in [(32, 4, 2, 5), (48, 6, 6, 4), (24, 4, 1, 6)]:
        hd = d // h
        x = torch.randn(n, d, generator=gen)
        wq, wo = torch.randn(d, d, generator=gen) / d**0.5, torch.randn(d, d, generator=gen) / d**0.5
        wk, wv = (torch.randn(g * hd, d, generator=gen) / d**0.5 for _ in range(2))
        q, k, v = (x @ w.T for w in (wq, wk, wv))
        out = scaled_dot_product(
            q.view(n, h, hd).transpose(0, 1), k.view(n, g, hd).transpose(0, 1), v.view(n, g, hd).transpose(0, 1)
        )
        want = out.transpose(0, 1).reshape(n, d) @ wo.T
        worst = max(worst, compare(f"d={d}, H={h}, G={g}, N={n}", fn(x, wq, wk, wv, wo, h, g), want))
    return worst, 3


# ---------------------------------------------------------------- chapter 05: RoPE


@exercise
def rope(fn: Callable) -> tuple[float | None, int]:
    """fn(x, freqs_cis) with x (N, H, hd) -> x rotated (Meta's interleaved pairs)."""
    gen, worst = _gen(3), 0.0
    for n, h, hd in [(6, 2, 8), (3, 4, 16)]:
        cfg = ModelConfig(dim=h * hd, n_layers=1, n_heads=h, n_kv_heads=h, vocab_size=2)
        freqs = precompute_freqs_cis(cfg, n)
        x = torch.randn(n, h, hd, generator=gen)
        worst = max(worst, compare(f"N={n}, H={h}, hd={hd}", fn(x, freqs), apply_rotary_emb(x, x, freqs)[0]))
    return worst, 2


@exercise
def rope_scaling(fn: Callable) -> tuple[float | None, int]:
    """fn(freqs, factor) -> Llama 3 scaled frequencies (low 1, high 4, original context 8192)."""
    worst = 0.0
    for hd in (64, 128):
        freqs = rope_frequencies(hd, 500000.0)
        for factor in (8.0, 32.0):
            case = f"head_dim {hd}, factor {factor:g}"
            worst = max(worst, compare(case, fn(freqs, factor), scale_frequencies(freqs, factor), tol=1e-9))
    return worst, 4


@exercise
def turn_angles(fn: Callable) -> tuple[float | None, int]:
    """fn(a, b) with a, b (hd,) the same vector rotated at two positions -> the angle each pair
    turned from a to b, in (-pi, pi]: (hd/2,)."""
    gen, worst = _gen(5), 0.0
    freqs = rope_frequencies(16, 10000.0)
    for i, j in [(0, 1), (3, 7), (10, 2)]:
        x = torch.randn(1, 1, 16, generator=gen, dtype=torch.float64)
        table = torch.polar(
            torch.ones(20, 8, dtype=torch.float64), torch.outer(torch.arange(20.0).double(), freqs.double())
        )
        a, b = apply_rotary_emb(x, x, table[i : i + 1])[0][0, 0], apply_rotary_emb(x, x, table[j : j + 1])[0][0, 0]
        want = torch.remainder((j - i) * freqs.double() + math.pi, 2 * math.pi) - math.pi
        want = torch.where(want <= -math.pi + 1e-12, want + 2 * math.pi, want)
        worst = max(worst, compare(f"positions {i} -> {j}", fn(a, b).double(), want, tol=1e-6))
    return worst, 3


# ---------------------------------------------------------------- chapter 06: one layer


@exercise
def feed_forward(fn: Callable) -> tuple[float | None, int]:
    """fn(x, w1, w2, w3) -> SwiGLU feed-forward."""
    gen, worst = _gen(4), 0.0
    for n, d, f in [(3, 8, 16), (5, 16, 40)]:
        x = torch.randn(n, d, generator=gen)
        w1, w3 = torch.randn(f, d, generator=gen), torch.randn(f, d, generator=gen)
        w2 = torch.randn(d, f, generator=gen)
        worst = max(worst, compare(f"N={n}, d={d}, d_ff={f}", fn(x, w1, w2, w3), _feed_forward(x, w1, w2, w3), 1e-4))
    return worst, 2


_SMALL = [
    ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, multiple_of=16, use_scaled_rope=True),
    ModelConfig(dim=48, n_layers=3, n_heads=6, n_kv_heads=1, vocab_size=60, multiple_of=16),
]


@exercise
def block(fn: Callable) -> tuple[float | None, int]:
    """fn(x, sd, layer, cfg, freqs_cis) -> X^{l+1} from X^l: equations (2.1) with the helpers."""
    gen, worst = _gen(6), 0.0
    for cfg in _SMALL:
        sd = random_state_dict(cfg, seed=6, std=0.2)
        x = torch.randn(7, cfg.dim, generator=gen)
        freqs = precompute_freqs_cis(cfg, 7)
        for layer in range(cfg.n_layers):
            want = transformer_block(x, sd, layer, cfg, freqs)
            worst = max(worst, compare(f"d={cfg.dim}, layer {layer}", fn(x, sd, layer, cfg, freqs), want))
    return worst, sum(c.n_layers for c in _SMALL)


@exercise
def block_parameters(fn: Callable) -> tuple[float | None, int]:
    """fn(cfg) -> {"attention": ..., "feed_forward": ..., "norms": ...}: parameters of one block."""
    from .config import llama_3_2_1b_config

    for cfg in [*_SMALL, llama_3_2_1b_config()]:
        shapes = {k: math.prod(s) for k, s in expected_shapes(cfg).items() if k.startswith("layers.0.")}
        want = {
            "attention": sum(n for k, n in shapes.items() if ".attention.w" in k),
            "feed_forward": sum(n for k, n in shapes.items() if ".feed_forward." in k),
            "norms": sum(n for k, n in shapes.items() if k.endswith("norm.weight")),
        }
        equal(f"d={cfg.dim}, d_ff={cfg.ffn_hidden_dim}, H={cfg.n_heads}, G={cfg.n_kv_heads}", dict(fn(cfg)), want)
    return None, 3


# ---------------------------------------------------------------- chapter 07: the full stack


@exercise
def skip_block(fn: Callable) -> tuple[float | None, int]:
    """fn(tokens, sd, cfg, skip) -> logits (N, V) of the model run without block ``skip``."""
    gen, worst = _gen(8), 0.0
    cfg = dataclasses_replace(_SMALL[1], n_layers=4)
    sd = random_state_dict(cfg, seed=8, std=0.2)
    tokens = torch.randint(0, cfg.vocab_size, (9,), generator=gen)
    for skip in range(cfg.n_layers):
        # a block whose two output projections are zero adds nothing to the residual stream
        zeroed = dict(sd)
        for name in ("attention.wo.weight", "feed_forward.w2.weight"):
            zeroed[f"layers.{skip}.{name}"] = torch.zeros_like(sd[f"layers.{skip}.{name}"])
        worst = max(worst, compare(f"block {skip} skipped", fn(tokens, sd, cfg, skip), forward(tokens, zeroed, cfg)))
    return worst, cfg.n_layers


@exercise
def consecutive_cosines(fn: Callable) -> tuple[float | None, int]:
    """fn(states) with states [X^0, ..., X^L], each (N, d) -> (L,): cosine between X^l and X^{l+1}
    of the last token."""
    gen, worst = _gen(9), 0.0
    for n_layers, n, d in [(3, 4, 8), (6, 2, 16)]:
        states = [torch.randn(n, d, generator=gen) for _ in range(n_layers + 1)]
        want = torch.stack([F.cosine_similarity(a[-1], b[-1], dim=0) for a, b in pairwise(states)])
        worst = max(worst, compare(f"{n_layers} layers", torch.as_tensor(fn(states)), want))
    return worst, 2


@exercise
def lens_rank(fn: Callable) -> tuple[float | None, int]:
    """fn(states, sd, cfg, token_id) -> [rank of token_id at the last position through the LM head,
    for each X^l] (0 = the top prediction)."""
    cfg = _SMALL[0]
    sd = random_state_dict(cfg, seed=10, std=0.3)
    tokens = torch.randint(0, cfg.vocab_size, (6,), generator=_gen(10))
    states = hidden_states(tokens, sd, cfg)
    for token in (3, 17):
        logits = torch.stack([lm_head(s[-1], sd, cfg) for s in states])
        want = [int((row > row[token]).sum()) for row in logits]
        equal(f"token {token}", [int(r) for r in fn(states, sd, cfg, token)], want)
    return None, 2


def dataclasses_replace(cfg: ModelConfig, **changes) -> ModelConfig:
    import dataclasses

    return dataclasses.replace(cfg, **changes)


# ---------------------------------------------------------------- chapter 08: LM head and sampling


@exercise
def top_k(fn: Callable) -> tuple[float | None, int]:
    """fn(logits, k) -> logits with all but the k largest set to -inf."""
    gen = _gen(5)
    cases = 0
    for k in (1, 3, 10, 12):
        logits = torch.randn(10, generator=gen)
        got, want = fn(logits.clone(), k), top_k_filter(logits, k)
        kept = int(torch.isfinite(got).sum()) if isinstance(got, torch.Tensor) else "?"
        compare(f"k={k} of 10 logits (you kept {kept}, expected {int(torch.isfinite(want).sum())})", got, want)
        cases += 1
    return None, cases


@exercise
def top_p(fn: Callable) -> tuple[float | None, int]:
    """fn(logits, p) -> logits outside the nucleus set to -inf."""
    gen = _gen(6)
    for p in (0.1, 0.5, 0.9, 1.0):
        logits = torch.randn(12, generator=gen) * 2
        got, want = fn(logits.clone(), p), top_p_filter(logits, p)
        kept = int(torch.isfinite(got).sum()) if isinstance(got, torch.Tensor) else "?"
        compare(f"p={p} (you kept {kept} tokens, the nucleus has {int(torch.isfinite(want).sum())})", got, want)
    return None, 4


@exercise
def probability_at_temperature(fn: Callable) -> tuple[float | None, int]:
    """fn(logits, token, T) -> probability of ``token`` after dividing the logits by T, for any
    T > 0: also a T so small that logits / T overflows float32."""
    gen, worst = _gen(11), 0.0
    logits = torch.randn(50, generator=gen) * 3
    for t in (2.0, 1.0, 0.1, 1e-3, 1e-40):
        for token in (int(logits.argmax()), 7):
            want = torch.softmax((logits.double() - logits.double().max()) / t, -1)[token]
            got = torch.as_tensor(fn(logits, token, t), dtype=torch.float64)
            worst = max(worst, compare(f"T={t:g}, token {token}", got, want, tol=1e-5))
    return worst, 10


# ---------------------------------------------------------------- chapter 09: the KV cache


@exercise
def prefill_in_chunks(fn: Callable) -> tuple[float | None, int]:
    """fn(tokens, sd, cfg, chunk) -> logits (N, V), the prompt run through a KVCache chunk by chunk."""
    cfg = _SMALL[0]
    sd = random_state_dict(cfg, seed=12, std=0.2)
    tokens = torch.randint(0, cfg.vocab_size, (11,), generator=_gen(12))
    want, worst = forward(tokens, sd, cfg), 0.0
    for chunk in (1, 4, 11):
        worst = max(worst, compare(f"chunks of {chunk}", fn(tokens, sd, cfg, chunk), want, tol=1e-4))
    return worst, 3


@exercise
def cache_bytes(fn: Callable) -> tuple[float | None, int]:
    """fn(cfg, n_tokens, dtype) -> bytes a KV cache for n_tokens positions holds."""
    from .config import llama_3_2_1b_config

    cases = [
        (_SMALL[0], 10, torch.float32),
        (_SMALL[1], 3, torch.bfloat16),
        (llama_3_2_1b_config(), 131072, torch.bfloat16),
    ]
    for cfg, n, dtype in cases:
        with torch.device("meta"):
            want = KVCache(cfg, n, dtype=dtype).nbytes
        equal(f"{n} tokens, {cfg.n_layers} layers x {cfg.n_kv_heads} KV heads, {dtype}", fn(cfg, n, dtype), want)
    return None, len(cases)


@exercise
def tokens_that_fit(fn: Callable) -> tuple[float | None, int]:
    """fn(cfg, budget_bytes, dtype) -> the largest number of positions whose KV cache fits in the budget."""
    import dataclasses

    from .config import llama_3_2_1b_config
    from .kv_cache import cache_bytes_per_token

    real = llama_3_2_1b_config()
    cases = [(real, 2**30, torch.bfloat16), (dataclasses.replace(real, n_kv_heads=32), 2**30, torch.bfloat16)]
    cases.append((_SMALL[0], 10_000, torch.float32))
    for cfg, budget, dtype in cases:
        equal(
            f"{cfg.n_kv_heads} KV heads, {budget:,} bytes",
            fn(cfg, budget, dtype),
            budget // cache_bytes_per_token(cfg, dtype),
        )
    return None, len(cases)


# ---------------------------------------------------------------- chapter 10: quantization


def _quantization_cases():
    gen = _gen(13)
    w = torch.randn(6, 128, generator=gen) * 0.05
    w[2, 40] = 1.5  # an outlier in row 2, block 4
    w[4] = 0.0  # a row (two blocks) of zeros
    yield "random 6x128 with an outlier and a zero row", w
    yield "bf16 8x64", (torch.randn(8, 64, generator=gen) * 3).bfloat16()


@exercise
def int8_rows(fn: Callable) -> tuple[float | None, int]:
    """fn(w) -> (codes int8 (out, in), scales (out,)): symmetric absmax per output row, q in -127..127."""
    from .quantize import quantize_int8_rows

    worst, cases = 0.0, 0
    for case, w in _quantization_cases():
        codes, scales = fn(w)
        want_codes, want_scales = quantize_int8_rows(w)
        worst = max(worst, compare(f"{case}: scales", torch.as_tensor(scales).float(), want_scales, tol=1e-7))
        got = torch.as_tensor(codes)
        if got.shape != want_codes.shape or not torch.equal(got.long(), want_codes.long()):
            diff = (got.long() - want_codes.long()).abs() if got.shape == want_codes.shape else None
            where = "" if diff is None else f", first at {tuple(int(i) for i in torch.nonzero(diff)[0])}"
            raise AssertionError(f"{case}: codes differ{where} (round to the nearest integer of w / scale)")
        cases += 1
    return worst, cases


@exercise
def nf4_block(fn: Callable) -> tuple[float | None, int]:
    """fn(block) with block (64,) -> (codes (64,) in 0..15, absmax): the nearest NF4 level of block / absmax."""
    from .quantize import NF4_LEVELS, quantize_nf4_blocks

    gen = _gen(14)
    blocks = {
        "a normal block": torch.randn(64, generator=gen),
        "an outlier and small values": torch.cat([torch.tensor([25.0]), torch.randn(63, generator=gen) * 0.1]),
        "all zeros": torch.zeros(64),
        "values exactly on the levels": NF4_LEVELS[torch.arange(64) % 16] * 3.0,
    }
    for case, block in blocks.items():
        codes, absmax = fn(block.clone())
        want_codes, want_absmax = quantize_nf4_blocks(block)
        equal(f"{case}: absmax", float(absmax), float(want_absmax[0]))
        got = [int(c) for c in torch.as_tensor(codes).reshape(-1)]
        if got != want_codes.tolist():
            i = next(i for i, (a, b) in enumerate(zip(got, want_codes.tolist(), strict=False)) if a != b)
            raise AssertionError(
                f"{case}: value {i} ({float(block[i]):.4f}) got code {got[i]}, expected {int(want_codes[i])} "
                f"(level {float(NF4_LEVELS[int(want_codes[i])]):+.4f} x absmax)"
            )
    return None, len(blocks)


@exercise
def block_errors(fn: Callable) -> tuple[float | None, int]:
    """fn(w) -> (n_blocks,): the largest |w - dequantized w| in each block of 64, under int4."""
    from .quantize import BLOCK, quantize

    worst, cases = 0.0, 0
    for case, w in _quantization_cases():
        w = w.float()
        want = (quantize(w, "int4").dequantize().float() - w).reshape(-1, BLOCK).abs().amax(-1)
        worst = max(worst, compare(case, torch.as_tensor(fn(w)).float(), want, tol=1e-6))
        cases += 1
    return worst, cases


# ---------------------------------------------------------------- chapter 11: mixture of experts


def _as_dense(weights: torch.Tensor, experts: torch.Tensor, n_experts: int) -> torch.Tensor:
    """(N, k) weights and expert ids -> (N, E), zero for the experts not chosen: order-free."""
    return torch.zeros(weights.shape[0], n_experts).scatter(1, torch.as_tensor(experts).long(), weights.float())


@exercise
def moe_route(fn: Callable) -> tuple[float | None, int]:
    """fn(logits (N, E), k) -> (weights (N, k), experts (N, k)): Mixtral's top k of the softmax, renormalised."""
    from .moe import route

    gen = _gen(15)
    cases = {
        "8 tokens, 8 experts, k=2": (torch.randn(8, 8, generator=gen), 2),
        "k=1 (every weight is 1)": (torch.randn(5, 4, generator=gen), 1),
        "k=E (the plain softmax)": (torch.randn(3, 4, generator=gen), 4),
        "large logits": (torch.randn(4, 6, generator=gen) * 50, 3),
    }
    worst = 0.0
    for case, (logits, k) in cases.items():
        weights, experts = fn(logits.clone(), k)
        weights, experts = torch.as_tensor(weights), torch.as_tensor(experts)
        if weights.shape != (logits.shape[0], k) or experts.shape != (logits.shape[0], k):
            raise AssertionError(f"{case}: expected weights and experts of shape {(logits.shape[0], k)}")
        want_w, want_e = route(logits, k, "softmax")
        got = _as_dense(weights, experts, logits.shape[1])
        worst = max(worst, compare(case, got, _as_dense(want_w, want_e, logits.shape[1])))
    return worst, len(cases)


@exercise
def load_balance(fn: Callable) -> tuple[float | None, int]:
    """fn(logits (N, E), k) -> the load-balancing loss E * sum_e f_e P_e of one layer."""
    from .moe import load_balancing_loss

    gen = _gen(16)
    collapsed = torch.zeros(20, 4)
    collapsed[:, 2] = 20.0
    cases = {
        "random logits, k=1": (torch.randn(30, 8, generator=gen), 1),
        "random logits, k=2": (torch.randn(30, 8, generator=gen) * 3, 2),
        "all tokens to expert 2": (collapsed, 1),
    }
    worst = 0.0
    for case, (logits, k) in cases.items():
        got = torch.as_tensor(fn(logits.clone(), k)).float().reshape(())
        worst = max(worst, compare(case, got, load_balancing_loss(logits, k)))
    return worst, len(cases)


@exercise
def experts_touched(fn: Callable) -> tuple[float | None, int]:
    """fn(n_experts, k, batch) -> the expected number of distinct experts a decode step at that
    batch size reads in one layer, each token choosing k different experts uniformly at random."""
    cases = [(16, 1, 1), (16, 1, 16), (8, 2, 4), (8, 2, 64), (128, 1, 64), (8, 8, 3)]
    worst = 0.0
    for e, k, b in cases:
        want = torch.tensor(e * (1 - ((e - k) / e) ** b))  # P(an expert is not among a token's k) = (E-k)/E
        got = torch.as_tensor(fn(e, k, b), dtype=torch.float64).float()
        worst = max(worst, compare(f"E={e}, k={k}, batch {b}", got, want.float(), tol=1e-4))
    return worst, len(cases)


# Chapter 12: training


@exercise
def cross_entropy(fn: Callable) -> tuple[float | None, int]:
    """fn(logits (N, V), targets (N,)) -> the mean of -log softmax(logits)[target], a scalar."""
    gen = _gen(17)
    cases = {
        "4 rows, 10 classes": (torch.randn(4, 10, generator=gen), torch.tensor([0, 3, 9, 3])),
        "one row": (torch.randn(1, 5, generator=gen), torch.tensor([2])),
        "large logits (needs the max subtracted)": (torch.randn(3, 6, generator=gen) * 500, torch.tensor([1, 0, 5])),
        "a sure, right prediction": (torch.tensor([[30.0, 0.0, 0.0]]), torch.tensor([0])),
    }
    worst = 0.0
    for case, (logits, targets) in cases.items():
        got = torch.as_tensor(fn(logits.clone(), targets.clone())).float().reshape(())
        worst = max(worst, compare(case, got, F.cross_entropy(logits, targets), tol=1e-4))
    return worst, len(cases)


@exercise
def adamw_step(fn: Callable) -> tuple[float | None, int]:
    """fn(theta, grad, m, v, step, lr, betas, eps, weight_decay) -> (theta, m, v) after one AdamW
    update (step counts from 1), compared with torch.optim.AdamW over several steps."""
    gen = _gen(18)
    cases = {
        "no weight decay": dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
        "weight decay 0.1": dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1),
        "large eps": dict(lr=3e-3, betas=(0.8, 0.9), eps=1e-1, weight_decay=0.01),
    }
    worst = 0.0
    for case, hp in cases.items():
        start = torch.randn(3, 4, generator=gen, dtype=torch.float64)
        ref = start.clone().requires_grad_()
        opt = torch.optim.AdamW([ref], **hp)
        theta, m, v = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
        for step in range(1, 5):
            grad = torch.randn(3, 4, generator=gen, dtype=torch.float64)
            ref.grad = grad.clone()
            opt.step()
            theta, m, v = (torch.as_tensor(t) for t in fn(theta, grad.clone(), m, v, step, **hp))
            worst = max(worst, compare(f"{case}, step {step}", theta, ref.detach(), tol=1e-9))
    return worst, len(cases)


@exercise
def lr_schedule(fn: Callable) -> tuple[float | None, int]:
    """fn(step, steps, peak, warmup) -> the learning rate: linear warm-up, then cosine to 10% of peak."""
    from .train import learning_rate

    worst = 0.0
    cases = [(100, 1.0, 10), (1500, 3e-3, 75), (7, 0.5, 1)]
    for steps, peak, warmup in cases:
        for step in sorted({0, warmup - 1, warmup, steps // 2, steps - 1}):
            got = torch.tensor(float(fn(step, steps, peak, warmup)), dtype=torch.float64)
            want = torch.tensor(learning_rate(step, steps, peak, warmup), dtype=torch.float64)
            worst = max(worst, compare(f"steps={steps}, warmup={warmup}, step {step}", got, want, tol=1e-9 * peak))
    return worst, len(cases)


# Chapter 13: the same model in transformers


@exercise
def hf_names(fn: Callable) -> tuple[float | None, int]:
    """fn(meta_key) -> the name of the same tensor in LlamaForCausalLM's state dict."""
    from .hf import hf_key

    keys = list(expected_shapes(ModelConfig(dim=32, n_layers=12, n_heads=4, n_kv_heads=2, vocab_size=64)))
    for key in keys:
        equal(key, fn(key), hf_key(key))
    return None, len(keys)


@exercise
def rotate_half_rows(fn: Callable) -> tuple[float | None, int]:
    """fn(w (n_heads * head_dim, d), n_heads) -> the rows reordered from interleaved RoPE pairs
    (2i, 2i+1) to rotate-half pairs (i, i + head_dim/2), within each head."""
    from .hf import permute_for_rotate_half

    gen = _gen(19)
    cases = {"8 heads of 16 (wq)": (8, 16, 32), "2 heads of 16 (wk)": (2, 16, 32), "1 head of 4": (1, 4, 3)}
    for case, (heads, hd, d) in cases.items():
        w = torch.randn(heads * hd, d, generator=gen)
        got = torch.as_tensor(fn(w.clone(), heads))
        if got.shape != w.shape:
            raise AssertionError(f"{case}: shape {tuple(got.shape)}, expected {tuple(w.shape)}")
        want = permute_for_rotate_half(w, heads)
        for row in range(w.shape[0]):
            if not torch.equal(got[row], want[row]):
                source = int((w == want[row]).all(-1).nonzero()[0])
                raise AssertionError(f"{case}: row {row} should be the original row {source}")
    return None, len(cases)


@exercise
def llama_config_fields(fn: Callable) -> tuple[float | None, int]:
    """fn(params: dict from params.json) -> {LlamaConfig field: value} for hidden_size,
    intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim,
    rms_norm_eps, vocab_size and rope_theta."""
    from .hf import hf_config

    cases = {
        "Llama-3.2-1B": {"dim": 2048, "n_layers": 16, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256,
                         "ffn_dim_multiplier": 1.5, "multiple_of": 256, "norm_eps": 1e-5, "rope_theta": 500000.0},
        "Llama-3.2-3B": {"dim": 3072, "n_layers": 28, "n_heads": 24, "n_kv_heads": 8, "vocab_size": 128256,
                         "ffn_dim_multiplier": 1.0, "multiple_of": 256, "norm_eps": 1e-5, "rope_theta": 500000.0},
        "Llama-3.1-8B": {"dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256,
                         "ffn_dim_multiplier": 1.3, "multiple_of": 1024, "norm_eps": 1e-5, "rope_theta": 500000.0},
    }  # fmt: skip
    fields = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "rms_norm_eps", "vocab_size"]  # fmt: skip
    for case, params in cases.items():
        got = fn(dict(params))
        want = hf_config(ModelConfig.from_params(params))
        for field in fields:
            equal(f"{case}: {field}", got.get(field), getattr(want, field))
        equal(f"{case}: rope_theta", got.get("rope_theta"), want.rope_parameters["rope_theta"])
    return None, len(cases)
