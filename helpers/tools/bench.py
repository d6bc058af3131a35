"""``make bench``: how fast does the book's own implementation generate?

Greedy decoding, a 16-token prompt and 128 new tokens, end-of-text ignored, measured in
one run on one machine. Implementations, in the results' names:

- ``scratch-cache``   helpers.generate with the KV cache (chapter 09), its decode step
                      compiled (``generate_compiled``, helpers/compiled.py); on a GPU the
                      static-shape step under CUDA graphs;
- ``scratch-cache`` eager, the same without compiling (the code as the chapters run it):
                      in the printed table, the figure and details.json, not in results.json;
- ``scratch-cache`` int8 / int4: the same compiled step on weights quantized as chapter 10
                      does (the seven projections; int8 per row, int4 per block of 64), laid
                      out once for PyTorch's weight-only kernels (helpers/compiled.py; CPU only);
- ``scratch-cache`` w8a8: int8's weights with each activation row rounded to 8 bits too, the
                      products uint8 x int8 -> int32 (helpers/kernels.py; CPU only);
- ``scratch-nocache`` the uncached loop of chapter 08 (tiny model only: quadratic);
- ``transformers``    LlamaForCausalLM.generate with its own cache, same weights and dtype;
- ``llama.cpp`` bf16 / q8_0 / q4_0, with ``--peers`` (``make bench-peers``): llama.cpp's
                      ``llama-bench`` on the 1B-shape weights converted to GGUF (tools/peers.py);

on the embedded tiny checkpoint (float32) and on random weights of the real Llama-3.2-1B
shape (bfloat16, with the quantized variants, and float32). All implementations of one
(model, dtype) take turns within each round, so that a slow phase of the machine hits
them alike; before each round a streaming read measures the memory bandwidth.

Decoding one token must read every weight once, so memory bandwidth bounds it: the
roofline of a round is that round's bandwidth / the bytes of weights read per token
(scales included). Each 1B row reports ``roofline_fraction``: the median over rounds of
(that round's tokens/s / that round's roofline).

``--profile`` instead times, per weight format, the compiled step against its matrix
products alone (``where_time_goes``): where the step's time goes, and at what GB/s.

Writes build/bench/results.json (a fixed schema, tested; results-cuda.json with
``--device cuda``), details.json (every timing, compile times, the machine) and
decode.png, and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..book import smollm2
from ..checkpoint import TINY_DIR, cast_state_dict, load_checkpoint, random_state_dict
from ..compiled import generate_compiled
from ..config import ModelConfig, llama_3_2_1b_config
from ..files import REPO_ROOT, atomic_write_text, display_path
from ..generation import generate, generate_uncached
from ..kernels import KERNEL_SCHEMES as QUANTIZED
from ..kernels import bytes_per_token, quantize_for_kernels
from .bench_report import EAGER, machine, plot, print_table, summarize
from .book import nbval_suite_seconds
from .peers import PeerError
from .roofline import measure_bandwidth

OUT_DIR = REPO_ROOT / "build" / "bench"
PROMPT_TOKENS = 16
NEW_TOKENS = 128
WARMUP_TOKENS = 8


def prompt_ids(cfg: ModelConfig, ckpt_dir=None) -> list[int]:
    """A fixed 16-token prompt, by the checkpoint's tokenizer (Llama 3's by default: BOS and 15
    ids that have embeddings in every Llama-3-vocabulary checkpoint used here)."""
    from ..tokenizer import Tokenizer

    tok = Tokenizer.load(ckpt_dir)
    ids = tok.encode("The capital of France is Paris. The capital of Japan is Tokyo. The capital")[:PROMPT_TOKENS]
    assert len(ids) == PROMPT_TOKENS and max(ids) < cfg.vocab_size
    return ids


def time_scratch(sd, cfg, ids, new_tokens: int, run=generate) -> tuple[float, list[int]]:
    """Seconds for ``run`` (generate, generate_compiled or generate_uncached) and its tokens."""
    start = time.perf_counter()  # generate returns host ints: every step has synchronized
    new = run(ids, sd, cfg, new_tokens)
    return time.perf_counter() - start, new


def time_transformers(model, ids, new_tokens: int) -> tuple[float, list[int]]:
    inputs = torch.tensor([ids], device=model.device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            inputs,
            attention_mask=torch.ones_like(inputs),
            max_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=None,  # like the scratch runs: end-of-text is an ordinary token here
            pad_token_id=0,
        )
    return time.perf_counter() - start, out[0, len(ids) :].tolist()


def tied_in(sd: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The weights in ``dtype``, the LM head the embedding table again (one tensor, read once)."""
    return cast_state_dict(sd | {"output.weight": sd["tok_embeddings.weight"]}, dtype)


def bench_model(
    name, cfg, sd, dtype, *, device, repeats, progress, nocache: bool = False, schemes=(), ckpt_dir=None, peers=None
) -> dict:
    """Time every implementation on one (model, dtype): a short warm-up each (the compile
    happens there), then rounds in which they take turns. Each rate is the median over the rounds.
    ``peers``: {impl: (run, bytes per token)} timed in the same rounds, ``run(n)`` -> (seconds, [])."""
    from ..hf import hf_model

    sd = tied_in(sd, dtype)
    model = hf_model(sd, cfg, dtype).to(device)
    sd = {k: v.to(device) for k, v in sd.items()}
    ids = prompt_ids(cfg, ckpt_dir)
    impls = {
        "scratch-cache": lambda n: time_scratch(sd, cfg, ids, n, generate_compiled),
        EAGER: lambda n: time_scratch(sd, cfg, ids, n),
    }
    bytes_read = {"scratch-cache": bytes_per_token(cfg, dtype), EAGER: bytes_per_token(cfg, dtype)}
    for scheme in schemes:
        quantized = quantize_for_kernels(sd, scheme)  # repacked once, not per call
        impls[f"scratch-cache {scheme}"] = lambda n, q=quantized: time_scratch(q, cfg, ids, n, generate_compiled)
        bytes_read[f"scratch-cache {scheme}"] = bytes_per_token(cfg, dtype, scheme)
    if nocache:
        impls["scratch-nocache"] = lambda n: time_scratch(sd, cfg, ids, n, generate_uncached)
    impls["transformers"] = lambda n: time_transformers(model, ids, n)
    bytes_read["transformers"] = bytes_per_token(cfg, dtype)
    for impl, (fn, nbytes) in (peers or {}).items():
        impls[impl], bytes_read[impl] = fn, nbytes
    label = f"{name} {str(dtype).removeprefix('torch.')}"
    # On a GPU the static step is compiled for one cache length: warm up at the timed length
    warmup_tokens = NEW_TOKENS if torch.device(device).type == "cuda" else WARMUP_TOKENS
    warmup = {}
    for impl, fn in impls.items():
        progress.set_description(f"{label} warm-up {impl}")
        warmup[impl] = round(fn(warmup_tokens)[0], 2)
    times: dict[str, list[float]] = {impl: [] for impl in impls}
    outputs: dict[str, list[int]] = {}
    bandwidth = []
    for r in range(repeats):
        progress.set_description(f"{label} bandwidth ({r + 1}/{repeats})")
        bandwidth.append(round(measure_bandwidth(device=device), 2))
        for impl, fn in impls.items():
            progress.set_description(f"{label} {impl} ({r + 1}/{repeats})")
            seconds, outputs[impl] = fn(NEW_TOKENS)
            times[impl].append(round(seconds, 4))
    progress.update(1)
    agreement = {  # (a peer's tokens are not compared: other code, other rounding)
        impl: sum(a == b for a, b in zip(tokens, outputs[EAGER], strict=True))
        for impl, tokens in outputs.items()
        if impl not in (peers or {})
    }
    return {
        "model": name,
        "dtype": str(dtype).removeprefix("torch."),
        "prompt_tokens": len(ids),
        "new_tokens": NEW_TOKENS,
        "seconds": times,
        "tokens_per_s": {impl: round(NEW_TOKENS / statistics.median(t), 3) for impl, t in times.items()},
        "bytes_per_token": bytes_read,
        "warmup_s": warmup,
        "tokens_equal_to_eager": agreement,
        "bandwidth_GBps": bandwidth,
    }


@contextlib.contextmanager
def peer_runs(cfg: ModelConfig, sd: dict, source: Path | None) -> Iterator[dict]:
    """With llama.cpp's built ``source`` tree: its runs of these weights, {impl: (run, bytes per
    token)}, for ``bench_model``'s rounds; the GGUF files live in a temporary folder under
    build/peers/ until the rounds are over. Without: no peers."""
    if source is None:
        yield {}
        return
    from ..checkpoint import save_checkpoint
    from ..hf import export_hf
    from . import peers

    with tempfile.TemporaryDirectory(dir=peers.PEERS_DIR, prefix=".gguf-") as tmp:
        work = Path(tmp)
        print("converting the 1B-shape weights to GGUF (bf16, Q8_0, Q4_0) with llama.cpp's converter")
        save_checkpoint(work / "meta", cfg, sd, torch.bfloat16)
        export_hf(work / "meta", work / "hf")
        files = peers.convert(source, work / "hf", work)
        threads = torch.get_num_threads()  # the threads PyTorch decodes with

        def run(gguf: Path) -> Callable:
            return lambda n: (peers.llama_bench_seconds(source, gguf, PROMPT_TOKENS, n, threads), [])

        yield {f"llama.cpp {name}": (run(path), peers.gguf_bytes_per_token(path)) for name, path in files.items()}


def main(argv: list[str] | None = None) -> int:
    from tqdm.auto import tqdm

    parser = argparse.ArgumentParser(description="Benchmark decoding speed (writes build/bench/)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per model and dtype (median)")
    parser.add_argument("--skip-1b", action="store_true", help="only the tiny checkpoint (quick)")
    parser.add_argument("--skip-nbval", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default build/bench)")
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also llama.cpp on the 1B-shape weights (bf16, Q8_0, Q4_0), built once into build/peers/",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only: where a 1B-shape decode step's time goes, per weight format (writes profile.json)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    cuda = torch.device(args.device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to PyTorch here")
    if args.peers and (cuda or args.skip_1b or args.profile):
        parser.error(
            "--peers times llama.cpp's CPU build on the 1B shape: not with --device cuda, --skip-1b or --profile"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if args.profile:
        from .profile_step import int8_candidates, print_candidates, print_profile, where_time_goes

        if cuda:
            parser.error("--profile times the CPU kernels: run it without --device cuda")
        cfg = llama_3_2_1b_config()
        sd = random_state_dict(cfg, seed=0)
        rows = where_time_goes(cfg, sd)
        candidates = int8_candidates(cfg, sd)
        profile = {"machine": machine("cpu"), "torch": torch.__version__, "rows": rows, "int8_products": candidates}
        atomic_write_text(args.out / "profile.json", json.dumps(profile, indent=2) + "\n")
        print_profile(rows)
        print_candidates(candidates)
        print(f"wrote profile.json in {display_path(args.out)}")
        return 0

    llama_cpp = None
    if args.peers:  # built first: a missing compiler is said before minutes of timing
        from .peers import ensure_llama_cpp

        try:
            llama_cpp = ensure_llama_cpp()
        except PeerError as err:
            print(f"make bench-peers: {err}", file=sys.stderr)
            return 1
    groups = []
    tiny_cfg, tiny_sd = load_checkpoint(TINY_DIR, dtype=torch.float32)
    real = smollm2.OUT if (smollm2.OUT / "provenance.json").is_file() else None  # make bench converts it
    try:
        with tqdm(total=(1 if args.skip_1b else 3) + (real is not None), desc="bench") as progress:
            run = {"device": args.device, "repeats": args.repeats, "progress": progress}
            groups.append(bench_model("tiny", tiny_cfg, tiny_sd, torch.float32, nocache=True, **run))
            del tiny_sd
            if real is not None:  # a real model: SmolLM2-135M-Instruct, as converted (float32)
                real_cfg, real_sd = load_checkpoint(real, dtype=torch.float32)
                groups.append(bench_model("smollm2-135m", real_cfg, real_sd, torch.float32, ckpt_dir=real, **run))
                del real_sd
            if not args.skip_1b:
                cfg = llama_3_2_1b_config()
                sd = random_state_dict(cfg, seed=0)
                schemes = () if cuda else QUANTIZED  # the weight-only kernels are CPU kernels
                with peer_runs(cfg, sd, llama_cpp) as peers:
                    groups.append(bench_model("1b-shape", cfg, sd, torch.bfloat16, schemes=schemes, peers=peers, **run))
                groups.append(bench_model("1b-shape", cfg, sd, torch.float32, **run))
                del sd
    except PeerError as err:  # llama.cpp's conversion or a run of it failed
        print(f"make bench-peers: {err}", file=sys.stderr)
        return 1
    results = summarize(groups, None if args.skip_nbval else round(nbval_suite_seconds(), 1))
    details = {
        "machine": machine(args.device),
        "device": torch.device(args.device).type,
        "torch": torch.__version__,
        "bandwidth_note": "GB/s of each round's streaming read; results.json's bandwidth_GBps is the best",
        "bandwidth_median_GBps": statistics.median(b for g in groups for b in g["bandwidth_GBps"]),
        "groups": groups,
    }
    name = "results-cuda.json" if cuda else "results.json"
    for file, payload in ((name, results), ("details.json", details)):
        text = json.dumps(payload, indent=2) + "\n"
        atomic_write_text(args.out / file, text)
    plot(results, details, args.out / "decode.png")
    print_table(results, details)
    print(f"wrote {name}, details.json and decode.png in {display_path(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
