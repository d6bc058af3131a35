"""Command line: ``python -m helpers generate|chat|logits|export-hf``.

    python -m helpers generate --prompt "The capital of France is" --max-new-tokens 20
    python -m helpers chat --checkpoint models/SmolLM2-135M-Instruct/original   # (make smollm2)
    python -m helpers logits --prompt-file prompt.txt --out logits.pt
    python -m helpers export-hf --out tiny-llama-hf   # for AutoModelForCausalLM.from_pretrained

``--checkpoint`` defaults to $LLAMA_CHECKPOINT, then models/Llama-3.2-1B/original/,
then the embedded models/tiny-llama-3.2/original/. A user mistake prints one line
starting with ``error:`` on stderr and exits with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import codecs
import sys

import torch

from ..artifacts import ArtifactError
from ..chat import ChatError, ChatTemplate
from ..checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint_dir
from ..config import ConfigError, ModelConfig
from ..files import atomic_write, check_writable_target, display_path
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
    lg = sub.add_parser("logits", parents=[common], help="write float32 logits of every position")
    lg.add_argument("--out", required=True, help="output .pt file: {'tokens': (N,), 'logits': (N, V)}")
    ex = sub.add_parser("export-hf", help="write the checkpoint in Hugging Face's format (chapter 13)")
    ex.add_argument("--checkpoint", default=None, help="Meta-format directory (params.json, consolidated.00.pth)")
    ex.add_argument("--out", required=True, help="a new or empty directory")
    ex.add_argument("--force", action="store_true", help="replace --out even if it is not empty")
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


def cmd_chat(args) -> int:
    sampling = sampling_from_args(args)
    ckpt_dir = resolve_checkpoint_dir(args.checkpoint)
    cfg = ModelConfig.from_json(ckpt_dir)
    tok = Tokenizer.load(ckpt_dir)
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
    check_memory(cfg, 1, args.max_new_tokens, torch.float32, extra=4 * cfg.n_parameters)  # each turn checks its own
    cfg, sd = load_checkpoint(ckpt_dir, dtype=torch.float32)
    if args.quantize:
        sd = quantize_state_dict(sd, args.quantize)
    print(f"# checkpoint: {display_path(ckpt_dir)}", file=sys.stderr)
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


def main(argv: list[str] | None = None) -> int:
    def command() -> int:
        args = _parser().parse_args(argv)
        commands = {"generate": cmd_generate, "chat": cmd_chat, "logits": cmd_logits, "export-hf": cmd_export_hf}
        return commands[args.command](args)

    return run_command(command, (UsageError, *USER_ERRORS))


if __name__ == "__main__":
    sys.exit(main())
