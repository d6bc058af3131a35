"""Each building block against an independent computation: PyTorch kernels and algebraic identities."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import float32_tolerance, logit_tolerance
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.attention import attention, causal_mask, repeat_kv, scaled_dot_product
from helpers.checkpoint import random_state_dict
from helpers.config import ModelConfig, llama_3_2_1b_config
from helpers.feed_forward import feed_forward
from helpers.model import check_tokens, embed, forward, transformer_block
from helpers.rmsnorm import rms_norm
from helpers.rope import apply_rotary_emb, precompute_freqs_cis, rope_frequencies, scale_frequencies

g = torch.Generator().manual_seed(0)


def test_rms_norm_matches_torch():
    x = torch.randn(5, 7, 64, generator=g) * 3
    w = torch.randn(64, generator=g)
    want = F.rms_norm(x, (64,), w, 1e-5)
    tol = float32_tolerance(64, float(want.abs().max()))  # a mean of 64 squares, then a scaling
    torch.testing.assert_close(rms_norm(x, w, 1e-5), want, rtol=0, atol=tol)
    y = rms_norm(x, torch.ones(64), 1e-5)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(5, 7), rtol=0, atol=float32_tolerance(2 * 64, 1.0))


def test_rms_norm_bf16_keeps_dtype_and_normalizes_in_float32():
    x = (torch.randn(3, 32, generator=g) * 40).bfloat16()
    w = torch.randn(32, generator=g).bfloat16()
    got = rms_norm(x, w)
    assert got.dtype == torch.bfloat16
    # the float32 result, rounded to bfloat16 once before and once after the gain: within 2 bf16 steps
    want = F.rms_norm(x.float(), (32,), None, 1e-5) * w.float()
    torch.testing.assert_close(got.float(), want, rtol=2 * 2**-8, atol=0)


def test_feed_forward_is_swiglu():
    x = torch.randn(4, 16, generator=g)
    w1, w3, w2 = torch.randn(40, 16, generator=g), torch.randn(40, 16, generator=g), torch.randn(16, 40, generator=g)
    gate = x @ w1.T
    expected = ((gate * torch.sigmoid(gate)) * (x @ w3.T)) @ w2.T
    torch.testing.assert_close(feed_forward(x, w1, w2, w3), expected)


def test_causal_mask():
    m = causal_mask(3, 3)
    assert torch.equal(m == 0, torch.tril(torch.ones(3, 3, dtype=torch.bool)))
    # two new queries after three cached keys: query 0 is position 3, sees keys 0..3
    m = causal_mask(2, 5)
    assert torch.equal(m == 0, torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))


def test_repeat_kv_groups_consecutive_query_heads():
    kv = torch.arange(2.0).view(2, 1, 1).expand(2, 3, 4)  # two KV heads, values 0 and 1
    rep = repeat_kv(kv, 4)
    assert rep.shape == (8, 3, 4)
    assert rep[:4].eq(0).all() and rep[4:].eq(1).all()


@pytest.mark.parametrize("n_heads, n_kv", [(8, 2), (4, 1), (4, 4)])
def test_attention_core_matches_sdpa(n_heads, n_kv):
    q = torch.randn(2, n_heads, 9, 16, generator=g)
    k, v = torch.randn(2, n_kv, 9, 16, generator=g), torch.randn(2, n_kv, 9, 16, generator=g)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    tol = float32_tolerance(16 + 9, float(v.abs().max()))  # a score (hd = 16 terms), a weighted mean of 9 values
    torch.testing.assert_close(scaled_dot_product(q, k, v), expected, rtol=0, atol=tol)


def test_per_head_equals_all_heads_at_once():
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=50, multiple_of=16)
    sd = random_state_dict(cfg, std=0.3)
    x = torch.randn(6, 32, generator=g)
    freqs = precompute_freqs_cis(cfg, 6)
    full = attention(x, sd, 0, cfg, freqs)
    wq, wk, wv, wo = (sd[f"layers.0.attention.{n}.weight"] for n in ("wq", "wk", "wv", "wo"))
    hd, outs = cfg.head_dim, []
    for h in range(cfg.n_heads):
        kv = h // cfg.n_rep
        q = (x @ wq[h * hd : (h + 1) * hd].T).view(6, 1, hd)
        k = (x @ wk[kv * hd : (kv + 1) * hd].T).view(6, 1, hd)
        q, k = apply_rotary_emb(q, k, freqs)
        scores = q[:, 0] @ k[:, 0].T / math.sqrt(hd) + causal_mask(6, 6)
        outs.append(torch.softmax(scores, -1) @ (x @ wv[kv * hd : (kv + 1) * hd].T))
    heads = torch.cat(outs, -1)
    tol = float32_tolerance(32 + hd + 6 + 32, float((heads.abs() @ wo.abs().T).max()))  # q/k/v, score, mean, W^O
    torch.testing.assert_close(full, heads @ wo.T, rtol=0, atol=tol)


def test_embedding_is_one_hot_matmul():
    table = torch.randn(20, 8, generator=g)
    tokens = torch.tensor([3, 0, 19, 3])
    one_hot = F.one_hot(tokens, 20).float()
    torch.testing.assert_close(embed(tokens, {"tok_embeddings.weight": table}), one_hot @ table)


def test_rope_frequency_bands_of_llama_3_2():
    cfg = llama_3_2_1b_config()
    base = rope_frequencies(cfg.head_dim, cfg.rope_theta)
    scaled = scale_frequencies(base, 32.0)
    wavelen = 2 * math.pi / base
    assert torch.equal(scaled[wavelen < 8192 / 4], base[wavelen < 8192 / 4])
    torch.testing.assert_close(scaled[wavelen > 8192], base[wavelen > 8192] / 32)
    changed32 = int((scaled != base).sum())
    changed8 = int((scale_frequencies(base, 8.0) != scaled).sum())
    assert changed32 == changed8 == 17, "factor 32 vs 8 differ in 17 of the 32 frequency pairs"
    mid = (wavelen >= 8192 / 4) & (wavelen <= 8192)
    assert ((scaled[mid] < base[mid]) & (scaled[mid] > base[mid] / 32)).all()


@settings(max_examples=60, deadline=None)
@given(
    pos=st.integers(0, 4000),
    n_heads=st.sampled_from([1, 2, 4]),
    scaled=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_rope_preserves_norm(pos, n_heads, scaled, seed):
    cfg = ModelConfig(dim=32 * n_heads, n_layers=1, n_heads=n_heads, n_kv_heads=1, vocab_size=2, use_scaled_rope=scaled)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n_heads, cfg.head_dim, generator=gen)
    freqs = precompute_freqs_cis(cfg, pos + 1)[pos : pos + 1]
    rq, _ = apply_rotary_emb(x, x[:, :1], freqs)
    # a rotation (two products and a sum per pair) and a norm over head_dim squares
    torch.testing.assert_close(rq.norm(dim=-1), x.norm(dim=-1), rtol=float32_tolerance(cfg.head_dim + 2, 1.0), atol=0)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(0, 1000), n=st.integers(0, 1000), shift=st.integers(0, 1000), seed=st.integers(0, 2**16))
def test_rope_relative_position(m, n, shift, seed):
    """Remark 2.9: <R_m q, R_n k> depends only on m - n."""
    cfg = llama_3_2_1b_config()
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(1, 1, 64, generator=gen), torch.randn(1, 1, 64, generator=gen)
    freqs = precompute_freqs_cis(cfg, 2001)

    def dot(a, b):
        rq, _ = apply_rotary_emb(q, q, freqs[a : a + 1])
        _, rk = apply_rotary_emb(k, k, freqs[b : b + 1])
        return (rq * rk).sum()

    # float32 angles at positions ~2000 carry ~1e-4 rad of rounding; a position-dependent
    # score would differ by O(|q||k|), far above this bound
    bound = 2e-4 * float(q.norm() * k.norm())
    assert abs(dot(m, n) - dot(m + shift, n + shift)) <= bound


def test_rope_equals_rotation_matrices():
    cfg = ModelConfig(dim=8, n_layers=1, n_heads=1, n_kv_heads=1, vocab_size=2, rope_theta=10000.0)
    x = torch.randn(5, 1, 8, generator=g)
    freqs = precompute_freqs_cis(cfg, 5)
    rotated, _ = apply_rotary_emb(x, x, freqs)
    angles = freqs.angle()
    for m in range(5):
        for i in range(4):
            c, s = math.cos(angles[m, i]), math.sin(angles[m, i])
            a, b = x[m, 0, 2 * i], x[m, 0, 2 * i + 1]
            torch.testing.assert_close(rotated[m, 0, 2 * i : 2 * i + 2], torch.stack([c * a - s * b, s * a + c * b]))


def test_block_and_forward_batch_equals_single():
    cfg = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, multiple_of=16)
    sd = random_state_dict(cfg, std=0.2)
    tokens = torch.randint(0, 50, (3, 7), generator=g)
    batched = forward(tokens, sd, cfg)
    for b in range(3):
        tol = logit_tolerance(tokens[b], sd, cfg)  # batched products may sum in another order
        torch.testing.assert_close(batched[b], forward(tokens[b], sd, cfg), rtol=0, atol=tol)
    x = embed(tokens[0], sd)
    y = transformer_block(x, sd, 0, cfg, precompute_freqs_cis(cfg, 7))
    assert y.shape == x.shape and not torch.allclose(x, y)


def test_forward_is_differentiable():
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=50, multiple_of=16)
    sd = {k: v.clone().requires_grad_() for k, v in random_state_dict(cfg).items() if k != "output.weight"}
    sd["output.weight"] = sd["tok_embeddings.weight"]
    forward(torch.tensor([1, 2, 3]), sd, cfg).logsumexp(-1).sum().backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in sd.values())


@pytest.mark.parametrize(
    "tokens, message",
    [
        (torch.tensor([], dtype=torch.long), "N >= 1"),
        (torch.tensor([1.0, 2.0]), "must be integers"),
        (torch.tensor([1, 50]), "token id 50 is outside the vocabulary 0..49"),
        (torch.tensor([-1, 2]), "token id -1 is outside"),
        (torch.zeros(2, 2, 2, dtype=torch.long), "shape"),
    ],
)
def test_bad_tokens(tokens, message):
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=50, multiple_of=16)
    with pytest.raises(ValueError, match=message):
        check_tokens(tokens, cfg)


def test_prompt_longer_than_context():
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=50, multiple_of=16, max_seq_len=8)
    with pytest.raises(ValueError, match="exceed the context of 8"):
        forward(torch.zeros(9, dtype=torch.long), random_state_dict(cfg), cfg)
