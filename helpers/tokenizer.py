"""The Llama 3 tokenizer: byte-level BPE with 128,000 merges, run by tiktoken.

``tokenizer.model`` is a text file, one line per token: the token's bytes in
base64 and its rank (its id, and the order in which BPE merges it). 256 special
tokens follow the 128,000 ranks, from ``<|begin_of_text|>`` = 128000.

A ``Tokenizer`` is built from the ranks and a description -- the split pattern, the special
tokens and their ids, the token a prompt starts with, the tokens that end a turn. Llama 3's description is below; another model's (chapter 14's SmolLM2)
lies beside its tokenizer.model as ``tokenizer_description.json``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass
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


DESCRIPTION_FILE = "tokenizer_description.json"
MAX_DESCRIPTION_BYTES = 1 << 20  # a description is a few kilobytes


class TokenizerError(ValueError):
    """tokenizer.model is missing or malformed, or the input cannot be encoded."""


@dataclass(frozen=True)
class TokenizerDescription:
    """What, besides the ranks, makes a model's tokenizer.

    ``special_tokens`` maps each control token to its id; ``bos`` names the token every
    prompt starts with (None: nothing is added); generation stops at ``end_of_text`` and at
    each of ``end_of_turn``.
    """

    pattern: str
    special_tokens: dict[str, int]
    bos: str | None
    end_of_text: str
    end_of_turn: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        named = [self.end_of_text, *self.end_of_turn] + ([self.bos] if self.bos is not None else [])
        unknown = [name for name in named if name not in self.special_tokens]
        if unknown:
            raise TokenizerError(f"the tokenizer description names {unknown}, which are not among its special tokens")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> Self:
        where = display_path(path)
        try:
            data = json.loads(read_bounded(path, MAX_DESCRIPTION_BYTES, where, "a description is a few kilobytes"))
            data["end_of_turn"] = tuple(data.get("end_of_turn", ()))
            return cls(**data)
        except (FileTooLarge, ValueError, TypeError, KeyError, AttributeError) as err:
            raise TokenizerError(
                f"{where} is not a tokenizer description ({err}); remove it, or convert the model again"
            ) from err


def llama3_description(n_base: int = 128000) -> TokenizerDescription:
    """Llama 3's tokenizer: its split pattern, 256 special tokens after the ``n_base`` ranks."""
    return TokenizerDescription(
        pattern=PATTERN,
        special_tokens={name: n_base + i for i, name in enumerate(SPECIAL_TOKENS)},
        bos="<|begin_of_text|>",
        end_of_text="<|end_of_text|>",
        end_of_turn=("<|eom_id|>", "<|eot_id|>"),
    )


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
    return ranks


class Tokenizer:
    """Text <-> token ids, for the vocabulary and description of one model.

    >>> tok = Tokenizer.load()
    >>> tok.encode("The capital of France is")
    [128000, 791, 6864, 315, 9822, 374]
    """

    def __init__(self, path: str | Path, description: TokenizerDescription | None = None):
        self.path = Path(path)
        ranks = load_ranks(self.path)
        self.n_base = len(ranks)
        self.description = description or llama3_description(self.n_base)
        self.special_tokens = dict(self.description.special_tokens)
        self.n_words = self.n_base + len(self.special_tokens)
        ids = sorted([*ranks.values(), *self.special_tokens.values()])
        if ids != list(range(self.n_words)):
            raise TokenizerError(
                f"{display_path(self.path)}: its ranks and the special tokens' ids are not 0..{self.n_words - 1} "
                "without gaps or repeats: is this the model's own tokenizer.model?"
            )
        self.max_token_bytes = max(len(token) for token in ranks)  # a prompt of N tokens has at most N times this
        # Single bytes the vocabulary lacks cannot be encoded (tiktoken would abort).
        self.missing_bytes = bytes(b for b in range(256) if bytes([b]) not in ranks)
        self.encoding = tiktoken.Encoding(
            name=self.path.name,
            pat_str=self.description.pattern,
            mergeable_ranks=ranks,
            special_tokens=self.special_tokens,
        )
        d = self.description
        self.bos_id = self.special_tokens[d.bos] if d.bos is not None else None
        self.eos_id = self.special_tokens[d.end_of_text]
        self.end_of_turn_ids = tuple(self.special_tokens[name] for name in d.end_of_turn)
        self.eot_id = self.end_of_turn_ids[-1] if self.end_of_turn_ids else self.eos_id
        # Generation stops at any of these.
        self.stop_ids = (self.eos_id, *self.end_of_turn_ids)

    @classmethod
    def load(cls, ckpt_dir: str | Path | None = None) -> Self:
        """The tokenizer for a checkpoint directory (its own file, else the packaged one).

        A ``tokenizer_description.json`` beside the directory's tokenizer.model describes a
        tokenizer that is not Llama 3's. If the directory's params.json gives a vocab_size, the
        tokenizer must define exactly that many ids: a foreign or truncated tokenizer.model is refused.
        """
        path = tokenizer_path(ckpt_dir)
        description_file = path.parent / DESCRIPTION_FILE
        description = TokenizerDescription.from_file(description_file) if description_file.is_file() else None
        tok = cls(path, description)
        vocab_size = params_vocab_size(ckpt_dir)
        if vocab_size is not None and vocab_size != tok.n_words:
            raise TokenizerError(
                f"{display_path(tok.path)} defines {tok.n_words:,} token ids but params.json says vocab_size {vocab_size:,}: "
                "this tokenizer.model does not belong to the model (truncated, or from another model); "
                "remove it to use the Llama 3 tokenizer from the llama-models package"
            )
        return tok

    def encode(self, text: str, bos: bool | None = None, eos: bool = False) -> list[int]:
        """Token ids of ``text``; special-token strings in the text are encoded as plain text.

        ``bos``: start with the BOS token; by default as the model's description says.
        """
        if not isinstance(text, str):
            raise TokenizerError(f"expected text (str), got {type(text).__name__}")
        if bos is None:
            bos = self.bos_id is not None
        elif bos and self.bos_id is None:
            raise TokenizerError("this tokenizer has no BOS token: encode with bos=False (or bos=None)")
        if self.missing_bytes:
            self._check_encodable(text)
        ids = self.encoding.encode(text, disallowed_special=())
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def _check_encodable(self, text: str) -> None:
        """Refuse text with a byte no token holds, naming its character (instead of dropping it)."""
        data = text.encode("utf-8", "surrogatepass")
        if not data.translate(None, delete=bytes(set(range(256)) - set(self.missing_bytes))):
            return
        for pos, ch in enumerate(text):
            if set(ch.encode("utf-8", "surrogatepass")) & set(self.missing_bytes):
                raise TokenizerError(
                    f"character {ch!r} (U+{ord(ch):04X}) at position {pos} cannot be encoded: this tokenizer's "
                    "vocabulary lacks one of its UTF-8 bytes; remove or replace it"
                )

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
