"""Chapter 14: a real model."""

import struct

import torch

from helpers import check


def my_dequantize_q8_0(raw: bytes, shape: tuple[int, ...]) -> torch.Tensor:
    values = []
    for start in range(0, len(raw), 34):  # one block: a float16 scale, then 32 signed bytes
        (scale,) = struct.unpack("<e", raw[start : start + 2])
        codes = torch.frombuffer(bytearray(raw[start + 2 : start + 34]), dtype=torch.int8).float()
        values.append(torch.tensor(scale, dtype=torch.float32) * codes)
    return torch.cat(values).reshape(shape)


def my_dequantize_q4_1(raw: bytes, shape: tuple[int, ...]) -> torch.Tensor:
    values = []
    for start in range(0, len(raw), 20):  # scale, minimum, then 16 bytes of two codes each
        scale, minimum = struct.unpack("<ee", raw[start : start + 4])
        packed = torch.tensor(list(raw[start + 4 : start + 20]))
        codes = torch.cat([packed % 16, packed // 16]).float()  # values 0-15 low, 16-31 high
        values.append(torch.tensor(scale, dtype=torch.float32) * codes + torch.tensor(minimum, dtype=torch.float32))
    return torch.cat(values).reshape(shape)


def my_chatml(tok, messages: list[dict]) -> list[int]:
    start, end = tok.special_tokens["<|im_start|>"], tok.special_tokens["<|im_end|>"]
    ids = []
    for m in messages:
        ids += [start] + tok.encode(m["role"] + "\n" + m["content"], bos=False) + [end] + tok.encode("\n", bos=False)
    return ids + [start] + tok.encode("assistant\n", bos=False)


def my_params_json(metadata: dict) -> dict:
    dim = metadata["llama.embedding_length"]
    heads = metadata["llama.attention.head_count"]
    params = {
        "dim": dim,
        "n_layers": metadata["llama.block_count"],
        "n_heads": heads,
        "n_kv_heads": metadata.get("llama.attention.head_count_kv", heads),  # absent: one per query head
        "vocab_size": metadata.get("llama.vocab_size", len(metadata.get("tokenizer.ggml.tokens", []))),
        "multiple_of": 256,
        "ffn_dim_multiplier": None,
        "norm_eps": round(float(metadata["llama.attention.layer_norm_rms_epsilon"]), 12),  # 1e-05, not float32's
        "rope_theta": float(metadata["llama.rope.freq_base"]),
        "use_scaled_rope": False,
    }
    # Meta's formula: int(8 d / 3), times ffn_dim_multiplier if given, rounded up to a multiple of
    # multiple_of. When that is not the file's size, a multiplier of size / int(8 d / 3) gives it
    # exactly (int() of the product lands on the size, already a multiple of 256 in real models).
    ffn, base = metadata["llama.feed_forward_length"], int(8 * dim / 3)
    if -(-base // 256) * 256 != ffn:
        params["ffn_dim_multiplier"] = ffn / base
    return params


EXERCISES = [
    (check.q8_0_blocks, my_dequantize_q8_0),
    (check.q4_1_blocks, my_dequantize_q4_1),
    (check.chatml, my_chatml),
    (check.params_json, my_params_json),
]

# The answers to the questions the exercises ask in prose (notebooks/solutions/README.md).
ANSWERS = {
    "q8_0_blocks: what must the codes' type be?": (
        "Signed 8-bit integers (torch.int8, struct's 'b'): Q8_0's codes run from -128 to 127. Read as "
        "unsigned bytes (uint8, 'B'), every negative code becomes code + 256 and the value d * q is wrong "
        "by 256 d."
    ),
    "q4_1_blocks: where is value 1 of a block, and where is value 16?": (
        "After the 4 bytes of scale and minimum come 16 bytes; byte j holds value j in its low four bits "
        "and value j + 16 in its high four. Value 1 is the low nibble of byte 1 (the block's 6th byte); "
        "value 16 is the high nibble of byte 0 (the block's 5th byte). Chapter 10's pack_4bit pairs "
        "neighbours instead (values 2i and 2i + 1, the first in the high nibble), so its unpack_4bit "
        "reads a Q4_1 block in the wrong order."
    ),
    "chatml: why must <|im_start|> be an id and not text?": (
        "The model was tuned on conversations in which <|im_start|> is the single control token 1. "
        "Written as text, the tokenizer treats it as ordinary characters and splits it into several "
        "pieces ('<', '|', 'im', '_', 'start', '|', '>'), ids the model never saw mark a turn. And a "
        "tokenizer that did parse control tokens out of text would let a user who types <|im_end|> "
        "end their own turn and write the assistant's (prompt injection): control tokens are added as "
        "ids by the template, user text is always encoded as text."
    ),
    "params_json: no head_count_kv, no vocab_size, and which ffn_dim_multiplier?": (
        "No head_count_kv means no GQA: as many key/value heads as query heads. No vocab_size: the "
        "vocabulary is the list tokenizer.ggml.tokens, so its length. The multiplier: Meta's formula "
        "computes int(8 d / 3), multiplies it by ffn_dim_multiplier and rounds up to multiple_of; "
        "when the plain formula already gives feed_forward_length (SmolLM2: int(8 * 576 / 3) = 1536) "
        "it stays null, else feed_forward_length / int(8 d / 3) gives the file's size back (Llama 3 "
        "8B: 14336 / 10922). Meta's own file says 1.3 with multiple_of 1024: several pairs give the "
        "same size, and the check accepts any of them."
    ),
}
