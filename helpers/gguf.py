"""Chapter 14: reading a GGUF file -- llama.cpp's one-file model format -- into the book's format.

A GGUF file is a header (magic ``GGUF``, version, counts), key/value metadata (the
hyper-parameters, the tokenizer's vocabulary and merges, the chat template), a table of
tensors (name, shape, type, offset) and then the tensor data, aligned. Quantized tensors
are blocks of 32 values: Q8_0 is one float16 scale and 32 int8 codes (34 bytes), Q4_1 a
float16 scale, a float16 minimum and 32 four-bit codes packed two per byte (20 bytes).
Every length read from the file is checked against the bytes that are left, so a damaged
or hostile file is refused instead of being allocated; the tensors' data must lie as llama.cpp
lays it out (each where the one before ends, aligned, inside the file) before any is read; and
every metadata field the conversion uses is checked for presence, type and range.
"""

from __future__ import annotations

import base64
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from .checkpoint import check_shapes
from .config import ConfigError, ModelConfig
from .files import display_path, open_regular
from .hf import transformers_module
from .tokenizer import TokenizerDescription

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# What a header may cost: its bytes, and the values (metadata entries, array items, tensors) it
# holds, each a Python object of some 50 bytes. SmolLM2's header (vocabulary, merges, template) is
# 1.8 MB with 150,000 values, Llama 3's 8 MB with 540,000; these bounds keep a header under 0.5 GB.
MAX_HEADER_BYTES = 64 << 20
MAX_HEADER_VALUES = 1 << 22
MAX_ITEMS = 1 << 24  # more entries than any vocabulary or tensor table has
MAX_ARRAY_DEPTH = 2  # an array of arrays at most (llama.cpp reads no nested arrays at all)
MAX_DIMS = 4  # ggml's GGML_MAX_DIMS
BLOCK = 32  # values per quantization block (Q8_0, Q4_0, Q4_1)

# GGUF metadata value types -> struct format (8 = string, 9 = array: read by HeaderReader.value).
SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
UINT32 = 4  # the type general.alignment must have

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
    """Little-endian reads from the start of a file of ``size`` bytes, each checked against the
    bytes that are left and against MAX_HEADER_BYTES; the values read are counted against
    MAX_HEADER_VALUES. What a header costs in memory is bounded before it is allocated."""

    def __init__(self, f: BinaryIO, where: str, size: int):
        self.f, self.where, self.size, self.pos, self.values = f, where, size, 0, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise GGUFError(
                f"{self.where}: the header ends early (a length of {n:,} at byte {self.pos:,}): damaged file"
            )
        if self.pos + n > MAX_HEADER_BYTES:
            raise GGUFError(
                f"{self.where}: the header is larger than {MAX_HEADER_BYTES:,} bytes (a length of {n:,} at byte "
                f"{self.pos:,}; SmolLM2's header is 1.8 MB): not read"
            )
        chunk = self.f.read(n)
        if len(chunk) != n:
            raise GGUFError(f"{self.where}: the file ended while its header was read (byte {self.pos:,})")
        self.pos += n
        return chunk

    def scalar(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def count(self) -> int:
        n = self.scalar("Q")
        if n > MAX_ITEMS:
            raise GGUFError(f"{self.where}: a count of {n:,} at byte {self.pos:,} is beyond any model: damaged file")
        self.values += n
        if self.values > MAX_HEADER_VALUES:
            raise GGUFError(
                f"{self.where}: the header holds more than {MAX_HEADER_VALUES:,} values (entries, array items, "
                f"tensors; at byte {self.pos:,}), more than any model's: not read"
            )
        return n

    def string(self) -> str:
        raw = self.take(self.scalar("Q"))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise GGUFError(f"{self.where}: a string at byte {self.pos:,} is not UTF-8: damaged file") from err

    def value(self, kind: int, depth: int = 0):
        if kind in SCALAR_FORMATS:
            return self.scalar(SCALAR_FORMATS[kind])
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            if depth == MAX_ARRAY_DEPTH:
                raise GGUFError(
                    f"{self.where}: arrays nested more than {MAX_ARRAY_DEPTH} deep at byte {self.pos:,}: damaged file"
                )
            item_kind, n = self.scalar("I"), self.count()
            return [self.value(item_kind, depth + 1) for _ in range(n)]
        raise GGUFError(f"{self.where}: unknown metadata type {kind} at byte {self.pos:,}")


@dataclass
class GGUFFile:
    """What a GGUF file's header says: its version, metadata and tensor table."""

    path: Path
    version: int
    metadata: dict
    tensors: dict[str, TensorInfo]

    def field(self, key: str, kind: type, default=..., *, low=None, high=None, items: type | None = None):
        """The metadata entry ``key``, checked: present (unless a ``default`` is given), of type
        ``kind`` (int: an integer, not a bool; float: a finite number; list: one of ``items``),
        and in ``[low, high]`` (a list: its length). A GGUFError names the file and the field."""

        def fits(value, t: type) -> bool:
            if t is float:
                return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            return isinstance(value, t) and not (t is int and isinstance(value, bool))

        names = {int: "an integer", float: "a finite number", str: "text", bool: "true or false", list: "a list"}
        where = f"{display_path(self.path)}: {key}"
        if key not in self.metadata:
            if default is not ...:
                return default
            raise GGUFError(f"{where} is missing from the metadata")
        value = self.metadata[key]
        shown = f"a list of {len(value):,} items" if isinstance(value, list) else repr(value)[:60]
        if not fits(value, kind) or (items is not None and not all(fits(v, items) for v in value)):
            wanted = names[kind] + (f" of {names[items]} items" if items is not None else "")
            raise GGUFError(f"{where} must be {wanted}, found {shown}")
        size = len(value) if kind is list else value
        if (low is not None and size < low) or (high is not None and size > high):
            if low == high:
                bounds = f"{low:,}"
            elif low is not None and high is not None:
                bounds = f"between {low:,} and {high:,}"
            else:
                bounds = f"at least {low:,}" if high is None else f"at most {high:,}"
            raise GGUFError(f"{where} must be {bounds}{' items long' if kind is list else ''}, found {shown}")
        return float(value) if kind is float else value

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
    """Parse a GGUF file's header, metadata and tensor table (the data stays on disk), and check the
    data's layout as llama.cpp's reader does, before anything reads it: each tensor starts where the
    one before it ends, rounded up to the alignment, and ends inside the file, so no two overlap."""
    path = Path(path)
    where = display_path(path)
    with open_regular(path, where) as f:  # a FIFO or a device is refused, not waited on
        r = HeaderReader(f, where, os.fstat(f.fileno()).st_size)
        if r.take(4) != MAGIC:
            raise GGUFError(f"{where} does not start with 'GGUF': not a GGUF file")
        version = r.scalar("I")
        if version not in (2, 3):
            raise GGUFError(f"{where} is GGUF version {version}; the book reads versions 2 and 3")
        n_tensors, n_kv = r.count(), r.count()
        metadata, kinds = {}, {}
        for _ in range(n_kv):
            key, kind = r.string(), r.scalar("I")
            if key in metadata:
                raise GGUFError(f"{where}: metadata key {key} appears twice: damaged file")
            metadata[key], kinds[key] = r.value(kind), kind
        table = []
        for _ in range(n_tensors):
            name, n_dims = r.string(), r.scalar("I")
            if n_dims > MAX_DIMS:
                raise GGUFError(f"{where}: tensor {name} has {n_dims:,} dimensions, more than {MAX_DIMS}: damaged file")
            dims = [r.scalar("Q") for _ in range(n_dims)]
            kind, offset = r.scalar("I"), r.scalar("Q")
            if kind not in TENSOR_TYPES:
                raise GGUFError(f"{where}: tensor {name} has ggml type {kind}; the book reads {sorted(TENSOR_TYPES)}")
            table.append((name, tuple(reversed(dims)), kind, offset))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if kinds.get("general.alignment", UINT32) != UINT32 or alignment < 1 or alignment & (alignment - 1):
        raise GGUFError(
            f"{where}: general.alignment must be a power of two stored as a u32 (GGUF type {UINT32}), "
            f"found {alignment!r:.40} of type {kinds['general.alignment']}"
        )
    start = (r.pos + alignment - 1) // alignment * alignment  # where the data begins
    tensors, expected = {}, 0  # expected: where the next tensor's data must begin, from ``start``
    for name, shape, kind, offset in table:
        type_name, per_block, block_bytes = TENSOR_TYPES[kind]
        n = math.prod(shape)
        if n % per_block:
            raise GGUFError(f"{where}: tensor {name} has {n} values, not a whole number of {type_name} blocks")
        if name in tensors:
            raise GGUFError(f"{where}: tensor {name} appears twice in the tensor table: damaged file")
        if offset != expected:
            raise GGUFError(
                f"{where}: tensor {name}'s data starts at byte {offset:,} of the data, not at {expected:,} where the "
                f"tensor before it ends (rounded up to the alignment, {alignment}): overlapping or misplaced data"
            )
        info = TensorInfo(name, shape, type_name, start + offset, n // per_block * block_bytes)
        if info.offset + info.nbytes > r.size:
            raise GGUFError(f"{where}: tensor {name} runs past the end of the file (truncated?)")
        tensors[name] = info
        expected += (info.nbytes + alignment - 1) // alignment * alignment
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


def gguf_state_dict(gguf: GGUFFile, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Every tensor dequantized to float32 under Meta's key, once every name and shape has been
    checked against ``cfg`` (nothing is read before); a missing ``output.weight`` is the
    embedding (tied), as in Llama 3.2. llama.cpp's converter already stored the query and key
    rows in Meta's order (pairs of RoPE), so nothing is permuted."""
    where = display_path(gguf.path)
    try:
        keys = {name: meta_name(name) for name in gguf.tensors}
    except GGUFError as err:
        raise GGUFError(f"{where}: {err}") from None
    check_shapes({keys[name]: info.shape for name, info in gguf.tensors.items()}, cfg, where)
    sd = {keys[name]: dequantize_tensor(gguf.read(name), info) for name, info in gguf.tensors.items()}
    sd.setdefault("output.weight", sd["tok_embeddings.weight"])
    return sd


def gguf_params(gguf: GGUFFile) -> dict:
    """Meta's params.json for a llama GGUF, checked against what the file states outright."""
    where = display_path(gguf.path)
    architecture = gguf.field("general.architecture", str)
    if architecture != "llama":
        raise GGUFError(f"{where} holds a {architecture!r} model; the book runs 'llama'")
    if "llama.rope.scaling.type" in gguf.metadata:
        raise GGUFError(
            f"{where} uses RoPE scaling (llama.rope.scaling.type), which the conversion does not carry over"
        )
    n_heads = gguf.field("llama.attention.head_count", int, low=1)
    n_tokens = len(gguf.field("tokenizer.ggml.tokens", list, low=1, items=str))
    ffn = gguf.field("llama.feed_forward_length", int, low=1)
    params = {
        "dim": gguf.field("llama.embedding_length", int, low=1),
        "n_layers": gguf.field("llama.block_count", int, low=1),
        "n_heads": n_heads,
        "n_kv_heads": gguf.field("llama.attention.head_count_kv", int, n_heads, low=1),
        "vocab_size": gguf.field("llama.vocab_size", int, n_tokens, low=n_tokens, high=n_tokens),  # one id per token
        "ffn_dim_multiplier": None,
        "multiple_of": 256,
        # params.json keeps 12 decimals: a smaller epsilon would be written as 0
        "norm_eps": round(gguf.field("llama.attention.layer_norm_rms_epsilon", float, low=1e-12), 12),
        "rope_theta": gguf.field("llama.rope.freq_base", float, low=1.0),
        "use_scaled_rope": False,
        "max_seq_len": gguf.field("llama.context_length", int, low=1),
    }
    try:
        cfg = ModelConfig.from_params(params)
        if cfg.ffn_hidden_dim != ffn:
            # Meta's formula rounds 8d/3 up to a multiple of multiple_of; find the multiplier that gives the file's size.
            params["ffn_dim_multiplier"] = ffn / int(8 * cfg.dim / 3)
            if ModelConfig.from_params(params).ffn_hidden_dim != ffn:
                raise GGUFError(f"{where}: llama.feed_forward_length {ffn} is not one params.json can state")
    except ConfigError as err:  # sizes that do not make a model (dim not a multiple of the heads, ...)
        raise GGUFError(f"{where}: its llama.* metadata does not describe a model: {err}") from None
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
    where = display_path(gguf.path)
    model = gguf.field("tokenizer.ggml.model", str)
    if model != "gpt2":
        raise GGUFError(f"{where}: tokenizer.ggml.model is {model!r}: the book reads byte-level BPE ('gpt2')")
    pre = gguf.field("tokenizer.ggml.pre", str, "gpt-2")
    if pre not in PRE_TOKENIZERS:
        raise GGUFError(
            f"{where}: tokenizer.ggml.pre {pre!r} is not a pre-tokenizer the book knows ({sorted(PRE_TOKENIZERS)})"
        )
    tokens = gguf.field("tokenizer.ggml.tokens", list, low=1, items=str)
    n = len(tokens)
    types = gguf.field("tokenizer.ggml.token_type", list, low=n, high=n, items=int)
    alphabet = byte_alphabet()
    ranks, special = {}, {}
    for i, (text, kind) in enumerate(zip(tokens, types, strict=True)):
        if kind == CONTROL:
            token, table = text, special
        elif kind == NORMAL:
            if not set(text) <= alphabet.keys():
                raise GGUFError(f"{where}: token {i} ({text!r:.40}) is not spelled in GPT-2's byte alphabet")
            token, table = bytes(alphabet[ch] for ch in text), ranks
        else:
            raise GGUFError(
                f"{where}: token {i} ({text!r:.40}) has type {kind}; the book reads normal and control tokens"
            )
        if token in table:
            raise GGUFError(f"{where}: tokens {table[token]} and {i} are the same token ({text!r:.40}): damaged file")
        table[token] = i
    eos = tokens[gguf.field("tokenizer.ggml.eos_token_id", int, low=0, high=n - 1)]
    add_bos = gguf.field("tokenizer.ggml.add_bos_token", bool, False)
    bos = tokens[gguf.field("tokenizer.ggml.bos_token_id", int, low=0, high=n - 1)] if add_bos else None
    for name, text in (("eos", eos), ("bos", bos)):
        if text is not None and text not in special:
            raise GGUFError(f"{where}: tokenizer.ggml.{name}_token_id names {text!r:.40}, which is not a control token")
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
