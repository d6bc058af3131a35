"""The wrong answers each exercise check must reject, and correct alternatives it must accept.

Every entry of WRONG is (a plausible wrong answer, a piece of the message that names the failing
case). They are the mistakes students make: off-by-one masks and nuclei, the wrong pairing of RoPE
or of GQA heads, L2 regularisation for AdamW, ties rounded the wrong way, a missing guard for a row
of zeros. ALTERNATIVES are other correct ways to write the same thing.
"""

from __future__ import annotations

import importlib.util
import math
import random as random_module
import struct
from collections import Counter
from itertools import pairwise
from pathlib import Path

import torch
import torch.nn.functional as F

from helpers.attention import attention
from helpers.check.ch01_tokenizer import _merge
from helpers.feed_forward import feed_forward
from helpers.hf import unpermute_from_rotate_half
from helpers.kv_cache import KVCache
from helpers.model import embed, forward, transformer_block
from helpers.quantize import NF4_LEVELS, quantize
from helpers.rmsnorm import rms_norm
from helpers.rope import apply_rotary_emb, precompute_freqs_cis
from helpers.sampling import top_k_filter

SOLUTIONS = Path(__file__).resolve().parent.parent / "notebooks" / "solutions"


def solutions() -> dict:
    """check name -> (the check, the solution function), from every notebooks/solutions/NN_*.py."""
    found = {}
    for path in sorted(SOLUTIONS.glob("[0-9][0-9]_*.py")):
        spec = importlib.util.spec_from_file_location(f"solutions_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for checker, fn in module.EXERCISES:
            found[checker.__name__] = (checker, fn)
    return found


def solution(name: str):
    return solutions()[name][1]


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
    return solution("llama_config_fields")(params | {"ffn_dim_multiplier": None})


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


# chapter 01
def highest_rank_bpe(word, ranks):  # merges the *highest*-rank pair first
    parts = [bytes([b]) for b in word]
    while len(parts) > 1:
        ranked = [(ranks[a + b], i) for i, (a, b) in enumerate(pairwise(parts)) if a + b in ranks]
        if not ranked:
            break
        _, i = max(ranked)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[p] for p in parts]


def longest_match_bpe(word, ranks):  # greedy longest known prefix: WordPiece, not BPE
    out, i = [], 0
    while i < len(word):
        j = len(word)
        while j > i + 1 and word[i:j] not in ranks:
            j -= 1
        out.append(ranks[word[i:j]])
        i = j
    return out


def distinct_word_merges(words, n):  # a repeated word counted once
    return solution("bpe_merges")(sorted(set(words)), n)


def presence_merges(words, n):  # a pair counted once per word, not per occurrence
    split, out = [list(w) for w in words], []
    for _ in range(n):
        pair = Counter(p for w in split for p in set(pairwise(w))).most_common(1)[0][0]
        out.append(pair)
        split = [_merge(w, pair) for w in split]
    return out


# chapter 02
def nearest_with_zero_rows(table, token_id, k):
    norms = table.norm(dim=-1)
    return torch.topk((table @ table[token_id]) / (norms * norms[token_id]).clamp_min(1e-12), k).indices.tolist()


def nearest_without_itself(table, token_id, k):
    norms = table.norm(dim=-1)
    cos = ((table @ table[token_id]) / (norms * norms[token_id]).clamp_min(1e-12)).masked_fill(norms == 0, -2.0)
    cos[token_id] = -3.0
    return torch.topk(cos, k).indices.tolist()


# chapter 03
def layer_norm(x, w, eps):  # subtracts the mean: LayerNorm, not RMSNorm
    x32 = x.float() - x.float().mean(-1, keepdim=True)
    return (x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * w


def only_block_norms(sd):  # forgets the final norm
    return sum(t.numel() for name, t in sd.items() if name.endswith("norm.weight") and name.startswith("layers"))


# chapter 04
def _causal(q, k, v, repeat, scale=True, diagonal_masked=False):
    n_rep = q.shape[0] // k.shape[0]
    k, v = repeat(k, n_rep), repeat(v, n_rep)
    scores = q @ k.transpose(-1, -2) / (math.sqrt(q.shape[-1]) if scale else 1.0)
    n = q.shape[1]
    mask = torch.ones(n, n, dtype=torch.bool).triu(0 if diagonal_masked else 1)
    mask[0, 0] = False  # the first query must see something
    return torch.softmax(scores.masked_fill(mask, float("-inf")), -1) @ v


def interleave(t, n):
    return t.repeat_interleave(n, 0)


def tile(t, n):  # query head h reads KV head h % G
    return t.repeat(n, 1, 1)


def unmasked_per_head(x, wq, wk, wv, wo, h, g):
    n, d = x.shape
    hd = d // h
    heads = []
    for i in range(h):
        j = i // (h // g)
        q, k, v = x @ wq[i * hd : (i + 1) * hd].T, x @ wk[j * hd : (j + 1) * hd].T, x @ wv[j * hd : (j + 1) * hd].T
        heads.append(torch.softmax(q @ k.T / math.sqrt(hd), -1) @ v)
    return torch.cat(heads, -1) @ wo.T


# chapter 05
def rotate_half_rope(x, freqs_cis):  # pairs (i, i + hd/2), transformers' layout, on Meta's rows
    cos, sin = freqs_cis.real[:, None, :], freqs_cis.imag[:, None, :]
    a, b = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)


def hard_threshold_scaling(freqs, factor):  # no smooth band between the two wavelengths
    return torch.where(2 * math.pi / freqs > 8192 / 2.5, freqs / factor, freqs)


def angles_in_0_2pi(a, b):
    return torch.remainder(torch.atan2(b[1::2], b[0::2]) - torch.atan2(a[1::2], a[0::2]), 2 * math.pi)


# chapter 06
def _ffn(sd, p):
    return [sd[p + f"feed_forward.{w}.weight"] for w in ("w1", "w2", "w3")]


def post_norm_block(x, sd, layer, cfg, freqs):  # the original transformer's order
    p = f"layers.{layer}."
    h = rms_norm(x + attention(x, sd, layer, cfg, freqs), sd[p + "attention_norm.weight"], cfg.norm_eps)
    return rms_norm(h + feed_forward(h, *_ffn(sd, p)), sd[p + "ffn_norm.weight"], cfg.norm_eps)


def block_without_ffn_residual(x, sd, layer, cfg, freqs):
    p = f"layers.{layer}."
    h = x + attention(rms_norm(x, sd[p + "attention_norm.weight"], cfg.norm_eps), sd, layer, cfg, freqs)
    return feed_forward(rms_norm(h, sd[p + "ffn_norm.weight"], cfg.norm_eps), *_ffn(sd, p))


def block_one_norm(x, sd, layer, cfg, freqs):  # attention_norm's gain used twice
    p = f"layers.{layer}."
    h = x + attention(rms_norm(x, sd[p + "attention_norm.weight"], cfg.norm_eps), sd, layer, cfg, freqs)
    return h + feed_forward(rms_norm(h, sd[p + "attention_norm.weight"], cfg.norm_eps), *_ffn(sd, p))


# chapter 07
def skip_without_final_norm(tokens, sd, cfg, skip):
    freqs, h = precompute_freqs_cis(cfg, len(tokens)), embed(tokens, sd)
    for layer in range(cfg.n_layers):
        if layer != skip:
            h = transformer_block(h, sd, layer, cfg, freqs)
    return h @ sd["output.weight"].T


def lens_rank_without_norm(states, sd, cfg, token_id):
    ranks = []
    for state in states:
        z = state[-1] @ sd["output.weight"].T
        ranks.append(int((z > z[token_id]).sum()))
    return ranks


# chapter 08
def _nucleus(logits, p, keep):
    order = torch.argsort(logits, descending=True)
    probs = torch.softmax(logits[order], -1)
    kept = keep(torch.cumsum(probs, -1), probs)
    kept[0] = True
    mask = torch.zeros_like(kept)
    mask[order] = kept
    return torch.where(mask, logits, float("-inf"))


def exactly_k(logits, k):  # the k largest by index: ties at the k-th value broken arbitrarily
    out = torch.full_like(logits, float("-inf"))
    i = torch.topk(logits, min(k, len(logits))).indices
    out[i] = logits[i]
    return out


# chapter 09
def prefill_at_position_0(tokens, sd, cfg, chunk):  # every chunk written at the start of the cache
    cache, freqs = KVCache(cfg, len(tokens)), precompute_freqs_cis(cfg, len(tokens))
    return torch.cat([forward(tokens[s : s + chunk], sd, cfg, freqs, cache, 0) for s in range(0, len(tokens), chunk)])


def prefill_fresh_cache(tokens, sd, cfg, chunk):  # each chunk forgets the ones before
    freqs = precompute_freqs_cis(cfg, len(tokens))
    return torch.cat(
        [
            forward(tokens[s : s + chunk], sd, cfg, freqs, KVCache(cfg, len(tokens)), s)
            for s in range(0, len(tokens), chunk)
        ]
    )


def _element(dtype):
    return torch.empty((), dtype=dtype).element_size()


# chapter 10
def int8_no_zero_guard(w):  # 0 / 0 = NaN for an all-zero row, hidden by the cast to int8
    w = w.float()
    scales = w.abs().amax(1) / 127
    return torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8), scales


def int8_truncated(w):
    w = w.float()
    scales = w.abs().amax(1) / 127
    return torch.trunc(w / scales.clamp(min=1e-30)[:, None]).to(torch.int8), scales


def int8_signed_max(w):  # the largest value, not the largest magnitude
    w = w.float()
    scales = w.amax(1) / 127
    return torch.round(w / scales.clamp(min=1e-30)[:, None]).clamp(-127, 127).to(torch.int8), scales


def int8_by_reciprocal(w):  # correct: multiply by 127 / absmax (an exact tie may round the other way)
    w = w.float()
    absmax = w.abs().amax(1)
    inverse = torch.where(absmax > 0, 127 / absmax, torch.zeros_like(absmax))
    return torch.round(w * inverse[:, None]).clamp(-127, 127).to(torch.int8), absmax / 127


MIDPOINTS = (NF4_LEVELS[:-1] + NF4_LEVELS[1:]) / 2


def nf4_ties_up(block):
    absmax = block.abs().max()
    return torch.bucketize(block / absmax.clamp(min=1e-38), MIDPOINTS, right=True), float(absmax)


def nf4_signed_max(block):
    scale = block.max()
    return torch.bucketize((block / scale.clamp(min=1e-38)).clamp(-1, 1), MIDPOINTS), float(block.abs().max())


def nf4_by_distance(block):  # correct: the nearest level; argmin takes the lower of two equal distances
    absmax = block.abs().max()
    scaled = block / absmax if absmax > 0 else block
    return (scaled[:, None] - NF4_LEVELS[None]).abs().argmin(-1), float(absmax)


def relative_block_errors(w):
    return ((quantize(w, "int4").dequantize() - w) / w.abs().clamp(min=1e-9)).reshape(-1, 64).abs().amax(-1)


def block_errors_per_row(w):  # correct: (rows, blocks per row), the same blocks in the same order
    return (quantize(w, "int4").dequantize() - w).reshape(w.shape[0], -1, 64).abs().amax(-1)


# chapter 12
def sigmoid_route(logits, k):
    top, experts = torch.topk(logits.float(), k, -1)
    return torch.sigmoid(top), experts


def route_by_expert_index(logits, k):  # correct: the same pairs, listed by expert number
    top, experts = torch.topk(logits.float(), k, -1)
    experts, order = experts.sort(-1)
    return torch.softmax(top, -1).gather(-1, order), experts


# chapter 11
def adam_with_l2(theta, grad, m, v, step, lr, betas, eps, weight_decay):  # Adam + L2, not AdamW
    return solution("adamw_step")(theta, grad + weight_decay * theta, m, v, step, lr, betas, eps, 0.0)


def adam_without_bias_correction(theta, grad, m, v, step, lr, betas, eps, weight_decay):
    b1, b2 = betas
    m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad * grad
    return theta * (1 - lr * weight_decay) - lr * m / (v.sqrt() + eps), m, v


def adam_decay_after_the_step(theta, grad, m, v, step, lr, betas, eps, weight_decay):
    theta, m, v = solution("adamw_step")(theta, grad, m, v, step, lr, betas, eps, 0.0)
    return theta * (1 - lr * weight_decay), m, v


def adam_eps_inside_the_root(theta, grad, m, v, step, lr, betas, eps, weight_decay):
    b1, b2 = betas
    m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad * grad
    update = (m / (1 - b1**step)) / (v / (1 - b2**step) + eps).sqrt()
    return theta * (1 - lr * weight_decay) - lr * update, m, v


def lr_warmup_from_zero(step, steps, peak, warmup):
    return peak * step / warmup if step < warmup else solution("lr_schedule")(step, steps, peak, warmup)


def lr_cosine_to_zero(step, steps, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def lr_floor_at_last_step(step, steps, peak, warmup):  # p = 1 at step steps - 1: not the formula given
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - 1 - warmup))))


# chapter 13
def _swap(text, a, b):
    return text.replace(a, "\0").replace(b, a).replace("\0", b)


def nearest_multiple_config(params):  # the SwiGLU size rounded to the nearest multiple, not up
    fields = solution("llama_config_fields")(params)
    hidden = int(8 * params["dim"] / 3)
    if params.get("ffn_dim_multiplier") is not None:
        hidden = int(params["ffn_dim_multiplier"] * hidden)
    return fields | {"intermediate_size": params["multiple_of"] * round(hidden / params["multiple_of"])}


def config_needing_every_key(params):
    return solution("llama_config_fields")(params) | {"num_key_value_heads": params["n_kv_heads"]}


# chapter 14
def big_endian_q8_0(raw, shape):
    blocks = range(0, len(raw), 34)
    codes = [torch.frombuffer(bytearray(raw[i + 2 : i + 34]), dtype=torch.int8).float() for i in blocks]
    return torch.cat([struct.unpack(">e", raw[i : i + 2])[0] * c for i, c in zip(blocks, codes, strict=True)]).reshape(
        shape
    )


def _q4_1(raw, shape, with_minimum=True, high_first=False, minimum_sign=1.0):
    out = []
    for start in range(0, len(raw), 20):
        scale, minimum = struct.unpack("<ee", raw[start : start + 4])
        packed = torch.tensor(list(raw[start + 4 : start + 20]))
        low, high = packed % 16, packed // 16
        codes = torch.cat([high, low] if high_first else [low, high]).float()
        out.append(scale * codes + (minimum_sign * minimum if with_minimum else 0.0))
    return torch.cat(out).reshape(shape)


def chatml_without_newline(tok, messages):  # no "\n" after <|im_end|>
    start, end = tok.special_tokens["<|im_start|>"], tok.special_tokens["<|im_end|>"]
    ids = []
    for m in messages:
        ids += [start] + tok.encode(m["role"] + "\n" + m["content"], bos=False) + [end]
    return ids + [start] + tok.encode("assistant\n", bos=False)


def chatml_without_the_assistant_turn(tok, messages):
    return solution("chatml")(tok, messages)[: -len(tok.encode("assistant\n", bos=False)) - 1]


def chatml_with_the_default_system(tok, messages):  # SmolLM2's template's system message, asked not to add
    system = [{"role": "system", "content": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"}]
    return solution("chatml")(tok, messages if messages[0]["role"] == "system" else system + messages)


def chatml_pieces(tok, messages):  # correct: the role, the newline and the content encoded one by one
    start, end = tok.special_tokens["<|im_start|>"], tok.special_tokens["<|im_end|>"]
    ids = []
    for m in messages:
        ids += [start, *tok.encode(m["role"], bos=False), *tok.encode("\n", bos=False)]
        ids += [*tok.encode(m["content"], bos=False), end, *tok.encode("\n", bos=False)]
    return [*ids, start, *tok.encode("assistant", bos=False), *tok.encode("\n", bos=False)]


def q8_0_float32_scale(raw, shape):  # the scale read as float32 ("<f"): 4 bytes, two of them codes
    out = []
    for i in range(0, len(raw), 34):
        (scale,) = struct.unpack("<f", raw[i : i + 4])
        out.append(scale * torch.frombuffer(bytearray(raw[i + 2 : i + 34]), dtype=torch.int8).float())
    return torch.cat(out).reshape(shape)


def q8_0_numpy(raw, shape):  # correct: a structured NumPy view, one record per block
    import numpy as np

    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("q", "i1", 32)]))
    values = blocks["d"].astype(np.float32)[:, None] * blocks["q"].astype(np.float32)
    return torch.from_numpy(values.reshape(shape).copy())


def q4_1_numpy(raw, shape):  # correct: both nibbles of all blocks at once
    import numpy as np

    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("m", "<f2"), ("q", "u1", 16)]))
    codes = np.concatenate([blocks["q"] & 0x0F, blocks["q"] >> 4], axis=1).astype(np.float32)
    d, m = blocks["d"].astype(np.float32)[:, None], blocks["m"].astype(np.float32)[:, None]
    return torch.from_numpy((d * codes + m).reshape(shape).copy())


def params_kv_heads_required(metadata):  # head_count_kv read as if every file had it
    return solution("params_json")(metadata) | {"n_kv_heads": metadata["llama.attention.head_count_kv"]}


def params_vocab_required(metadata):  # llama.vocab_size read as if every file had it
    return solution("params_json")(metadata) | {"vocab_size": metadata["llama.vocab_size"]}


def params_without_multiplier(metadata):  # Meta's formula from dim alone: right only when it needs no multiplier
    return solution("params_json")(metadata) | {"ffn_dim_multiplier": None}


def params_multiplier_of_dim(metadata):  # feed_forward_length / dim: a multiplier of d, not of int(8d / 3)
    size, dim = metadata["llama.feed_forward_length"], metadata["llama.embedding_length"]
    return solution("params_json")(metadata) | {"ffn_dim_multiplier": size / dim}


def params_every_kv_head(metadata):  # n_kv_heads = n_heads: GQA forgotten
    answer = solution("params_json")(metadata)
    return answer | {"n_kv_heads": answer["n_heads"]}


def params_always_a_multiplier(metadata):  # correct: size / (8d / 3) always, and epsilon as float32 stored it
    size, dim = metadata["llama.feed_forward_length"], metadata["llama.embedding_length"]
    answer = solution("params_json")(metadata)
    eps = metadata["llama.attention.layer_norm_rms_epsilon"]
    return answer | {"ffn_dim_multiplier": size / (8 * dim / 3), "norm_eps": eps}


FIRST = {
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
    "chatml": (chatml_as_text, "one user message: 33 ids, expected 16; first difference at index 0"),
    "params_json": (params_kv_heads_required, "Llama-2-7B (no head_count_kv): your function raised KeyError"),
    "tokens_that_fit": (lambda cfg, b, dtype: b // (2 * cfg.n_layers * cfg.n_heads * cfg.head_dim * 2), "8 KV heads"),
}


MORE = {
    "bpe": [(highest_rank_bpe, "' capital': got"), (longest_match_bpe, "' Ouagadougou': got")],
    "bpe_merges": [
        (distinct_word_merges, "merge 1: 'u'+'n' occurs 2x"),
        (presence_merges, "'x'+'y' occurs 3x, but n+a"),
    ],
    "digit_chunks": [(lambda s: [s[i : i + 3] for i in range(0, len(s) - 2, 3)], "'7': got []")],
    "embedding": [(lambda t, table: F.one_hot(t, table.shape[0]).float() @ table.float(), "bfloat16: dtype")],
    "nearest": [(nearest_with_zero_rows, "zero rows must not appear"), (nearest_without_itself, "case 0")],
    "table_bytes": [(lambda v, d, bits: v * d * 2, "at 4 bits")],
    "rms_norm": [
        (layer_norm, "x of shape"),
        (lambda x, w, eps: solution("rms_norm")(x, torch.ones_like(w), eps), "eps"),
    ],
    "eps_after_scaling": [(lambda eps, c: eps / c, "scale c = 0.01"), (lambda eps, c: eps * c**2, "scale c = 1000.0")],
    "norm_parameters": [(only_block_norms, "2 layers")],
    "causal_attention": [
        (lambda q, k, v: _causal(q, k, v, interleave, scale=False), "H=4, G=4"),
        (lambda q, k, v: _causal(q, k, v, tile), "H=8, G=2"),
        (lambda q, k, v: _causal(q, k, v, interleave, diagonal_masked=True), "H=4, G=4"),
    ],
    "attention_parameters": [(lambda d, h, g: 2 * d * d + 2 * d * g, "G=8")],
    "per_head_attention": [(unmasked_per_head, "H=4, G=2")],
    "rope": [(rotate_half_rope, "N=6")],
    "rope_scaling": [(hard_threshold_scaling, "factor 8")],
    "turn_angles": [(angles_in_0_2pi, "positions")],
    "feed_forward": [
        (lambda x, w1, w2, w3: (F.silu(x @ w3.T) * (x @ w1.T)) @ w2.T, "N=3"),  # the gate on W3
        (lambda x, w1, w2, w3: (F.gelu(x @ w1.T) * (x @ w3.T)) @ w2.T, "N=3"),
    ],
    "block": [(post_norm_block, "layer 0"), (block_without_ffn_residual, "layer 0"), (block_one_norm, "layer 0")],
    "block_parameters": [
        (
            lambda cfg: {
                "attention": 4 * cfg.dim**2,
                "feed_forward": 3 * cfg.dim * cfg.ffn_hidden_dim,
                "norms": 2 * cfg.dim,
            },
            "G=2",
        ),
        (lambda cfg: solution("block_parameters")(cfg) | {"norms": cfg.dim}, "d=32"),
    ],
    "skip_block": [
        (lambda tokens, sd, cfg, skip: solution("skip_block")(tokens, sd, cfg, skip + 1), "block 0 skipped"),
        (skip_without_final_norm, "block 0 skipped"),
    ],
    "consecutive_cosines": [
        (lambda s: torch.stack([F.cosine_similarity(a, b, dim=-1).mean() for a, b in pairwise(s)]), "3 layers"),
        (lambda s: torch.stack([F.cosine_similarity(a[-1], s[-1][-1], dim=0) for a in s[:-1]]), "3 layers"),
    ],
    "lens_rank": [
        (lens_rank_without_norm, "token 3"),
        (lambda s, sd, cfg, t: [r + 1 for r in solution("lens_rank")(s, sd, cfg, t)], "token 3"),
    ],
    "top_k": [
        (
            lambda z, k: z.masked_fill(z <= torch.sort(z, descending=True).values[min(k, len(z)) - 1], float("-inf")),
            "k=1",
        )
    ],
    "top_p": [
        (lambda z, p: _nucleus(z, p, lambda cum, probs: cum < p), "p=0.5"),  # leaves out the token that crosses p
        (lambda z, p: _nucleus(z, p, lambda cum, probs: cum <= p), "p=0.5"),
    ],
    "probability_at_temperature": [(lambda z, t, temp: float(torch.softmax(z.double() * temp, -1)[t]), "T=2")],
    "prefill_in_chunks": [(prefill_at_position_0, "chunks of 1"), (prefill_fresh_cache, "chunks of 1")],
    "cache_bytes": [
        (lambda cfg, n, dtype: 2 * cfg.n_layers * n * cfg.n_heads * cfg.head_dim * _element(dtype), "10 tokens"),
        (lambda cfg, n, dtype: 2 * cfg.n_layers * n * cfg.n_kv_heads * cfg.head_dim * 2, "torch.float32"),
    ],
    "tokens_that_fit": [
        (lambda cfg, b, dtype: -(-b // solution("cache_bytes")(cfg, 1, dtype)), "10,000 bytes"),  # rounded up
        (lambda cfg, b, dtype: b // (solution("cache_bytes")(cfg, 1, dtype) // cfg.n_layers), "8 KV heads"),
    ],
    "int8_rows": [
        (int8_no_zero_guard, "made a NaN"),
        (int8_truncated, "round to the nearest integer"),
        (int8_signed_max, "scales"),
        (lambda w: tuple(t.to(torch.int16) if t.dtype == torch.int8 else t for t in solution("int8_rows")(w)), "int16"),
    ],
    "nf4_block": [(nf4_ties_up, "goes to the lower one"), (nf4_signed_max, "the largest magnitude negative")],
    "block_errors": [(relative_block_errors, "an outlier and a zero row")],
    "moe_route": [(sigmoid_route, "k=2")],
    "load_balance": [
        (lambda z, k: solution("load_balance")(z, 1), "random logits, k=2"),  # top-1 counts whatever k
        (lambda z, k: solution("load_balance")(z, k) / z.shape[1], "random logits, k=1"),  # without the factor E
    ],
    "experts_touched": [(lambda e, k, b: float(min(e, b * k)), "E=16, k=1")],
    "cross_entropy": [
        (lambda z, y: -torch.log(torch.softmax(z, -1).gather(-1, y[:, None])).mean(), "large logits"),
        (lambda z, y: -torch.log_softmax(z, 0).gather(-1, y[:, None]).mean(), "4 rows, 10 classes"),
    ],
    "adamw_step": [
        (adam_with_l2, "weight decay 0.1"),
        (adam_without_bias_correction, "no weight decay, step 1"),
        (adam_decay_after_the_step, "weight decay 0.1"),
        (adam_eps_inside_the_root, "large eps"),
    ],
    "lr_schedule": [
        (lr_warmup_from_zero, "step 0"),
        (lr_cosine_to_zero, "step 50"),
        (lr_floor_at_last_step, "step 50"),
    ],
    "hf_names": [
        (lambda k: _swap(solution("hf_names")(k), "gate_proj", "up_proj"), "feed_forward.w1.weight"),
        (lambda k: _swap(solution("hf_names")(k), "input_layernorm", "post_attention_layernorm"), "attention_norm"),
    ],
    "rotate_half_rows": [
        (unpermute_from_rotate_half, "row 1 should be the original row 2"),
        (lambda w, h: solution("rotate_half_rows")(w, 1), "row 8 should be the original row 1"),  # not per head
    ],
    "llama_config_fields": [
        (nearest_multiple_config, "Llama-2-13B: intermediate_size: got 13568, expected 13824"),
        (config_needing_every_key, "Llama-2-13B: KeyError 'n_kv_heads'"),
    ],
    "q8_0_blocks": [(big_endian_q8_0, "one block"), (q8_0_float32_scale, "one block")],
    "q4_1_blocks": [
        (lambda raw, shape: _q4_1(raw, shape, with_minimum=False), "one block"),
        (lambda raw, shape: _q4_1(raw, shape, high_first=True), "one block"),
        (lambda raw, shape: _q4_1(raw, shape, minimum_sign=-1.0), "one block"),  # d q - m
    ],
    "chatml": [
        (chatml_without_newline, "one user message"),
        (chatml_without_the_assistant_turn, "one user message"),
        (chatml_with_the_default_system, "one user message: 37 ids, expected 16; first difference at index 1"),
    ],
    "params_json": [
        (params_vocab_required, "TinyLlama-1.1B (no llama.vocab_size): your function raised KeyError"),
        (params_without_multiplier, "Llama-3-8B (its feed-forward needs ffn_dim_multiplier): the feed-forward size"),
        (params_multiplier_of_dim, "SmolLM2-135M: the feed-forward size Meta's formula gives: got 4096"),
        (params_every_kv_head, "SmolLM2-135M: n_kv_heads: got 9, expected 3"),
    ],
}

WRONG = {name: [first, *MORE.get(name, [])] for name, first in FIRST.items()}

# other correct answers, which every check must accept
ALTERNATIVES = {
    "q8_0_blocks": [q8_0_numpy],
    "q4_1_blocks": [q4_1_numpy],
    "chatml": [chatml_pieces],
    "params_json": [params_always_a_multiplier],
    "int8_rows": [int8_by_reciprocal],
    "nf4_block": [nf4_by_distance],
    "block_errors": [block_errors_per_row],
    "top_k": [exactly_k],
    "moe_route": [route_by_expert_index],
    "rope": [
        lambda x, f: torch.view_as_real(
            torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2)) * f[:, None, :]
        ).flatten(-2)
    ],
}


# Chapter 15: measuring a model.
def _whole_sequence_logprob(logprobs, ids, n_context):  # the question's tokens scored too
    return float(sum(logprobs[t, ids[t + 1]] for t in range(len(ids) - 1)))


def _first_token_logprob(logprobs, ids, n_context):  # only the answer's first token
    return float(logprobs[n_context - 1, ids[n_context]])


def _same_row_logprob(logprobs, ids, n_context):  # row t read as predicting token t, not t + 1
    return float(sum(logprobs[t, ids[t]] for t in range(n_context, len(ids) - 1)))


def _best(scores):
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


WRONG.update(
    {
        "continuation_logprob": [
            (_whole_sequence_logprob, "every token after the first: score only the continuation"),
            (_first_token_logprob, "the first continuation token only"),
            (_same_row_logprob, "6 tokens, the first 3 the context"),
        ],
        "acc_bytes": [
            (
                lambda lls, cs: _best([ll / len(c) for ll, c in zip(lls, cs, strict=True)]),
                "['Zürich', 'Berne']: got 1, expected 0",
            ),
            (lambda lls, cs: _best(lls), "['Zürich', 'Berne']: got 1, expected 0"),  # no normalisation
            (
                lambda lls, cs: _best([ll / (len(c.encode()) + 1) for ll, c in zip(lls, cs, strict=True)]),
                "'Tórshavn'",
            ),  # the space
        ],
        "resample": [
            (lambda o, rng: rng.sample(o, len(o)), "a permutation of the data: draw WITH replacement"),
            (lambda o, rng: rng.choices(o, k=len(o) // 2), "expected 20 values, got 10"),
            (lambda o, rng: random_module.Random(0).choices(o, k=len(o)), "draw with the rng given"),
        ],
    }
)
ALTERNATIVES.update(
    {
        "continuation_logprob": [
            lambda lp, ids, n: lp[: -0 or None].gather(1, torch.tensor(ids[1:])[:, None])[n - 1 :].sum().item()
        ],
        "acc_bytes": [
            lambda lls, cs: int(torch.tensor([ll / len(c.encode()) for ll, c in zip(lls, cs, strict=True)]).argmax())
        ],
        "resample": [lambda o, rng: [rng.choice(o) for _ in o]],
    }
)


# Chapter 16: instruction tuning.
def _labels_everywhere(tok, messages):  # the loss over the prompt's tokens too
    from helpers.sft import render_with_labels

    ids, _ = render_with_labels(tok, messages)
    return ids, list(ids)


def _eot_masked(tok, messages):  # the end-of-turn token not trained: the model never learns to stop
    from helpers.sft import render_with_labels

    ids, labels = render_with_labels(tok, messages)
    eot = tok.special_tokens["<|eot_id|>"]
    return ids, [-100 if x == eot else x for x in labels]


def _labels_shifted(tok, messages):  # labels already shifted by one (the loss shifts them again)
    from helpers.sft import render_with_labels

    ids, labels = render_with_labels(tok, messages)
    return ids, labels[1:] + [-100]


def _reply_without_header_newlines(tok, messages):  # the header's "\n\n" trained as part of the reply
    from helpers.sft import render_with_labels

    ids, labels = render_with_labels(tok, messages)
    return ids, [
        x if x != -100 or i + 1 >= len(labels) or labels[i + 1] == -100 else ids[i] for i, x in enumerate(labels)
    ]


WRONG.update(
    {
        "sft_labels": [
            (_labels_everywhere, "is part of the prompt, yet labelled"),
            (_eot_masked, "<|eot_id|> that ends a reply"),
            (_labels_shifted, "shifted by one position"),
            (_reply_without_header_newlines, "is part of the prompt, yet labelled"),
        ],
        "sft_masked_loss": [
            (
                lambda lg, lab: F.cross_entropy(lg.flatten(0, 1), lab.flatten(), ignore_index=-100),
                "shift the logits and labels by one",
            ),
            (
                lambda lg, lab: F.cross_entropy(lg[:, 1:].flatten(0, 1), lab[:, :-1].flatten(), ignore_index=-100),
                "shifted the wrong way",
            ),
            (
                lambda lg, lab: (
                    F.cross_entropy(lg[:, :-1].flatten(0, 1), lab[:, 1:].flatten(), ignore_index=-100, reduction="sum")
                    / lab[:, 1:].numel()
                ),
                "divided by every position",
            ),
            (  # the prompt's positions scored too (their labels taken as the inputs' tokens would be: here 0)
                lambda lg, lab: F.cross_entropy(lg[:, :-1].flatten(0, 1), lab[:, 1:].clamp(min=0).flatten()),
                "batch 1 x 7 positions",
            ),
        ],
    }
)
ALTERNATIVES.update(
    {
        "sft_labels": [
            lambda tok, messages: __import__("helpers.sft", fromlist=["render_with_labels"]).render_with_labels(
                tok, messages
            )
        ],
        "sft_masked_loss": [
            lambda lg, lab: (
                torch.logsumexp(lg[:, :-1], -1) - lg[:, :-1].gather(-1, lab[:, 1:].clamp(min=0)[..., None])[..., 0]
            )[lab[:, 1:] != -100].mean()
        ],
    }
)
