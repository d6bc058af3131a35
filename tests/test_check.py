"""The exercise self-checks: the solutions pass, a plausible wrong answer fails naming its case,
and a stub that still raises NotImplementedError is reported as not written yet."""

from __future__ import annotations

import importlib.util
import math
import re
import struct
from itertools import pairwise
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import check
from helpers.attention import scaled_dot_product
from helpers.check.ch01_tokenizer import _merge
from helpers.model import forward
from helpers.quantize import quantize
from helpers.rope import apply_rotary_emb, scale_frequencies
from helpers.sampling import top_k_filter

SOLUTIONS = Path(__file__).resolve().parent.parent / "notebooks" / "solutions"


def solutions() -> dict:
    """check name -> the solution function, from every notebooks/solutions/NN_*.py."""
    found = {}
    for path in sorted(SOLUTIONS.glob("[0-9][0-9]_*.py")):
        spec = importlib.util.spec_from_file_location(f"solutions_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for checker, fn in module.EXERCISES:
            found[checker.__name__] = (checker, fn)
    return found


def wrong_rms_norm(x, w, eps):  # the write-up's formula: eps outside the square root
    return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * w


def no_mask_attention(q, k, v):
    rep = q.shape[0] // k.shape[0]
    k, v = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1) @ v


def leftmost_first_bpe(word, ranks):  # merges the first mergeable pair instead of the lowest rank
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


def first_pair_merges(words, n):  # always merges the first pair of the first word, frequent or not
    split, out = [list(w) for w in words], []
    for _ in range(n):
        w = next(w for w in split if len(w) > 1)
        out.append((w[0], w[1]))
        split = [_merge(x, (w[0], w[1])) for x in split]
    return out


def wrong_per_head(x, wq, wk, wv, wo, h, g):  # every query head reads KV head h % G (interleaved)
    n, d = x.shape
    hd = d // h
    mask = torch.full((n, n), float("-inf")).triu(1)
    heads = []
    for i in range(h):
        j = i % g
        q, k, v = x @ wq[i * hd : (i + 1) * hd].T, x @ wk[j * hd : (j + 1) * hd].T, x @ wv[j * hd : (j + 1) * hd].T
        heads.append(torch.softmax(q @ k.T / math.sqrt(hd) + mask, -1) @ v)
    return torch.cat(heads, -1) @ wo.T


def forgot_ffn_multiplier(params):  # the solution, but the SwiGLU size without ffn_dim_multiplier
    return solutions()["llama_config_fields"][1](params | {"ffn_dim_multiplier": None})


def interleaved_q4_1(raw, shape):  # reads the two codes of a byte as neighbours (j low, j + 1 high)
    out = []
    for start in range(0, len(raw), 20):
        scale, minimum = struct.unpack("<ee", raw[start : start + 4])
        packed = torch.tensor(list(raw[start + 4 : start + 20]))
        out.append(scale * torch.stack([packed % 16, packed // 16], 1).flatten().float() + minimum)
    return torch.cat(out).reshape(shape)


def unsigned_q8_0(raw, shape):  # the codes read as bytes 0..255 instead of signed -128..127
    scales = [struct.unpack("<e", raw[i : i + 2])[0] for i in range(0, len(raw), 34)]
    codes = [torch.tensor(list(raw[i + 2 : i + 34])).float() for i in range(0, len(raw), 34)]
    return torch.cat([s * c for s, c in zip(scales, codes, strict=True)]).reshape(shape)


def chatml_as_text(tok, messages):  # the control tokens written as text: the tokenizer splits them up
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return tok.encode(text + "<|im_start|>assistant\n", bos=False)


WRONG = {
    "bpe": (leftmost_first_bpe, "' Ouagadougou': got"),
    "bpe_merges": (first_pair_merges, "merge 2: 'low'+'e' occurs 2x, but e+r occurs 3x"),
    "digit_chunks": (lambda s: [s[max(0, i - 3) : i] for i in range(len(s), 0, -3)][::-1], "'1234'"),
    "embedding": (lambda t, table: table[t], "looked up by index"),
    "nearest": (lambda table, t, k: torch.topk(table @ table[t], k).indices.tolist(), "case 0"),
    "table_bytes": (lambda v, d, bits: v * d * bits, "at 16 bits"),
    "rms_norm": (wrong_rms_norm, "eps 0.01"),
    "eps_after_scaling": (lambda eps, c: eps, "eps 1e-05, scale c = 1000.0"),
    "norm_parameters": (lambda sd: sum(t.numel() for t in sd.values() if t.ndim == 1) - 32, "2 layers"),
    "causal_attention": (no_mask_attention, "H=4, G=4, N=5"),
    "attention_parameters": (lambda d, h, g: 4 * d * d, "G=8"),
    "per_head_attention": (wrong_per_head, "H=4, G=2"),
    "rope": (lambda x, f: apply_rotary_emb(x, x, f.conj())[0], "N=6"),
    "rope_scaling": (lambda f, s: f / s, "factor 8"),
    "turn_angles": (lambda a, b: torch.atan2(b[1::2], b[0::2]) - torch.atan2(a[1::2], a[0::2]), "positions"),
    "feed_forward": (lambda x, w1, w2, w3: (torch.relu(x @ w1.T) * (x @ w3.T)) @ w2.T, "N=3"),
    "block": (lambda x, sd, layer, cfg, f: x, "layer 0"),
    "block_parameters": (lambda cfg: {"attention": 4 * cfg.dim**2, "feed_forward": 0, "norms": 0}, "d=32"),
    "skip_block": (lambda tokens, sd, cfg, skip: forward(tokens, sd, cfg), "block 0 skipped"),
    "consecutive_cosines": (lambda s: torch.stack([F.cosine_similarity(a[0], b[0], 0) for a, b in pairwise(s)]), "3"),
    "lens_rank": (lambda s, sd, cfg, t: [0] * len(s), "token 3"),
    "top_k": (lambda z, k: top_k_filter(z, k + 1) if k < 10 else z, "k=1"),
    "top_p": (lambda z, p: z.masked_fill(torch.softmax(z, -1) < (1 - p) / 12, float("-inf")), "p="),
    "probability_at_temperature": (lambda z, t, temp: float(torch.softmax(z / temp, -1)[t]), "T=1e-40"),
    "prefill_in_chunks": (
        lambda tokens, sd, cfg, c: forward(tokens[:c].repeat(len(tokens) // c + 1)[: len(tokens)], sd, cfg),
        "chunks of 1",
    ),
    "cache_bytes": (lambda cfg, n, dtype: n * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 2, "10 tokens"),
    "int8_rows": (
        lambda w: (
            torch.round(w.float() / (w.float().abs().max() / 127)).to(torch.int8),
            w.float().abs().amax(1) / 127,
        ),
        "codes differ",
    ),
    "nf4_block": (
        lambda b: (torch.round((b / b.abs().max().clamp(min=1e-38) + 1) * 7.5).long(), float(b.abs().max())),
        "a normal block",
    ),
    "block_errors": (lambda w: (quantize(w, "int4").dequantize() - w).abs().amax(-1), "shape"),
    "moe_route": (lambda z, k: (torch.topk(torch.softmax(z, -1), k).values, torch.topk(z, k).indices), "k=2"),
    "load_balance": (lambda z, k: z.shape[1] * torch.softmax(z, -1).mean(0).square().sum(), "random logits, k=1"),
    "experts_touched": (lambda e, k, b: e * (1 - (1 - 1 / e) ** (b * k)), "E=8, k=2"),
    "cross_entropy": (lambda z, y: -torch.log_softmax(z, -1).gather(-1, y[:, None]).sum(), "4 rows, 10 classes"),
    "adamw_step": (
        lambda t, g, m, v, s, lr, betas, eps, weight_decay: (
            t - lr * (g / (g.abs() + eps) + weight_decay * t),  # sign descent: no moments
            m,
            v,
        ),
        "no weight decay, step 2",  # at step 1 Adam is sign descent too
    ),
    "lr_schedule": (lambda s, n, peak, w: peak * 0.5 * (1 + math.cos(math.pi * s / n)), "step 0"),
    "hf_names": (
        lambda k: k.replace("attention.wq", "self_attn.q_proj").replace("layers.", "model.layers."),
        "tok_embeddings.weight",
    ),
    "rotate_half_rows": (
        lambda w, h: w.view(h, -1, 2, w.shape[1]).transpose(1, 2).reshape(w.shape[0], w.shape[1]).flip(0),
        "8 heads of 16 (wq): row 0 should be the original row 0",
    ),
    "llama_config_fields": (
        forgot_ffn_multiplier,
        "Llama-3.2-1B: intermediate_size: got 5632, expected 8192",
    ),
    "q8_0_blocks": (unsigned_q8_0, "one block: differs"),
    "q4_1_blocks": (interleaved_q4_1, "one block: differs"),
    "chatml": (chatml_as_text, "one user message: got"),
    "tokens_that_fit": (lambda cfg, b, dtype: b // (2 * cfg.n_layers * cfg.n_heads * cfg.head_dim * 2), "8 KV heads"),
}


def test_every_check_has_a_solution_and_a_wrong_answer():
    names = {name for name, f in vars(check).items() if callable(f) and getattr(f, "__wrapped__", None)}
    assert names == set(solutions()) == set(WRONG)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_check_accepts_the_solution_and_rejects_a_wrong_answer(name, capsys):
    checker, solution = solutions()[name]
    checker.__wrapped__(solution)  # no AssertionError, no NotImplementedError
    checker(solution)
    assert capsys.readouterr().out.startswith(f"✓ {name}: right on all")
    wrong, case = WRONG[name]
    with pytest.raises(AssertionError, match=re.escape(case)):
        checker(wrong)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_stub_is_reported_as_not_written(name, capsys):
    checker, _ = solutions()[name]

    def stub(*args, **kwargs):
        raise NotImplementedError

    assert checker(stub) is None  # a note, not an exception: the notebook's cell runs on
    assert capsys.readouterr().out.startswith(f"… {name}: not written yet")
    with pytest.raises(NotImplementedError):
        checker.__wrapped__(stub)


def test_the_printed_difference_is_measured_not_a_constant(capsys):
    check.causal_attention(lambda q, k, v: scaled_dot_product(q, k, v) + 3e-6)
    out = capsys.readouterr().out
    assert re.search(r"max \|difference\| 3\.[01]e-06", out), out


def test_rope_scaling_check_accepts_the_book_function():
    check.rope_scaling.__wrapped__(scale_frequencies)
