"""The child process in which ``helpers.chat.render_template`` renders a chat template.

A chat template is Jinja code read from a model file, so it is untrusted: it is rendered here,
in a process of its own, with jinja2's ``ImmutableSandboxedEnvironment`` (no attribute walk from
a value to Python's internals, no change to the values passed in, ``range`` capped at 100,000
items), set up as transformers sets it up for chat templates, and refusing huge repeats and powers. The process's address space and
processor time are capped before the template is compiled, and the output is cut off at the
stated length, so a template that loops forever or builds a huge string ends here, with a
message, instead of in the caller.

Run as a script, ``python -P template_sandbox.py``: it imports only the standard library and
jinja2. It reads one JSON request on standard input, ``{"source", "context", "max_chars",
"memory", "seconds"}``, and writes one JSON reply, ``{"text": ...}`` or ``{"error": ...}``.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_MESSAGE = 300  # characters of an error message passed back (a template chooses its own)
MAX_POWER_BITS = 1 << 16  # an integer power larger than this many bits is refused before it is computed


class OutputTooLong(Exception):
    """The template wrote, or was about to build, more than it may."""


def raise_exception(message):
    """What transformers gives templates to refuse a conversation (``raise_exception('...')``)."""
    raise jinja2.TemplateError(message)


def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """transformers' ``tojson`` filter: JSON without HTML escaping."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox that also refuses, before computing it, a string or list
    repeated past ``max_items`` (``'x' * 10**10``) and an integer power of more than
    MAX_POWER_BITS bits (``10 ** 100000``): the memory limit would stop them too, but not on
    every system (macOS does not enforce one)."""

    intercepted_binops = frozenset(["*", "**"])

    def __init__(self, max_items: int, **options):
        super().__init__(**options)
        self.max_items = max_items

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for items, n in ((left, right), (right, left)):
                if isinstance(items, str | list | tuple) and isinstance(n, int) and len(items) * n > self.max_items:
                    raise OutputTooLong(f"it repeats a string or list past {self.max_items:,} items")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right * abs(left).bit_length() > MAX_POWER_BITS:
                raise OutputTooLong(f"it computes a power of more than {MAX_POWER_BITS:,} bits")
        return super().call_binop(context, operator, left, right)


def environment(max_items: int) -> BoundedSandbox:
    env = BoundedSandbox(max_items, trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def render(source: str, context: dict, max_chars: int) -> str:
    """The template's output, refused once it exceeds ``max_chars`` characters (read piece by
    piece as the template writes it, so an endless output is stopped, not collected)."""
    pieces, n = [], 0
    for piece in environment(max_chars).from_string(source).generate(**context):
        n += len(piece)
        if n > max_chars:
            raise OutputTooLong(f"its output is longer than {max_chars:,} characters")
        pieces.append(piece)
    return "".join(pieces)


def limit(memory: int, seconds: int) -> None:
    try:
        import resource
    except ImportError:  # not on this system: the caller's wall-clock timeout still applies
        return
    for kind, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, seconds)):
        try:
            resource.setrlimit(kind, (value, value + 1 if kind == resource.RLIMIT_CPU else value))
        except (ValueError, OSError):  # a system that does not enforce it (RLIMIT_AS on macOS)
            pass


def describe(err: BaseException) -> str:
    if isinstance(err, OutputTooLong):
        text = str(err)
    elif isinstance(err, jinja2.TemplateSyntaxError):
        text = f"syntax error on line {err.lineno}: {err.message}"
    elif isinstance(err, jinja2.exceptions.SecurityError):
        text = f"the sandbox refused it: {err}"
    elif type(err) is jinja2.TemplateError:
        text = f"the template raised an error: {err}"
    else:
        text = f"{type(err).__name__}: {err}"
    text = " ".join(text.split())  # one line
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " ..."


def main() -> None:
    request = json.loads(sys.stdin.read())
    limit(request["memory"], request["seconds"])
    try:
        reply = {"text": render(request["source"], request["context"], request["max_chars"])}
    except MemoryError:
        reply = {"error": f"it needs more than {request['memory'] >> 20} MiB of memory"}
    except RecursionError:
        reply = {"error": "it nests or recurses too deeply"}
    except Exception as err:  # noqa: BLE001 - whatever the template did, it is reported, not raised
        reply = {"error": describe(err)}
    sys.stdout.write(json.dumps(reply))


if __name__ == "__main__":
    main()
