"""Command line: ``python -m helpers generate|logits``.

    python -m helpers generate --prompt "The capital of France is" --max-new-tokens 20
    python -m helpers logits --prompt "The capital of France is" --out logits.pt

``--checkpoint`` defaults to $LLAMA_CHECKPOINT, then models/Llama-3.2-1B/original/,
then the embedded models/tiny-llama-3.2/original/. A user mistake prints one
line on stderr and exits with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from .artifacts import ArtifactError
from .checkpoint import CheckpointError, display_path, load_checkpoint, resolve_checkpoint_dir
from .config import ConfigError
from .model import forward
from .sampling import check_sampling_args, generate
from .tokenizer import Tokenizer, TokenizerError

USER_ERRORS = (CheckpointError, ConfigError, TokenizerError, ArtifactError, ValueError, OSError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers", description="Llama 3.2 from scratch")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--checkpoint", default=None, help="Meta-format directory (params.json, consolidated.00.pth)")
    common.add_argument("--prompt", required=True, help="input text; <|begin_of_text|> is prepended")
    gen = sub.add_parser("generate", parents=[common], help="continue a prompt")
    gen.add_argument("--max-new-tokens", type=int, default=32)
    gen.add_argument("--temperature", type=float, default=None, help="> 0 to sample; unset: greedy")
    gen.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (>= 1)")
    gen.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold in (0, 1]")
    gen.add_argument("--seed", type=int, default=None, help="seed for sampling")
    gen.add_argument("--no-cache", action="store_true", help="re-run the whole sequence each step")
    gen.add_argument(
        "--compile", action="store_true", help="torch.compile the decode step: faster, after a minute of compiling"
    )
    lg = sub.add_parser("logits", parents=[common], help="write float32 logits of every position")
    lg.add_argument("--out", required=True, help="output .pt file: {'tokens': (N,), 'logits': (N, V)}")
    return parser


def _load(args) -> tuple:
    ckpt_dir = resolve_checkpoint_dir(args.checkpoint)
    if not args.prompt:
        raise ValueError("the prompt is empty: pass some text with --prompt")
    tok = Tokenizer.load(ckpt_dir)
    cfg, sd = load_checkpoint(ckpt_dir, dtype=torch.float32)
    ids = tok.encode(args.prompt)
    if len(ids) > cfg.max_seq_len:
        raise ValueError(f"the prompt has {len(ids)} tokens, more than the context of {cfg.max_seq_len}")
    return ckpt_dir, tok, cfg, sd, ids


def cmd_generate(args) -> int:
    check_sampling_args(args.temperature, args.top_k, args.top_p)
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1 (got {args.max_new_tokens})")
    ckpt_dir, tok, cfg, sd, ids = _load(args)
    new = generate(
        ids,
        sd,
        cfg,
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop_ids=tok.stop_ids,
        use_cache=not args.no_cache,
        compile=args.compile,
    )
    text = tok.decode([t for t in new if t not in tok.stop_ids])
    print(f"# checkpoint: {display_path(ckpt_dir)}", file=sys.stderr)
    print(args.prompt + text)
    return 0


def cmd_logits(args) -> int:
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {args.out} is a directory: give a file name such as logits.pt")
    if not out.parent.is_dir():
        raise ValueError(f"--out: directory {out.parent} does not exist")
    ckpt_dir, tok, cfg, sd, ids = _load(args)
    tokens = torch.tensor(ids, dtype=torch.long)
    with torch.inference_mode():
        logits = forward(tokens, sd, cfg).float()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        torch.save({"tokens": tokens, "logits": logits.clone()}, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {out.name}: tokens ({len(ids)},), logits {tuple(logits.shape)} from {display_path(ckpt_dir)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"generate": cmd_generate, "logits": cmd_logits}[args.command](args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
