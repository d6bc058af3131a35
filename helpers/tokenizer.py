"""The Llama 3 tokenizer: byte-level BPE with 128,000 merges, run by tiktoken.

``tokenizer.model`` is a text file, one line per token: the token's bytes in
base64 and its rank (its id, and the order in which BPE merges it). 256 special
tokens follow the 128,000 ranks, from ``<|begin_of_text|>`` = 128000.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Self

import tiktoken

from .checkpoint import params_vocab_size, tokenizer_path
from .files import FileTooLarge, display_path, read_bounded

# Pre-tokenization: text is first split into pieces with this regular expression;
# BPE then runs inside each piece. (The write-up prints "'11" where "'ll" belongs.)
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NUM_SPECIAL_TOKENS = 256
# Llama 3's file is 2.2 MB; a vocabulary of a million tokens would take about 20 MB.
MAX_TOKENIZER_BYTES = 64 << 20
_NAMED_SPECIAL = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
]
SPECIAL_TOKENS = _NAMED_SPECIAL + [
    f"<|reserved_special_token_{i}|>" for i in range(2, 2 + NUM_SPECIAL_TOKENS - len(_NAMED_SPECIAL))
]


class TokenizerError(ValueError):
    """tokenizer.model is missing or malformed, or the input cannot be encoded."""


def load_ranks(path: str | Path) -> dict[bytes, int]:
    """Parse tokenizer.model: ``base64(token bytes) rank`` per line."""
    path = Path(path)
    ranks: dict[bytes, int] = {}
    try:
        text = read_bounded(path, MAX_TOKENIZER_BYTES, display_path(path), "Llama 3's is 2.2 MB").decode("utf-8")
    except FileTooLarge as err:
        raise TokenizerError(str(err)) from err
    except UnicodeDecodeError as err:
        raise TokenizerError(f"{display_path(path)} is not a text file: is this a Llama 3 tokenizer.model?") from err
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error) as err:
            raise TokenizerError(
                f"{display_path(path)} line {lineno} is not 'base64-token rank' ({err}): is this a Llama 3 tokenizer.model?"
            ) from err
    if not ranks:
        raise TokenizerError(
            f"{display_path(path)} holds no tokens (the file is empty): is this a Llama 3 tokenizer.model?"
        )
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise TokenizerError(f"{display_path(path)}: ranks are not 0..{len(ranks) - 1} without gaps")
    return ranks


class Tokenizer:
    """Text <-> token ids with the Llama 3 vocabulary.

    >>> tok = Tokenizer.load()
    >>> tok.encode("The capital of France is")
    [128000, 791, 6864, 315, 9822, 374]
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        ranks = load_ranks(self.path)
        self.n_base = len(ranks)
        self.max_token_bytes = max(len(token) for token in ranks)  # a prompt of N tokens has at most N times this
        self.special_tokens = {name: self.n_base + i for i, name in enumerate(SPECIAL_TOKENS)}
        self.encoding = tiktoken.Encoding(
            name=self.path.name,
            pat_str=PATTERN,
            mergeable_ranks=ranks,
            special_tokens=self.special_tokens,
        )
        self.n_words = self.n_base + len(SPECIAL_TOKENS)
        self.bos_id = self.special_tokens["<|begin_of_text|>"]
        self.eos_id = self.special_tokens["<|end_of_text|>"]
        self.eot_id = self.special_tokens["<|eot_id|>"]
        # Generation stops at any of these.
        self.stop_ids = (self.eos_id, self.special_tokens["<|eom_id|>"], self.eot_id)

    @classmethod
    def load(cls, ckpt_dir: str | Path | None = None) -> Self:
        """The tokenizer for a checkpoint directory (its own file, else the packaged one).

        If the directory's params.json gives a vocab_size, the tokenizer must define
        exactly that many ids: a foreign or truncated tokenizer.model is refused.
        """
        tok = cls(tokenizer_path(ckpt_dir))
        vocab_size = params_vocab_size(ckpt_dir)
        if vocab_size is not None and vocab_size != tok.n_words:
            raise TokenizerError(
                f"{display_path(tok.path)} defines {tok.n_words:,} token ids but params.json says vocab_size {vocab_size:,}: "
                "this tokenizer.model does not belong to the model (truncated, or from another model); "
                "remove it to use the Llama 3 tokenizer from the llama-models package"
            )
        return tok

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Token ids of ``text``; special-token strings in the text are encoded as plain text."""
        if not isinstance(text, str):
            raise TokenizerError(f"expected text (str), got {type(text).__name__}")
        ids = self.encoding.encode(text, disallowed_special=())
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids) -> str:
        """Text of token ids (invalid UTF-8 fragments show as U+FFFD)."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.n_words]
        if bad:
            raise TokenizerError(f"token id(s) {bad[:5]} outside the vocabulary 0..{self.n_words - 1}")
        return self.encoding.decode(ids)

    def piece(self, token_id: int) -> str:
        """One token as readable text (special tokens by name; partial UTF-8 as U+FFFD)."""
        return self.decode([token_id])

    def pieces(self, ids) -> list[str]:
        """Each token of ``ids`` as its own string, e.g. ['<|begin_of_text|>', 'The', ' capital', ...]."""
        return [self.piece(i) for i in ids]
