"""Chapter 14: reading a GGUF file -- llama.cpp's one-file model format -- into the book's format.

A GGUF file is a header (magic ``GGUF``, version, counts), key/value metadata (the
hyper-parameters, the tokenizer's vocabulary and merges, the chat template), a table of
tensors (name, shape, type, offset) and then the tensor data, aligned. Quantized tensors
are blocks of 32 values: Q8_0 is one float16 scale and 32 int8 codes (34 bytes), Q4_1 a
float16 scale, a float16 minimum and 32 four-bit codes packed two per byte (20 bytes).
Every length read from the file is checked against the bytes that are left, so a damaged
or hostile file is refused instead of being allocated.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ModelConfig
from .files import display_path
from .hf import transformers_module
from .tokenizer import TokenizerDescription

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_HEADER_BYTES = 256 << 20  # SmolLM2's header (vocabulary, merges, template) is 1.8 MB
MAX_ITEMS = 1 << 24  # more entries than any vocabulary or tensor table has
BLOCK = 32  # values per quantization block (Q8_0, Q4_0, Q4_1)

# GGUF metadata value types -> struct format (8 = string, 9 = array: read by HeaderReader.value).
SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9

# ggml tensor types the book reads: name, values per block, bytes per block.
TENSOR_TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 3: ("Q4_1", BLOCK, 20), 8: ("Q8_0", BLOCK, 34)}


class GGUFError(ValueError):
    """The file is not a GGUF file the book can read."""


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table. ``shape`` is PyTorch's order (rows first); GGUF lists
    the dimensions innermost first, so it is the file's order reversed."""

    name: str
    shape: tuple[int, ...]
    type_name: str
    offset: int  # from the start of the file
    nbytes: int


class HeaderReader:
    """Little-endian reads from a byte string, each checked against what is left."""

    def __init__(self, data: bytes, where: str):
        self.data, self.pos, self.where = data, 0, where

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise GGUFError(
                f"{self.where}: the header ends early (a length of {n:,} at byte {self.pos:,}): damaged file"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def scalar(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def count(self) -> int:
        n = self.scalar("Q")
        if n > MAX_ITEMS:
            raise GGUFError(f"{self.where}: a count of {n:,} at byte {self.pos:,} is beyond any model: damaged file")
        return n

    def string(self) -> str:
        raw = self.take(self.scalar("Q"))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise GGUFError(f"{self.where}: a string at byte {self.pos:,} is not UTF-8: damaged file") from err

    def value(self, kind: int):
        if kind in SCALAR_FORMATS:
            return self.scalar(SCALAR_FORMATS[kind])
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            item_kind, n = self.scalar("I"), self.count()
            return [self.value(item_kind) for _ in range(n)]
        raise GGUFError(f"{self.where}: unknown metadata type {kind} at byte {self.pos:,}")


@dataclass
class GGUFFile:
    """What a GGUF file's header says: its version, metadata and tensor table."""

    path: Path
    version: int
    metadata: dict
    tensors: dict[str, TensorInfo]

    def read(self, name: str) -> bytes:
        """The raw bytes of one tensor."""
        info = self.tensors[name]
        with open(self.path, "rb") as f:
            f.seek(info.offset)
            raw = f.read(info.nbytes)
        if len(raw) != info.nbytes:
            raise GGUFError(f"{display_path(self.path)}: tensor {name} runs past the end of the file (truncated?)")
        return raw


def read_gguf(path: str | Path) -> GGUFFile:
    """Parse a GGUF file's header, metadata and tensor table (the data stays on disk)."""
    path = Path(path)
    where = display_path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        r = HeaderReader(f.read(MAX_HEADER_BYTES), where)
    if r.take(4) != MAGIC:
        raise GGUFError(f"{where} does not start with 'GGUF': not a GGUF file")
    version = r.scalar("I")
    if version not in (2, 3):
        raise GGUFError(f"{where} is GGUF version {version}; the book reads versions 2 and 3")
    n_tensors, n_kv = r.count(), r.count()
    metadata = {}
    for _ in range(n_kv):
        key = r.string()
        metadata[key] = r.value(r.scalar("I"))
    table = []
    for _ in range(n_tensors):
        name = r.string()
        dims = [r.scalar("Q") for _ in range(r.scalar("I"))]
        kind, offset = r.scalar("I"), r.scalar("Q")
        if kind not in TENSOR_TYPES:
            raise GGUFError(f"{where}: tensor {name} has ggml type {kind}; the book reads {sorted(TENSOR_TYPES)}")
        table.append((name, tuple(reversed(dims)), kind, offset))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    start = (r.pos + alignment - 1) // alignment * alignment
    tensors = {}
    for name, shape, kind, offset in table:
        type_name, per_block, block_bytes = TENSOR_TYPES[kind]
        n = 1
        for dim in shape:
            n *= dim
        if n % per_block:
            raise GGUFError(f"{where}: tensor {name} has {n} values, not a whole number of {type_name} blocks")
        info = TensorInfo(name, shape, type_name, start + offset, n // per_block * block_bytes)
        if info.offset + info.nbytes > size:
            raise GGUFError(f"{where}: tensor {name} runs past the end of the file (truncated?)")
        tensors[name] = info
    return GGUFFile(path, version, metadata, tensors)


def dequantize_q8_0(raw: bytes, shape: tuple[int, ...]) -> torch.Tensor:
    """Q8_0 blocks -> float32: value = scale x code, one float16 scale per 32 int8 codes."""
    blocks = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(-1, 2 + BLOCK)
    scale = blocks[:, :2].contiguous().view(torch.float16).float()  # (n_blocks, 1)
    codes = blocks[:, 2:].contiguous().view(torch.int8).float()  # (n_blocks, 32)
    return (scale * codes).reshape(shape)


def dequantize_q4_1(raw: bytes, shape: tuple[int, ...]) -> torch.Tensor:
    """Q4_1 blocks -> float32: value = scale x code + minimum, codes 0..15.

    Byte j of a block holds value j in its low four bits and value j + 16 in its high four.
    """
    blocks = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(-1, 4 + BLOCK // 2)
    scale = blocks[:, 0:2].contiguous().view(torch.float16).float()
    minimum = blocks[:, 2:4].contiguous().view(torch.float16).float()
    packed = blocks[:, 4:]
    codes = torch.cat([packed & 0x0F, packed >> 4], dim=1).float()  # (n_blocks, 32)
    return (scale * codes + minimum).reshape(shape)


def dequantize_tensor(raw: bytes, info: TensorInfo) -> torch.Tensor:
    """One tensor's bytes as float32, whatever its type."""
    if info.type_name == "Q8_0":
        return dequantize_q8_0(raw, info.shape)
    if info.type_name == "Q4_1":
        return dequantize_q4_1(raw, info.shape)
    dtype = torch.float32 if info.type_name == "F32" else torch.float16
    return torch.frombuffer(bytearray(raw), dtype=dtype).float().reshape(info.shape)


# llama.cpp's tensor names -> Meta's (the book's); N is the layer.
KEY_MAP = {
    "token_embd.weight": "tok_embeddings.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "output.weight",
    "blk.N.attn_norm.weight": "layers.N.attention_norm.weight",
    "blk.N.attn_q.weight": "layers.N.attention.wq.weight",
    "blk.N.attn_k.weight": "layers.N.attention.wk.weight",
    "blk.N.attn_v.weight": "layers.N.attention.wv.weight",
    "blk.N.attn_output.weight": "layers.N.attention.wo.weight",
    "blk.N.ffn_norm.weight": "layers.N.ffn_norm.weight",
    "blk.N.ffn_gate.weight": "layers.N.feed_forward.w1.weight",
    "blk.N.ffn_down.weight": "layers.N.feed_forward.w2.weight",
    "blk.N.ffn_up.weight": "layers.N.feed_forward.w3.weight",
}


def meta_name(name: str) -> str:
    """``blk.3.attn_q.weight`` -> ``layers.3.attention.wq.weight``."""
    parts = name.split(".")
    if parts[0] == "blk" and len(parts) > 2 and parts[1].isdigit():
        template = KEY_MAP.get(".".join(["blk", "N", *parts[2:]]))
        if template is not None:
            return template.replace("N", parts[1], 1)
    elif name in KEY_MAP:
        return KEY_MAP[name]
    raise GGUFError(f"tensor {name} has no counterpart in Meta's Llama layout (is this a llama GGUF?)")


def gguf_state_dict(gguf: GGUFFile) -> dict[str, torch.Tensor]:
    """Every tensor dequantized to float32 under Meta's key; a missing ``output.weight`` is the
    embedding (tied), as in Llama 3.2. llama.cpp's converter already stored the query and key
    rows in Meta's order (pairs of RoPE), so nothing is permuted."""
    sd = {meta_name(name): dequantize_tensor(gguf.read(name), info) for name, info in gguf.tensors.items()}
    sd.setdefault("output.weight", sd["tok_embeddings.weight"])
    return sd


def gguf_params(gguf: GGUFFile) -> dict:
    """Meta's params.json for a llama GGUF, checked against what the file states outright."""
    m = gguf.metadata
    if m.get("general.architecture") != "llama":
        raise GGUFError(
            f"{display_path(gguf.path)} holds a {m.get('general.architecture')!r} model; the book runs 'llama'"
        )
    if "llama.rope.scaling.type" in m:
        raise GGUFError("this GGUF uses RoPE scaling, which the conversion does not carry over")
    params = {
        "dim": m["llama.embedding_length"],
        "n_layers": m["llama.block_count"],
        "n_heads": m["llama.attention.head_count"],
        "n_kv_heads": m.get("llama.attention.head_count_kv", m["llama.attention.head_count"]),
        "vocab_size": m.get("llama.vocab_size", len(m["tokenizer.ggml.tokens"])),
        "ffn_dim_multiplier": None,
        "multiple_of": 256,
        "norm_eps": round(float(m["llama.attention.layer_norm_rms_epsilon"]), 12),
        "rope_theta": float(m["llama.rope.freq_base"]),
        "use_scaled_rope": False,
        "max_seq_len": m["llama.context_length"],
    }
    cfg = ModelConfig.from_params(params)
    if cfg.ffn_hidden_dim != m["llama.feed_forward_length"]:
        # Meta's formula rounds 8d/3 up to a multiple of multiple_of; find the multiplier that gives the file's size.
        params["ffn_dim_multiplier"] = m["llama.feed_forward_length"] / int(8 * cfg.dim / 3)
        if ModelConfig.from_params(params).ffn_hidden_dim != m["llama.feed_forward_length"]:
            raise GGUFError(f"feed_forward_length {m['llama.feed_forward_length']} is not one params.json can state")
    return params


def byte_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-ins for bytes: a GGUF (and tokenizer.json) spells each token's
    bytes with one character per byte; printable ASCII and Latin-1 stand for themselves, the
    other 68 bytes for the characters from U+0100 on. Character -> byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in keep]
    table = {chr(b): b for b in keep}
    table.update({chr(256 + i): b for i, b in enumerate(shifted)})
    return table


# Pre-tokenizers named by GGUF's tokenizer.ggml.pre, as one regular expression each.
# GPT-2's split, with digits one at a time: a run of spaces before a digit stays one piece,
# as it does when the digits are split off first (Hugging Face's Digits, then ByteLevel).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
PRE_TOKENIZERS = {
    "gpt-2": GPT2_PATTERN,
    "smollm": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+",
}
# Control tokens that end a document, and those that end a reply (llama.cpp keeps lists like
# these): generation stops at both. The GGUF's eos token is one or the other.
END_OF_TEXT_TEXTS = ("<|endoftext|>", "<|end_of_text|>")
END_OF_TURN_TEXTS = ("<|eom_id|>", "<|eot_id|>", "<|im_end|>", "<|end|>")
NORMAL, CONTROL = 1, 3  # GGUF token types


def gguf_tokenizer(gguf: GGUFFile) -> tuple[dict[bytes, int], TokenizerDescription]:
    """The ranks (token bytes -> id) and the description of a GGUF's byte-level BPE tokenizer.

    Ranks are token ids: this vocabulary lists tokens in the order BPE learned them, so
    merging by id is merging by the file's merge list (the tests check the encodings).
    """
    m = gguf.metadata
    if m.get("tokenizer.ggml.model") != "gpt2":
        raise GGUFError(f"tokenizer model {m.get('tokenizer.ggml.model')!r}: the book reads byte-level BPE ('gpt2')")
    pre = m.get("tokenizer.ggml.pre", "gpt-2")
    if pre not in PRE_TOKENIZERS:
        raise GGUFError(f"pre-tokenizer {pre!r} is not one the book knows ({sorted(PRE_TOKENIZERS)})")
    alphabet = byte_alphabet()
    ranks, special = {}, {}
    for i, (text, kind) in enumerate(zip(m["tokenizer.ggml.tokens"], m["tokenizer.ggml.token_type"], strict=True)):
        if kind == CONTROL:
            special[text] = i
        elif kind == NORMAL:
            ranks[bytes(alphabet[ch] for ch in text)] = i
        else:
            raise GGUFError(f"token {i} ({text!r}) has type {kind}; the book reads normal and control tokens")
    tokens = m["tokenizer.ggml.tokens"]
    eos = tokens[m["tokenizer.ggml.eos_token_id"]]
    bos = tokens[m["tokenizer.ggml.bos_token_id"]] if m.get("tokenizer.ggml.add_bos_token") else None
    end_of_text = next((t for t in END_OF_TEXT_TEXTS if t in special), eos)
    end_of_turn = tuple(t for t in special if (t in END_OF_TURN_TEXTS or t == eos) and t != end_of_text)
    return ranks, TokenizerDescription(PRE_TOKENIZERS[pre], special, bos, end_of_text, end_of_turn)


def ranks_file_text(ranks: dict[bytes, int]) -> str:
    """tokenizer.model's format: ``base64(token bytes) rank`` per line, by rank."""
    return "".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in sorted(ranks.items(), key=lambda kv: kv[1]))


def transformers_from_gguf(path: str | Path):
    """The check of this chapter: ``transformers`` reading the same GGUF file itself (its own
    reader, dequantizers and renaming), in float32. Its progress bars are silenced: the GGUF
    conversion's comes from tqdm directly, not through transformers' switch."""
    from unittest import mock

    transformers = transformers_module()
    import transformers.modeling_gguf_pytorch_utils as gguf_loading

    path = Path(path)
    transformers.utils.logging.disable_progress_bar()
    with mock.patch.object(gguf_loading, "tqdm", lambda items, **_: items):
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        )
    return model.eval()
