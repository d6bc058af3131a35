"""Chapter 14: chat templates -- how a conversation becomes the token ids an instruct model was
tuned on.

A chat model reads a conversation as one sequence in which control tokens mark where each
message starts, whose it is, and where it ends. Llama 3 writes
``<|start_header_id|>role<|end_header_id|>\\n\\n content <|eot_id|>``; SmolLM2 (like many
models) uses ChatML, ``<|im_start|>role\\n content <|im_end|>\\n``. The prompt ends with the
assistant's header: the model writes the reply and then the end-of-turn token, where
generation stops. Control tokens are inserted as ids, never parsed out of the text, so a
user who types ``<|im_end|>`` cannot end the turn.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from .files import FileTooLarge, display_path, read_bounded
from .tokenizer import Tokenizer

CHAT_FILE = "chat_template.json"  # written beside a converted model's params.json
MAX_CHAT_FILE_BYTES = 1 << 20
ROLES = ("system", "user", "assistant")
# A model file's Jinja chat template is rendered by a child process (tools/template_sandbox.py) with
# these limits. Real templates are a few kilobytes long and render a prompt in milliseconds.
TEMPLATE_SANDBOX = Path(__file__).parent / "tools" / "template_sandbox.py"
TEMPLATE_SECONDS = 10  # wall-clock time for one rendering, the child's start (about 0.2 s) included
TEMPLATE_MEMORY = 512 << 20  # the child's address space (Python and jinja2 take about 30 MB of it)
MAX_TEMPLATE_CHARS = 1 << 20  # the template's source, and what it renders


class ChatError(ValueError):
    """The model has no chat template, or a conversation is malformed, or a template cannot be rendered."""


def render_template(source: str, /, **context) -> str:
    """A Jinja chat template from a model file -- untrusted code -- rendered with ``context`` (plain
    data: ``messages=[...], add_generation_prompt=True``) as transformers renders one, in jinja2's
    immutable sandbox: no walk from a value to Python's internals, no change to the values passed.
    It runs in a child process limited to TEMPLATE_SECONDS of time and TEMPLATE_MEMORY bytes of
    memory, its output cut at MAX_TEMPLATE_CHARS characters, so a template that loops forever or
    builds a huge string is stopped. Raises ChatError saying what went wrong."""
    if not isinstance(source, str):
        raise ChatError(f"a chat template is text, found {type(source).__name__}")
    if len(source) > MAX_TEMPLATE_CHARS:
        raise ChatError(f"the chat template is {len(source):,} characters long, more than {MAX_TEMPLATE_CHARS:,}")
    try:
        request = json.dumps(
            {
                "source": source,
                "context": context,
                "max_chars": MAX_TEMPLATE_CHARS,
                "memory": TEMPLATE_MEMORY,
                "seconds": TEMPLATE_SECONDS,
            }
        )
    except (TypeError, ValueError) as err:
        raise ChatError(f"a chat template is rendered with plain data (text, numbers, lists, dicts): {err}") from None
    try:
        run = subprocess.run(
            [sys.executable, "-P", str(TEMPLATE_SANDBOX)],
            input=request.encode("utf-8", "surrogatepass"),
            capture_output=True,
            timeout=TEMPLATE_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise ChatError(f"the chat template did not finish in {TEMPLATE_SECONDS} s (an endless loop?)") from None
    except OSError as err:
        raise ChatError(f"the chat template's renderer could not start: {err.strerror}") from None
    try:
        reply = json.loads(run.stdout)
    except ValueError:  # the child was killed (its processor-time limit) or failed before it could reply
        reason = "its limits stopped it" if run.returncode < 0 else "the renderer failed"
        reply = {"error": f"{reason} (exit status {run.returncode})"}
    if "error" in reply:
        raise ChatError(f"the chat template cannot be rendered: {reply['error']}")
    return reply["text"]


def check_messages(messages: Sequence[dict]) -> None:
    """Refuse anything but a list of {'role': system|user|assistant, 'content': text}, naming the message."""
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ChatError(f"message {i} must be {{'role': one of {ROLES}, 'content': text}}, found {m!r}")


def llama3_prompt(tok: Tokenizer, messages: Sequence[dict], default_system: str | None = None) -> list[int]:
    """Llama 3's format: BOS, then per message a header and the content ending in
    <|eot_id|>, then the assistant's header, which the reply follows."""
    special = tok.special_tokens

    def header(role: str) -> list[int]:
        return [special["<|start_header_id|>"], *tok.encode(role, bos=False), special["<|end_header_id|>"]] + (
            tok.encode("\n\n", bos=False)
        )

    ids = [tok.bos_id]
    for m in _with_system(messages, default_system):
        ids += header(m["role"]) + tok.encode(m["content"], bos=False) + [special["<|eot_id|>"]]
    return ids + header("assistant")


def chatml_prompt(tok: Tokenizer, messages: Sequence[dict], default_system: str | None = None) -> list[int]:
    """ChatML: per message <|im_start|>, the role and a newline, the content, <|im_end|> and a
    newline; then <|im_start|>assistant and a newline."""
    start, end = tok.special_tokens["<|im_start|>"], tok.special_tokens["<|im_end|>"]
    ids = []
    for m in _with_system(messages, default_system):
        ids += [start, *tok.encode(f"{m['role']}\n{m['content']}", bos=False), end, *tok.encode("\n", bos=False)]
    return ids + [start, *tok.encode("assistant\n", bos=False)]


def _with_system(messages: Sequence[dict], default_system: str | None) -> list[dict]:
    check_messages(messages)
    if default_system is not None and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": default_system}, *messages]
    return list(messages)


FORMATS = {"llama3": llama3_prompt, "chatml": chatml_prompt}
# The control tokens each format writes: a tokenizer that has them all can use the format.
FORMAT_TOKENS = {
    "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "chatml": ("<|im_start|>", "<|im_end|>"),
}


@dataclass(frozen=True)
class ChatTemplate:
    """A chat format by name, and the system message the model's template adds when a
    conversation has none (SmolLM2's does; Llama 3.2's adds none)."""

    format: str
    default_system: str | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ChatError(f"chat format {self.format!r} is not one the book writes ({sorted(FORMATS)})")

    def prompt(self, tok: Tokenizer, messages: Sequence[dict]) -> list[int]:
        """The ids of ``messages`` followed by the assistant's header."""
        missing = [t for t in FORMAT_TOKENS[self.format] if t not in tok.special_tokens]
        if missing:
            raise ChatError(f"the {self.format} chat format needs {missing}, which this tokenizer lacks")
        return FORMATS[self.format](tok, messages, self.default_system)

    @classmethod
    def load(cls, ckpt_dir: str | Path, tok: Tokenizer) -> Self:
        """The checkpoint's ``chat_template.json``; without one, the format whose control tokens
        the tokenizer has (Llama 3's for Meta's files); a model with neither has no chat template."""
        path = Path(ckpt_dir) / CHAT_FILE
        if path.is_file():
            try:
                data = json.loads(read_bounded(path, MAX_CHAT_FILE_BYTES, display_path(path), "a few kilobytes"))
                return cls(data["format"], data.get("default_system"))
            except (FileTooLarge, ValueError, TypeError, KeyError) as err:
                raise ChatError(
                    f"{display_path(path)} is not a chat template file ({err}): convert the model again"
                ) from err
        for name, tokens in FORMAT_TOKENS.items():
            if all(t in tok.special_tokens for t in tokens):
                return cls(name)
        raise ChatError(
            f"{display_path(ckpt_dir)} has no chat template ({CHAT_FILE}) and its tokenizer has no chat control "
            "tokens: it is not a chat model; use `generate --prompt` instead"
        )
