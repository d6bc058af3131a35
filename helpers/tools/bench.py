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
- ``scratch-nocache`` the uncached loop of chapter 08 (tiny model only: quadratic);
- ``transformers``    LlamaForCausalLM.generate with its own cache, same weights and dtype;

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
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..checkpoint import TINY_DIR, expected_shapes, load_checkpoint, random_state_dict
from ..compiled import for_cpu_kernels, generate_compiled
from ..config import ModelConfig, llama_3_2_1b_config
from ..files import REPO_ROOT, atomic_write_text, display_path
from ..generation import generate, generate_uncached
from ..quantize import quantize_state_dict

OUT_DIR = REPO_ROOT / "build" / "bench"
PROMPT_TOKENS = 16
NEW_TOKENS = 128
WARMUP_TOKENS = 8
QUANTIZED = ("int8", "int4")  # the schemes with a CPU kernel


def measure_bandwidth(gib: float = 1.0, repeats: int = 7, device: str = "cpu") -> float:
    """Streaming-read bandwidth in GB/s: the median time to sum a large float32 tensor."""
    x = torch.ones(int(gib * 2**30) // 4, device=device)
    x.sum()  # fault the pages in
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        x.sum()
        _sync(device)
        times.append(time.perf_counter() - start)
    return x.nbytes / statistics.median(times) / 1e9


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return sum(_nbytes(t) for t in vars(value).values() if isinstance(t, torch.Tensor))


def bytes_per_token(cfg: ModelConfig, dtype: torch.dtype, scheme: str | None = None) -> int:
    """Weight bytes one decode step reads: every block's matrices and norms, the final norm,
    the LM head (V x d, never quantized), and one embedding row. With a ``scheme``, the seven
    projections count as the kernels store them: codes and scales."""
    with torch.device("meta"):
        sd = {k: torch.empty(s, dtype=dtype) for k, s in expected_shapes(cfg).items()}
    if scheme:
        sd = for_cpu_kernels(quantize_state_dict(sd, scheme))
    read = sum(_nbytes(v) for k, v in sd.items() if k not in ("tok_embeddings.weight", "output.weight"))
    head = sd["output.weight"]
    return read + _nbytes(head) + head.shape[1] * head.element_size()


def prompt_ids(cfg: ModelConfig) -> list[int]:
    """A fixed 16-token prompt: BOS and 15 ids that have embeddings in every checkpoint used here."""
    from ..tokenizer import Tokenizer

    tok = Tokenizer.load(None)
    ids = tok.encode("The capital of France is Paris. The capital of Japan is Tokyo. The")[:PROMPT_TOKENS]
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


EAGER = "scratch-cache eager"  # not a results.json row: details.json, the table and the figure
LABELS = {
    "scratch-cache": "scratch, cache\n(compiled)",
    EAGER: "scratch, cache\n(eager)",
    "scratch-nocache": "scratch,\nno cache",
    "transformers": "transformers",
    "scratch-cache int8": "int8 weights\n(compiled)",
    "scratch-cache int4": "int4 weights\n(compiled)",
}


def tied_in(sd: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The weights in ``dtype``, the LM head the embedding table again (one tensor, read once)."""
    sd = {k: v.to(dtype) for k, v in sd.items()}
    sd["output.weight"] = sd["tok_embeddings.weight"]
    return sd


def bench_model(name, cfg, sd, dtype, device, repeats, nocache: bool, progress, schemes=()) -> dict:
    """Time every implementation on one (model, dtype): a short warm-up each (the compile
    happens there), then rounds in which they take turns. Each rate is the median over the rounds."""
    from ..hf import hf_model

    sd = tied_in(sd, dtype)
    model = hf_model(sd, cfg, dtype).to(device)
    sd = {k: v.to(device) for k, v in sd.items()}
    ids = prompt_ids(cfg)
    impls = {
        "scratch-cache": lambda n: time_scratch(sd, cfg, ids, n, generate_compiled),
        EAGER: lambda n: time_scratch(sd, cfg, ids, n),
    }
    bytes_read = {"scratch-cache": bytes_per_token(cfg, dtype), EAGER: bytes_per_token(cfg, dtype)}
    for scheme in schemes:
        quantized = for_cpu_kernels(quantize_state_dict(sd, scheme))  # repacked once, not per call
        impls[f"scratch-cache {scheme}"] = lambda n, q=quantized: time_scratch(q, cfg, ids, n, generate_compiled)
        bytes_read[f"scratch-cache {scheme}"] = bytes_per_token(cfg, dtype, scheme)
    if nocache:
        impls["scratch-nocache"] = lambda n: time_scratch(sd, cfg, ids, n, generate_uncached)
    impls["transformers"] = lambda n: time_transformers(model, ids, n)
    bytes_read["transformers"] = bytes_per_token(cfg, dtype)
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
    agreement = {
        impl: sum(a == b for a, b in zip(tokens, outputs[EAGER], strict=True)) for impl, tokens in outputs.items()
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


def roofline_fraction(group: dict, impl: str) -> float:
    """Median over rounds of (tokens/s / (that round's bandwidth / bytes read per token))."""
    bytes_read = group["bytes_per_token"][impl]
    fractions = [
        (group["new_tokens"] / seconds) / (bandwidth * 1e9 / bytes_read)
        for seconds, bandwidth in zip(group["seconds"][impl], group["bandwidth_GBps"], strict=True)
    ]
    return round(statistics.median(fractions), 3)


def where_time_goes(cfg: ModelConfig, sd: dict, schemes=QUANTIZED, rounds: int = 5, steps: int = 16) -> list[dict]:
    """``--profile``: per weight format, one compiled decode step against its matrix products alone.

    The products -- the step's 7 L projections, then its LM head, one row each -- run through the
    same ``linear``, compiled with the same one-row rewrite as in the step, back to back on the
    same weights. Their times against the step's say where its time goes; their bytes over their
    time, next to the streaming read of the same round, say whether they wait on memory (near
    the bandwidth) or on arithmetic (well below it). Formats take turns in each round; medians."""
    from ..compiled import _decompose_one_row_products, compiled_step
    from ..generation import prefill
    from ..kv_cache import KVCache
    from ..linear import linear
    from ..quantize import is_projection
    from ..rope import precompute_freqs_cis

    sd = tied_in(sd, torch.bfloat16)
    formats = {"bfloat16": sd} | {s: for_cpu_kernels(quantize_state_dict(sd, s)) for s in schemes}
    prompt = torch.tensor(prompt_ids(cfg))
    total = len(prompt) + steps
    freqs = precompute_freqs_cis(cfg, total)
    products = torch.compile(lambda xs, ws: [linear(x, w) for x, w in zip(xs, ws, strict=True)], dynamic=False)

    def time_step(weights, step) -> float:
        cache = KVCache(cfg, total, dtype=torch.bfloat16)
        with torch.inference_mode():
            token = prefill(prompt, weights, cfg, freqs, cache).argmax(-1, keepdim=True)
            start = time.perf_counter()
            for pos in range(len(prompt), total):
                token = step(token, weights, cfg, freqs, cache, pos, last_only=True)[-1].argmax(-1, keepdim=True)
            return (time.perf_counter() - start) / steps

    def time_products(ws) -> float:
        xs = [torch.randn(1, w.shape[1], dtype=torch.bfloat16) for w in ws]
        with torch.inference_mode(), _decompose_one_row_products():
            products(xs, ws)  # compiles once per list of shapes
            start = time.perf_counter()
            for _ in range(steps):
                products(xs, ws)
            return (time.perf_counter() - start) / steps

    parts = {
        name: {"projections": [w[k] for k in w if is_projection(k)], "LM head": [w["output.weight"]]}
        for name, w in formats.items()
    }
    steps_of = {name: compiled_step(w) for name, w in formats.items()}
    for name, w in formats.items():  # compile and warm up
        time_step(w, steps_of[name])
    times = {name: {"step": [], "projections": [], "LM head": []} for name in formats}
    bandwidth = []
    for _ in range(rounds):
        bandwidth.append(measure_bandwidth())
        for name, w in formats.items():
            times[name]["step"].append(time_step(w, steps_of[name]))
            for part, ws in parts[name].items():
                times[name][part].append(time_products(ws))
    rows = []
    for name in formats:
        t = {part: statistics.median(ts) for part, ts in times[name].items()}
        row = {"weights": name, "step_ms": round(t["step"] * 1e3, 2)}
        for part, ws in parts[name].items():
            nbytes = sum(_nbytes(w) for w in ws)
            row[part] = {
                "ms": round(t[part] * 1e3, 2),
                "bytes": nbytes,
                "GBps": round(nbytes / t[part] / 1e9, 1),
            }
        row["rest_ms"] = round((t["step"] - t["projections"] - t["LM head"]) * 1e3, 2)
        row["bandwidth_GBps"] = round(statistics.median(bandwidth), 1)
        rows.append(row)
    return rows


def print_profile(rows: list[dict]) -> None:
    print(f"\nstreaming read {rows[0]['bandwidth_GBps']:.1f} GB/s (median of the rounds)")
    print(f"{'weights':<10}{'step ms':>9}{'projections ms (GB/s)':>23}{'LM head ms (GB/s)':>20}{'rest ms':>9}")
    for r in rows:
        proj, head = r["projections"], r["LM head"]
        print(
            f"{r['weights']:<10}{r['step_ms']:>9.1f}{proj['ms']:>14.1f} ({proj['GBps']:>5.1f}){head['ms']:>12.1f} "
            f"({head['GBps']:>5.1f}){r['rest_ms']:>9.1f}"
        )


def nbval_suite_seconds() -> float:
    """Wall time of `pytest --nbval notebooks/` on the embedded checkpoint."""
    env = os.environ | {"LLAMA_CHECKPOINT": str(TINY_DIR), "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--nbval",
            "--nbval-current-env",
            "--nbval-sanitize-with",
            "tests/nbval_sanitize.cfg",
            "notebooks",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError("the nbval suite failed:\n" + result.stdout[-2000:])
    return seconds


def summarize(groups: list[dict], nbval_suite_s: float | None) -> dict:
    """results.json: the best round's bandwidth, one row per (model, dtype or scheme,
    implementation) except the eager cached run, each 1B row with its roofline fraction,
    and the 1B-shape rooflines at the best round's bandwidth."""
    bandwidth = max(b for group in groups for b in group["bandwidth_GBps"])
    rows = []
    for g in groups:
        for impl, rate in g["tokens_per_s"].items():
            if impl == EAGER:
                continue
            scheme = impl.split(" ")[1] if impl.startswith("scratch-cache ") else None
            row = {
                "model": g["model"],
                "impl": "scratch-cache" if scheme else impl,
                "dtype": scheme or g["dtype"],
                "prompt_tokens": g["prompt_tokens"],
                "new_tokens": g["new_tokens"],
                "tokens_per_s": rate,
            }
            if g["model"] == "1b-shape":
                row["roofline_fraction"] = roofline_fraction(g, impl)
            rows.append(row)
    roofline = {}
    for g in groups:
        if g["model"] == "1b-shape":
            for impl, bytes_read in g["bytes_per_token"].items():
                if impl == EAGER:
                    continue
                scheme = impl.split(" ")[1] if impl.startswith("scratch-cache ") else g["dtype"]
                roofline[f"1b-shape-{scheme}"] = round(bandwidth * 1e9 / bytes_read, 3)
    return {
        "bandwidth_GBps": round(bandwidth, 2),
        "rows": rows,
        "roofline_tokens_per_s": roofline,
        "nbval_suite_s": nbval_suite_s,
    }


def plot(results: dict, details: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = ["scratch-cache", "scratch-cache int8", "scratch-cache int4", EAGER, "scratch-nocache", "transformers"]
    colors = {"scratch-cache": "C0", "scratch-cache int8": "C2", "scratch-cache int4": "C4", EAGER: "#9ecae1"}
    colors |= {"scratch-nocache": "C7", "transformers": "C1"}
    groups = details["groups"]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 4.2), constrained_layout=True, squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        rates = group["tokens_per_s"]
        names = [i for i in order if i in rates]
        xs = range(len(names))
        ax.bar(xs, [rates[n] for n in names], color=[colors[n] for n in names])
        labels = [LABELS[n] for n in names]
        if details.get("device") == "cuda":
            labels = [label.replace("(compiled)", "(CUDA graph)") for label in labels]
        ax.set_xticks(xs, labels, fontsize=7)
        for i, n in enumerate(names):
            ax.text(i, rates[n], f"{rates[n]:.1f}", ha="center", va="bottom", fontsize=8)
            if group["model"] == "1b-shape" and n != EAGER:  # each bar's own roofline, at the median round's bandwidth
                roof = details["bandwidth_median_GBps"] * 1e9 / group["bytes_per_token"][n]
                ax.plot([i - 0.4, i + 0.4], [roof, roof], color="C3", ls="--", lw=1.2)
        if group["model"] == "1b-shape":
            ax.plot(
                [], [], color="C3", ls="--", label=f"roofline at {details['bandwidth_median_GBps']:.0f} GB/s (median)"
            )
            ax.legend(fontsize=7, loc="upper right")
            tops = [details["bandwidth_median_GBps"] * 1e9 / b for b in group["bytes_per_token"].values()]
            ax.set_ylim(0, max(*tops, *rates.values()) * 1.3)
        ax.set_title(f"{group['model']}, {group['dtype']}")
        ax.set_ylabel("tokens / s (greedy, 128 new)")
    fig.suptitle(
        f"Decode speed on {details['machine']}; streaming read {results['bandwidth_GBps']:.1f} GB/s "
        f"(best round), {details['bandwidth_median_GBps']:.1f} GB/s (median)"
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} threads"


def print_table(results: dict, details: dict) -> None:
    print(
        f"\n{details['machine']}; streaming read {results['bandwidth_GBps']:.1f} GB/s in the best round, "
        f"{details['bandwidth_median_GBps']:.1f} GB/s median"
    )
    print(f"{'model':<10} {'dtype':<9} {'impl':<20} {'tokens/s':>9} {'vs transformers':>16} {'of roofline':>12}")
    for group in details["groups"]:
        rates = group["tokens_per_s"]
        for impl, rate in rates.items():
            share = f"{roofline_fraction(group, impl):.0%}" if group["model"] == "1b-shape" else "-"
            print(
                f"{group['model']:<10} {group['dtype']:<9} {impl:<20} {rate:>9.2f} "
                f"{rate / rates['transformers']:>15.2f}x {share:>12}"
            )
        if "scratch-nocache" in rates:
            print(
                f"{group['model']}: cached / uncached = {rates['scratch-cache'] / rates['scratch-nocache']:.1f}x "
                f"(eager cached / uncached = {rates[EAGER] / rates['scratch-nocache']:.1f}x)"
            )
        for scheme in QUANTIZED:
            impl = f"scratch-cache {scheme}"
            if impl in rates:
                print(
                    f"{group['model']} {scheme} / compiled {group['dtype']} = {rates[impl] / rates['scratch-cache']:.2f}x"
                )
        print(f"{group['model']} {group['dtype']}: warm-up (compiling included), s: {group['warmup_s']}")
    if results["nbval_suite_s"] is not None:
        print(f"pytest --nbval notebooks/: {results['nbval_suite_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    from tqdm.auto import tqdm

    parser = argparse.ArgumentParser(description="Benchmark decoding speed (writes build/bench/)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per model and dtype (median)")
    parser.add_argument("--skip-1b", action="store_true", help="only the tiny checkpoint (quick)")
    parser.add_argument("--skip-nbval", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default build/bench)")
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
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if args.profile:
        if cuda:
            parser.error("--profile times the CPU kernels: run it without --device cuda")
        rows = where_time_goes(llama_3_2_1b_config(), random_state_dict(llama_3_2_1b_config(), seed=0))
        text = json.dumps({"machine": machine("cpu"), "torch": torch.__version__, "rows": rows}, indent=2) + "\n"
        atomic_write_text(args.out / "profile.json", text)
        print_profile(rows)
        print(f"wrote profile.json in {display_path(args.out)}")
        return 0

    groups = []
    tiny_cfg, tiny_sd = load_checkpoint(TINY_DIR, dtype=torch.float32)
    with tqdm(total=1 if args.skip_1b else 3, desc="bench") as progress:
        groups.append(bench_model("tiny", tiny_cfg, tiny_sd, torch.float32, args.device, args.repeats, True, progress))
        del tiny_sd
        if not args.skip_1b:
            cfg = llama_3_2_1b_config()
            sd = random_state_dict(cfg, seed=0)
            schemes = () if cuda else QUANTIZED  # the weight-only kernels are CPU kernels
            groups.append(
                bench_model("1b-shape", cfg, sd, torch.bfloat16, args.device, args.repeats, False, progress, schemes)
            )
            groups.append(bench_model("1b-shape", cfg, sd, torch.float32, args.device, args.repeats, False, progress))
            del sd
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
