"""Command line: ``python -m helpers generate|chat|logits|export-hf|evaluate|finetune``.

    python -m helpers generate --prompt "The capital of France is" --max-new-tokens 20
    python -m helpers chat --checkpoint models/SmolLM2-135M-Instruct/original   # (make smollm2)
    python -m helpers logits --prompt-file prompt.txt --out logits.pt
    python -m helpers export-hf --out tiny-llama-hf   # for AutoModelForCausalLM.from_pretrained
    python -m helpers evaluate --task capitals --shots 3 --out capitals.json   # chapter 15
    python -m helpers evaluate --task bits-per-byte --text essay.txt
    python -m helpers finetune --method sft --out artifacts/my-chat-model   # chapter 16

``--checkpoint`` defaults to $LLAMA_CHECKPOINT, then models/Llama-3.2-1B/original/,
then the embedded models/tiny-llama-3.2/original/. A user mistake prints one line
starting with ``error:`` on stderr and exits with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import codecs
import json
import math
import os
import sys
from pathlib import Path

import torch

from ..artifacts import ArtifactError
from ..chat import CHAT_FILE, ChatError, ChatTemplate
from ..checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint_dir
from ..config import ConfigError, ModelConfig
from ..files import atomic_write, atomic_write_text, check_writable_target, display_path, refuse_existing
from ..generation import check_prompt, generate, generate_uncached, prefill
from ..kv_cache import KVCache
from ..memory import check_memory
from ..quantize import SCHEMES, QuantizeError, quantize_state_dict
from ..rope import precompute_freqs_cis
from ..sampling import Sampling, check_sampling_args
from ..tokenizer import Tokenizer, TokenizerError
from .command import run_command

USER_ERRORS = (
    CheckpointError,
    ConfigError,
    TokenizerError,
    ChatError,
    ArtifactError,
    QuantizeError,
    ValueError,
    OSError,
    MemoryError,
)


class UsageError(Exception):
    """A command line argparse could not parse."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one `error:` line instead of argparse's usage block
        raise UsageError(f"{message} (see python -m helpers {self.prog.split()[-1]} --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m helpers", description="Llama 3.2 from scratch")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--checkpoint", default=None, help="Meta-format directory (params.json, consolidated.00.pth)")
    text = common.add_mutually_exclusive_group(required=True)
    text.add_argument("--prompt", help="input text; <|begin_of_text|> is prepended")
    text.add_argument(
        "--prompt-file", help="read the prompt from this UTF-8 file ('-': standard input); a final newline is dropped"
    )
    common.add_argument(
        "--quantize",
        choices=SCHEMES,
        default=None,
        help="run on quantized projections (chapter 10): int8 per row, int4 or nf4 in blocks of 64",
    )
    sampling = argparse.ArgumentParser(add_help=False)
    sampling.add_argument("--temperature", type=float, default=None, help="> 0 to sample; unset: greedy")
    sampling.add_argument(
        "--top-k", type=int, default=None, help="keep the k most likely tokens (>= 1); needs --temperature"
    )
    sampling.add_argument("--top-p", type=float, default=None, help="nucleus threshold in (0, 1]; needs --temperature")
    sampling.add_argument("--seed", type=int, default=None, help="seed for sampling")
    gen = sub.add_parser("generate", parents=[common, sampling], help="continue a prompt")
    gen.add_argument("--max-new-tokens", type=int, default=32)
    gen.add_argument("--no-cache", action="store_true", help="re-run the whole sequence each step (chapter 08)")
    gen.add_argument(
        "--compile", action="store_true", help="torch.compile the decode step: faster, after a minute of compiling"
    )
    ch = sub.add_parser("chat", parents=[sampling], help="talk to a chat model; the reply is printed as it is written")
    ch.add_argument("--checkpoint", default=None, help="Meta-format directory (params.json, consolidated.00.pth)")
    ch.add_argument("--message", default=None, help="answer this one message and exit (default: a conversation)")
    ch.add_argument("--system", default=None, help="system message (default: the model's own, if it has one)")
    ch.add_argument("--max-new-tokens", type=int, default=256, help="longest reply, in tokens")
    ch.add_argument("--quantize", choices=SCHEMES, default=None, help="as for generate")
    ch.add_argument(
        "--completion",
        action="store_true",
        help="continue each message as plain text, labelled as a completion (for a model with no chat format)",
    )
    lg = sub.add_parser("logits", parents=[common], help="write float32 logits of every position")
    lg.add_argument("--out", required=True, help="output .pt file: {'tokens': (N,), 'logits': (N, V)}")
    ex = sub.add_parser("export-hf", help="write the checkpoint in Hugging Face's format (chapter 13)")
    ex.add_argument("--checkpoint", default=None, help="Meta-format directory (params.json, consolidated.00.pth)")
    ex.add_argument("--out", required=True, help="a new or empty directory")
    ex.add_argument("--force", action="store_true", help="replace --out even if it is not empty")
    ev = sub.add_parser("evaluate", help="score the model on a multiple-choice task, or in bits per byte (chapter 15)")
    ev.add_argument("--checkpoint", default=None, help="Meta-format directory (params.json, consolidated.00.pth)")
    ev.add_argument(
        "--task",
        required=True,
        help="capitals, continents or currencies (the book's countries), bits-per-byte, or a .jsonl file "
        'of {"question": TEXT, "choices": [TEXT, ...], "answer": INDEX} per line',
    )
    ev.add_argument("--shots", type=int, default=0, help="solved examples before each question (default 0)")
    ev.add_argument("--limit", type=int, default=None, help="score only the first N items")
    ev.add_argument(
        "--text", default=None, help="bits-per-byte: a UTF-8 text file to score (default: the book's corpus)"
    )
    ev.add_argument("--out", default=None, help="write the metrics and per-item log-likelihoods to this .json file")
    ev.add_argument("--force", action="store_true", help="replace --out if it exists")
    ft = sub.add_parser(
        "finetune",
        help="instruction-tune a checkpoint on conversations, the loss on the assistant's turns only (chapter 16)",
    )
    ft.add_argument("--checkpoint", default=None, help="Meta-format directory to start from (tied embeddings)")
    ft.add_argument("--method", choices=("sft",), default="sft", help="sft: every weight trained (default)")
    ft.add_argument(
        "--data",
        default=None,
        help='JSONL, one conversation per line: {"messages": [{"role": "system"|"user"|"assistant", "content": TEXT}, '
        "...]} (default: the book's GeoNames questions about its training countries)",
    )
    ft.add_argument("--out", required=True, help="a new or empty directory for the tuned checkpoint")
    ft.add_argument("--steps", type=int, default=FT_STEPS, help=f"optimiser steps (default {FT_STEPS})")
    ft.add_argument("--lr", type=float, default=FT_LR, help=f"peak learning rate (default {FT_LR:g})")
    ft.add_argument(
        "--batch-size", type=int, default=FT_BATCH, help=f"conversations per step, drawn at random (default {FT_BATCH})"
    )
    ft.add_argument("--seed", type=int, default=0, help="seed for the batches (default 0)")
    ft.add_argument("--log", default=None, help="also write the loss of every step and the settings to this .json file")
    ft.add_argument("--force", action="store_true", help="replace --out (and --log) if they exist")
    return parser


def read_prompt(args, limit: int) -> str:
    """The prompt text from --prompt, or from --prompt-file (a path, or - for standard input).

    One rule for a file and for standard input: at most ``limit`` bytes are read (more
    cannot fit in the model's context), the bytes must be UTF-8, one final line ending (a
    newline, or a carriage return and a newline) is dropped, and everything else -- a
    carriage return included -- is kept as it is.
    """
    if args.prompt_file is None:
        return check_prompt_text(args.prompt)
    name = "standard input" if args.prompt_file == "-" else f"--prompt-file {args.prompt_file}"
    if args.prompt_file == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise ValueError("--prompt-file -: standard input is closed; pipe the prompt in, or give a file")
        data = sys.stdin.buffer.read(limit + 1)
    else:
        try:
            with open(args.prompt_file, "rb") as f:
                data = f.read(limit + 1)
        except OSError as err:
            raise OSError(f"--prompt-file {args.prompt_file}: {err.strerror}") from err
    if len(data) > limit:
        raise ValueError(
            f"{name} holds more than {limit:,} bytes, more than the model's context can hold "
            "(its length in tokens times the longest token): shorten the prompt"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{name} is not UTF-8 text") from err
    if text.endswith("\n"):
        text = text[:-1].removesuffix("\r")
    return check_prompt_text(text)


def check_prompt_text(text: str) -> str:
    if not text:
        raise ValueError("the prompt is empty: pass some text with --prompt or --prompt-file")
    return check_utf8(text, "--prompt")


def check_utf8(text: str, what: str) -> str:
    """Refuse text that arrived as bytes that are not UTF-8: Python keeps such bytes of the command
    line as lone surrogates, which the tokenizer would silently turn into U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"{what} is not UTF-8 text (an invalid byte at character {err.start})") from None
    return text


def _load(args, max_new_tokens: int, all_logits: bool) -> tuple:
    """Checkpoint directory, prompt, tokenizer, config, weights and prompt ids -- each checked
    before the next, and the memory a run needs checked before the weights are read."""
    ckpt_dir = resolve_checkpoint_dir(args.checkpoint)
    cfg = ModelConfig.from_json(ckpt_dir)
    tok = Tokenizer.load(ckpt_dir)
    prompt = read_prompt(args, cfg.max_seq_len * tok.max_token_bytes)
    ids = check_prompt(tok.encode(prompt), cfg, max_new_tokens)
    check_memory(cfg, len(ids), max_new_tokens, torch.float32, all_logits=all_logits, extra=4 * cfg.n_parameters)
    cfg, sd = load_checkpoint(ckpt_dir, dtype=torch.float32)
    if args.quantize:
        sd = quantize_state_dict(sd, args.quantize)
    return ckpt_dir, prompt, tok, cfg, sd, ids


def sampling_from_args(args) -> Sampling:
    """The sampling flags, checked, with --max-new-tokens."""
    check_sampling_args(args.temperature, args.top_k, args.top_p)
    if args.temperature is None and (args.top_k is not None or args.top_p is not None):
        flag = "--top-k" if args.top_k is not None else "--top-p"
        raise ValueError(
            f"{flag} only applies when sampling: add --temperature T (e.g. 1.0), or drop {flag} for greedy"
        )
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed must be an integer in 0 .. 2**63 - 1 (got {args.seed})")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1 (got {args.max_new_tokens})")
    return Sampling(args.temperature, args.top_k, args.top_p, args.seed)


def cmd_generate(args) -> int:
    sampling = sampling_from_args(args)
    if args.compile and args.no_cache:
        raise ValueError("--compile speeds up the cached decode step: leave out --no-cache")
    ckpt_dir, prompt, tok, cfg, sd, ids = _load(args, args.max_new_tokens, all_logits=False)
    if args.no_cache:
        new = generate_uncached(ids, sd, cfg, args.max_new_tokens, sampling, stop_ids=tok.stop_ids)
    else:
        if args.compile:
            from ..compiled import generate_compiled as run
        else:
            run = generate
        new = run(ids, sd, cfg, args.max_new_tokens, sampling, stop_ids=tok.stop_ids)
    text = tok.decode([t for t in new if t not in tok.stop_ids])
    print(f"# checkpoint: {display_path(ckpt_dir)}", file=sys.stderr)
    print(prompt + text)
    return 0


class RefusedTurn(ValueError):
    """A line of the conversation that cannot be a message: it is refused, the conversation goes on."""


def read_turn(limit: int) -> str | None:
    """One line from standard input, or None at its end. A line of more than ``limit`` bytes (the
    rest of it is read and dropped in pieces, never held whole) or one that is not UTF-8 raises
    RefusedTurn."""
    print("> ", end="", flush=True)
    line = sys.stdin.buffer.readline(limit + 1)
    if not line:
        return None
    if len(line) > limit:
        while line and not line.endswith(b"\n"):
            line = sys.stdin.buffer.readline(1 << 16)
        raise RefusedTurn(f"a message of more than {limit:,} bytes cannot fit in the model's context")
    try:
        return line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise RefusedTurn("the line is not UTF-8 text") from None


def stream_reply(ids: list[int], tok: Tokenizer, sd, cfg: ModelConfig, max_new_tokens: int, sampling: Sampling):
    """generate, printing each token as it comes (a character split over two tokens waits for
    the second); returns the new ids."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def show(token: int) -> None:
        if token not in tok.stop_ids:
            print(decoder.decode(tok.encoding.decode_single_token_bytes(token)), end="", flush=True)

    new = generate(ids, sd, cfg, max_new_tokens, sampling, tok.stop_ids, on_token=show)
    print(decoder.decode(b"", final=True))
    return new


def not_trained_to_chat(ckpt_dir) -> str:
    """The one line ``chat`` answers for a checkpoint without a chat format of its own."""
    return (
        f"{display_path(ckpt_dir)} has no chat format ({CHAT_FILE}): this model was not trained to chat. "
        "Use `generate --prompt TEXT` to continue text, a checkpoint with a chat format to chat "
        "(SmolLM2-135M-Instruct: `make smollm2`; Meta's Llama-3.2-1B-Instruct files: write "
        f'{{"format": "llama3"}} to their {CHAT_FILE}), or `chat --completion` for a labelled plain continuation'
    )


def cmd_chat(args) -> int:
    sampling = sampling_from_args(args)
    if args.message is not None and not args.message.strip():
        raise ValueError("the message is empty: pass some text with --message")
    ckpt_dir = resolve_checkpoint_dir(args.checkpoint)
    cfg = ModelConfig.from_json(ckpt_dir)
    tok = Tokenizer.load(ckpt_dir)
    # Only a checkpoint that carries a chat format was trained on one: a base model's tokenizer may
    # hold Llama 3's control tokens (the embedded model's does) without the model ever seeing them.
    if args.completion:
        if args.system is not None:
            raise ValueError("--system needs a chat format: --completion continues plain text")
        return chat_completions(args, ckpt_dir, cfg, tok, sampling)
    if not (ckpt_dir / CHAT_FILE).is_file():
        raise ChatError(not_trained_to_chat(ckpt_dir))
    template = ChatTemplate.load(ckpt_dir, tok)  # a model without one is refused before its weights are read
    if args.system is not None:
        template = ChatTemplate(template.format, check_utf8(args.system, "--system"))
    limit = cfg.max_seq_len * tok.max_token_bytes
    messages: list[dict] = []
    try:  # the shortest turn there is, a one-token message, must leave room for the reply
        check_prompt(template.prompt(tok, [{"role": "user", "content": "x"}]), cfg, args.max_new_tokens)
    except ValueError:
        raise ValueError(
            f"--max-new-tokens {args.max_new_tokens} leaves no room for a message in the model's context of "
            f"{cfg.max_seq_len:,} tokens: ask for fewer"
        ) from None

    def turn(text: str) -> list[int]:
        """The prompt ids with ``text`` as the next user message (each part checked on its own
        first, so that an error names a position in what the user typed). When the conversation
        with it no longer fits the context, it starts again from this message; a message that
        cannot fit even alone raises ValueError."""
        tok.encode(text, bos=False)
        user = {"role": "user", "content": text}
        try:
            return check_prompt(template.prompt(tok, [*messages, user]), cfg, args.max_new_tokens)
        except ValueError:
            if not messages:
                raise
        ids = check_prompt(template.prompt(tok, [user]), cfg, args.max_new_tokens)
        messages.clear()
        print(
            "# the conversation no longer fits the model's context: it starts again from this message", file=sys.stderr
        )
        return ids

    first = None
    if args.message is not None:  # checked before the weights are read
        if not check_utf8(args.message, "--message").strip():
            raise ValueError("the message is empty: pass some text with --message")
        first = turn(args.message)
    sd = load_for_chat(args, ckpt_dir, cfg)
    while True:
        if first is not None:
            text, ids = args.message, first
        else:
            try:
                text = read_turn(limit)
                if text is None:  # end of input (Ctrl-D)
                    print()
                    return 0
                if not text.strip():
                    continue
                ids = turn(text)
            except ValueError as err:  # not UTF-8, a character the tokenizer lacks, too long even alone:
                print(f"error: {err}; that message was not sent", file=sys.stderr)  # the conversation goes on
                continue
        new = stream_reply(ids, tok, sd, cfg, args.max_new_tokens, sampling)
        reply = tok.decode([t for t in new if t not in tok.stop_ids])
        messages.extend([{"role": "user", "content": text}, {"role": "assistant", "content": reply}])
        if first is not None:
            return 0


COMPLETION_LABEL = "# completion, not a reply: the model continues your text"


def chat_completions(args, ckpt_dir, cfg: ModelConfig, tok: Tokenizer, sampling: Sampling) -> int:
    """``chat --completion``: each message is a prompt on its own (no conversation: without a chat
    format there is nothing to keep one in), printed after a label line and followed by the model's
    continuation as it is written."""
    first = None
    if args.message is not None:  # checked before the weights are read
        first = check_prompt(tok.encode(args.message), cfg, args.max_new_tokens)
    sd = load_for_chat(args, ckpt_dir, cfg)
    limit = cfg.max_seq_len * tok.max_token_bytes
    while True:
        if first is not None:
            text, ids = args.message, first
        else:
            text = read_turn(limit)
            if text is None:
                print()
                return 0
            if not text.strip():
                continue
            try:
                ids = check_prompt(tok.encode(text), cfg, args.max_new_tokens)
            except ValueError as err:  # a character the tokenizer cannot encode, or too long
                print(f"error: {err}", file=sys.stderr)
                continue
        print(COMPLETION_LABEL)
        print(text, end="", flush=True)
        stream_reply(ids, tok, sd, cfg, args.max_new_tokens, sampling)
        if first is not None:
            return 0


def load_for_chat(args, ckpt_dir, cfg: ModelConfig) -> dict:
    """The weights (float32, quantized if asked), after checking that a run fits in memory."""
    check_memory(cfg, 1, args.max_new_tokens, torch.float32, extra=4 * cfg.n_parameters)  # each turn checks its own
    cfg, sd = load_checkpoint(ckpt_dir, dtype=torch.float32)
    if args.quantize:
        sd = quantize_state_dict(sd, args.quantize)
    print(f"# checkpoint: {display_path(ckpt_dir)}", file=sys.stderr)
    return sd


def cmd_logits(args) -> int:
    out = check_writable_target(args.out, "--out")  # before any work: a device, a folder, a missing folder
    ckpt_dir, _, tok, cfg, sd, ids = _load(args, 0, all_logits=True)
    tokens = torch.tensor(ids, dtype=torch.long)
    with torch.inference_mode():  # through the cache in chunks: memory linear in the prompt's length
        cache = KVCache(cfg, len(ids))
        logits = prefill(tokens, sd, cfg, precompute_freqs_cis(cfg, len(ids)), cache, all_rows=True).float()
    payload = {"tokens": tokens, "logits": logits}
    atomic_write(out, lambda f: torch.save(payload, f), "--out")
    model = display_path(ckpt_dir) + (f", quantized {args.quantize}" if args.quantize else "")
    print(f"wrote {args.out}: tokens ({len(ids)},), logits {tuple(logits.shape)} from {model}")
    return 0


def cmd_export_hf(args) -> int:
    from ..hf import export_hf

    out = export_hf(args.checkpoint, args.out, force=args.force)
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    print(f"wrote {display_path(out)}: {files}")
    return 0


BITS_PER_BYTE = "bits-per-byte"
# A text to score in bits per byte: the book's corpus is 90 kB; 16 MB takes hours on a laptop.
MAX_TEXT_BYTES = 16 << 20


def read_text(path: str) -> str:
    """--text: a non-empty UTF-8 file, read up to MAX_TEXT_BYTES (a larger or endless one is refused)."""
    from ..files import read_text_file

    text = read_text_file(path, MAX_TEXT_BYTES, f"--text {path}", "scoring it would take hours")
    if not text.strip():
        raise ValueError(f"--text {path} is empty: there is nothing to score")
    return text


def task_items(args) -> tuple[list[dict], list[dict]]:
    """The items to score (shots added, --limit applied) and all of the task's items, checked
    before the model is read."""
    from ..scoring import with_shots
    from ..tasks import COUNTRY_TASKS, country_items, read_items

    if args.task in COUNTRY_TASKS:
        items = country_items(args.task)
        pool = [item for item in items if item["split"] == "training"]  # held-out facts never appear as examples
    elif args.task.endswith(".jsonl") or os.path.exists(args.task):
        items = pool = read_items(args.task)
    else:
        names = ", ".join([*COUNTRY_TASKS, BITS_PER_BYTE])
        raise ValueError(f"unknown task {args.task!r}: one of {names}, or a .jsonl file of questions")
    chosen = items[: args.limit]
    if args.shots > len(pool) - 1:
        raise ValueError(f"--shots {args.shots}: the task has {len(pool) - 1} other examples to draw from")
    return with_shots(chosen, args.shots, pool), items


def metric_entry(outcomes: list[float]) -> dict:
    """{"value", "stderr", "interval" (bootstrap), "wilson"} of a mean of 0/1 outcomes (JSON: null
    where undefined)."""
    from ..scoring import bootstrap_interval, mean_stderr, wilson_interval

    value, stderr = mean_stderr(outcomes)
    return {
        "value": value,
        "stderr": None if math.isnan(stderr) else stderr,
        "interval": list(bootstrap_interval(outcomes)),
        "wilson": list(wilson_interval(outcomes)),
    }


def show_metrics(metrics: dict[str, dict], indent: str = "  ") -> None:
    for name, m in metrics.items():
        stderr = "n/a" if m["stderr"] is None else f"{m['stderr']:.4f}"
        lo, hi = m["interval"]
        line = f"{indent}{name:<14} {m['value']:.4f} ± {stderr} (stderr)   95% bootstrap interval [{lo:.4f}, {hi:.4f}]"
        if lo == hi:  # all right or all wrong: resampling cannot vary the mean, Wilson's interval still can
            line += f"   (Wilson [{m['wilson'][0]:.4f}, {m['wilson'][1]:.4f}])"
        print(line)


def cmd_evaluate(args) -> int:
    from tqdm import tqdm

    from ..scoring import bits_per_byte, choice_outcomes, choice_requests, encode_pair, score_choices

    if args.shots < 0:
        raise ValueError(f"--shots must be >= 0 (got {args.shots})")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1 (got {args.limit})")
    is_bpb = args.task == BITS_PER_BYTE
    if not is_bpb and args.text is not None:
        raise ValueError(f"--text is the text that --task {BITS_PER_BYTE} scores; --task {args.task} does not read it")
    if is_bpb and (args.shots or args.limit is not None):
        raise ValueError(f"--shots and --limit apply to multiple-choice tasks, not to {BITS_PER_BYTE}")
    if args.out is not None:
        check_writable_target(args.out, "--out")
        if not args.force:
            refuse_existing(args.out, "--out")
    if is_bpb:
        if args.text is not None:
            text, source = read_text(args.text), display_path(args.text)  # one document
        else:
            from ..corpus import load_countries, sentences

            # one document per country, as the model was trained (each from its own BOS)
            text = [" ".join(sentences(c)) for c in load_countries()]
            source = "the book's corpus (every sentence once, one document per country)"
    else:
        items, all_items = task_items(args)
    ckpt_dir = resolve_checkpoint_dir(args.checkpoint)
    cfg = ModelConfig.from_json(ckpt_dir)
    tok = Tokenizer.load(ckpt_dir)
    # text this tokenizer cannot encode is refused before the weights are read
    if is_bpb:
        n_text_tokens = sum(
            len(tok.encode(document, bos=False)) for document in ([text] if isinstance(text, str) else text)
        )
    else:
        for item in items:
            for context, continuation in choice_requests(item):
                encode_pair(tok, context, continuation)
    check_memory(cfg, 1, 0, torch.float32, extra=4 * cfg.n_parameters)
    cfg, sd = load_checkpoint(ckpt_dir, dtype=torch.float32)
    checkpoint = display_path(ckpt_dir)
    print(f"# checkpoint: {checkpoint}", file=sys.stderr)
    report: dict = {"task": args.task if is_bpb else display_path(args.task), "checkpoint": checkpoint}
    if is_bpb:
        with tqdm(total=n_text_tokens, desc=BITS_PER_BYTE, unit="tok", file=sys.stderr) as bar:
            result = bits_per_byte(sd, cfg, tok, text, progress=bar.update)
        print(
            f"{BITS_PER_BYTE} of {source}: {result['n_bytes']:,} bytes, {result['n_tokens']:,} tokens predicted "
            f"(windows of {result['window']} tokens every {result['stride']})"
        )
        print(f"  bits_per_byte  {result['bits_per_byte']:.4f}")
        print(f"  perplexity     {result['perplexity']:.4f} (per token)")
        report |= {
            "text": source,
            "n": result["n_tokens"],
            "metrics": {
                "bits_per_byte": {"value": result["bits_per_byte"], "stderr": None},
                "perplexity": {"value": result["perplexity"], "stderr": None},
            },
        } | {key: result[key] for key in ("nll", "n_tokens", "n_bytes", "n_documents", "window", "stride")}
    else:
        with tqdm(
            total=sum(len(item["choices"]) for item in items), desc=f"evaluate {args.task}", file=sys.stderr
        ) as bar:
            results = score_choices(sd, cfg, tok, items, progress=bar.update)
        outcomes = choice_outcomes(results, items)
        metrics = {name: metric_entry(values) for name, values in outcomes.items()}
        print(f"{report['task']}, {args.shots}-shot: {len(items)} of {len(all_items)} items")
        show_metrics(metrics)
        report |= {"shots": args.shots, "n": len(items), "metrics": metrics}
        splits = sorted({item["split"] for item in items if "split" in item}, reverse=True)  # training, held-out
        if splits:
            report["splits"] = {}
            for split in splits:
                keep = [i for i, item in enumerate(items) if item.get("split") == split]
                split_metrics = {name: metric_entry([values[i] for i in keep]) for name, values in outcomes.items()}
                report["splits"][split] = {"n": len(keep), "metrics": split_metrics}
                print(f"  {split} countries ({len(keep)} items):")
                show_metrics(split_metrics, indent="    ")
        report["items"] = [
            {key: item[key] for key in ("country", "split") if key in item} | result
            for item, result in zip(items, results, strict=True)
        ]
    if args.out is not None:
        atomic_write_text(
            args.out, json.dumps(report, indent=1, ensure_ascii=False) + "\n", "--out", replace=args.force
        )
        print(f"wrote {args.out}")
    return 0


# finetune's defaults: about 0.2 s a step for the embedded model on 2 cores, and a file of a few
# dozen conversations learnt (its replies reproduced) within a minute or two.
FT_STEPS = 300
FT_LR = 1e-3
FT_BATCH = 8


def cmd_finetune(args) -> int:
    from ..sft import country_conversations, finetune, read_conversations, render_with_labels, save_chat_checkpoint
    from ..train import compact_vocab

    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1 (got {args.steps})")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a finite number > 0 (got {args.lr})")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1 (got {args.batch_size})")
    if not 0 <= args.seed < 2**63:
        raise ValueError("--seed must be an integer in 0 .. 2**63 - 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise ValueError(f"--out {args.out} is not empty: choose a new directory, or pass --force to replace it")
    if args.log is not None:
        check_writable_target(args.log, "--log")
        if not args.force:
            refuse_existing(args.log, "--log")
    if args.data is not None:
        conversations, source = read_conversations(args.data), display_path(args.data)
    else:
        from ..corpus import load_countries
        from ..tasks import held_out_countries

        countries = load_countries()
        held_out = {c.name for c in held_out_countries(countries)}
        conversations = country_conversations([c for c in countries if c.name not in held_out])
        source = "the book's GeoNames questions (training countries)"
    ckpt_dir = resolve_checkpoint_dir(args.checkpoint)
    cfg = ModelConfig.from_json(ckpt_dir)
    tok = Tokenizer.load(ckpt_dir)
    template = ChatTemplate.load(ckpt_dir, tok)
    examples = []
    for i, conv in enumerate(conversations):  # text this tokenizer cannot encode: refused before the weights
        try:
            ids, labels = render_with_labels(tok, conv["messages"], template)
        except ValueError as err:
            raise ValueError(f"conversation {i + 1}: {err}") from None
        if len(ids) > cfg.max_seq_len:
            raise ValueError(
                f"conversation {i + 1} is {len(ids):,} tokens long, more than the context of {cfg.max_seq_len:,}"
            )
        examples.append((ids, labels))
    check_memory(cfg, args.batch_size, max(len(ids) for ids, _ in examples), torch.float32, extra=16 * cfg.n_parameters)
    cfg, sd = load_checkpoint(ckpt_dir, dtype=torch.float32)
    compact_vocab(sd, sorted(range(cfg.vocab_size)))  # refuses an untied model before any training
    print(
        f"# {display_path(ckpt_dir)}: {args.method} on {len(examples)} conversations from {source}, "
        f"{args.steps} steps of {args.batch_size}, lr {args.lr:g}, seed {args.seed}",
        file=sys.stderr,
    )
    result = finetune(sd, cfg, examples, args.steps, args.lr, args.batch_size, args.seed, progress="finetune")
    losses = result["losses"]
    first, last = losses[: min(10, len(losses))], losses[-min(10, len(losses)) :]
    print(
        f"loss on the assistant's tokens: {sum(first) / len(first):.3f} (first steps) -> {sum(last) / len(last):.3f} (last steps)"
    )
    log = {
        "method": args.method,
        "checkpoint": display_path(ckpt_dir),
        "data": source,
        "conversations": len(examples),
        "steps": args.steps,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "chat_format": template.format,
        "losses": losses,
    }
    save_chat_checkpoint(out, cfg, result["sd"], ckpt_dir, template, force=args.force, log=log)
    if args.log is not None:
        atomic_write_text(args.log, json.dumps(log, indent=1) + "\n", "--log", replace=args.force)
    print(f"wrote {display_path(out)}" + (f" and {args.log}" if args.log else ""))
    print(f'try it: python -m helpers chat --checkpoint {display_path(out)} --message "What is the capital of Peru?"')
    return 0


def main(argv: list[str] | None = None) -> int:
    def command() -> int:
        args = _parser().parse_args(argv)
        commands = {
            "generate": cmd_generate,
            "chat": cmd_chat,
            "logits": cmd_logits,
            "export-hf": cmd_export_hf,
            "evaluate": cmd_evaluate,
            "finetune": cmd_finetune,
        }
        return commands[args.command](args)

    return run_command(command, (UsageError, *USER_ERRORS))


if __name__ == "__main__":
    sys.exit(main())
