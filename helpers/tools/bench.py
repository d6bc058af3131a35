"""``make bench``: how fast does the book's own implementation generate?

Greedy decoding, a 16-token prompt and 128 new tokens, end-of-text ignored, measured
in one run on one machine:

- ``scratch-cache``   helpers.generate with the KV cache (chapter 09), its decode step
                      compiled (``compile=True``, helpers/compiled.py);
- ``scratch-cache`` eager, the same without compiling (the code as the chapters run it):
                      in the printed table, the figure and details.json, not in results.json;
- ``scratch-nocache`` the uncached loop of chapter 08 (tiny model only: quadratic);
- ``transformers``    LlamaForCausalLM.generate with its own cache, same weights and dtype;

on the embedded tiny checkpoint (float32) and on random weights of the real
Llama-3.2-1B shape (bfloat16 and float32). Decoding one token must read every weight
once, so memory bandwidth bounds it: the roofline is bandwidth / bytes of weights read
per token, with the bandwidth measured by a streaming read between the timed rounds
(the best round counts: a roofline is a bound).

Writes build/bench/results.json (a fixed schema, tested), details.json (every timing,
compile times, the machine) and decode.png, and prints a table.
``python -m helpers.bench --device cuda`` runs the same on a GPU.
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

from ..checkpoint import TINY_DIR, load_checkpoint, random_state_dict
from ..config import ModelConfig, llama_3_2_1b_config
from ..files import REPO_ROOT, display_path
from ..generation import generate, generate_uncached

OUT_DIR = REPO_ROOT / "build" / "bench"
PROMPT_TOKENS = 16
NEW_TOKENS = 128
WARMUP_TOKENS = 8


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


def bytes_per_token(cfg: ModelConfig, dtype: torch.dtype) -> int:
    """Weight bytes one decode step reads: every block's matrices and norms, the final norm,
    the LM head (V x d), and one embedding row."""
    size = torch.empty((), dtype=dtype).element_size()
    d, f, hd = cfg.dim, cfg.ffn_hidden_dim, cfg.head_dim
    per_block = d * (cfg.n_heads + 2 * cfg.n_kv_heads) * hd + cfg.n_heads * hd * d + 3 * d * f + 2 * d
    return size * (cfg.n_layers * per_block + d + cfg.vocab_size * d + d)


def prompt_ids(cfg: ModelConfig) -> list[int]:
    """A fixed 16-token prompt: BOS and 15 ids that have embeddings in every checkpoint used here."""
    from ..tokenizer import Tokenizer

    tok = Tokenizer.load(None)
    ids = tok.encode("The capital of France is Paris. The capital of Japan is Tokyo. The")[:PROMPT_TOKENS]
    assert len(ids) == PROMPT_TOKENS and max(ids) < cfg.vocab_size
    return ids


def time_scratch(sd, cfg, ids, new_tokens: int, cache: bool = True, **options) -> tuple[float, list[int]]:
    start = time.perf_counter()
    new = (generate if cache else generate_uncached)(ids, sd, cfg, new_tokens, **options)
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
}


def bench_model(name, cfg, sd, dtype, device, repeats, nocache: bool, progress) -> dict:
    """Time every implementation on one (model, dtype): a short warm-up each (the compile
    happens there), then rounds in which they take turns, so that a slow phase of the machine
    hits all of them alike. Each rate is the median over the rounds."""
    from ..hf import hf_model

    sd = {k: v.to(dtype) for k, v in sd.items()}
    sd["output.weight"] = sd["tok_embeddings.weight"]
    model = hf_model(sd, cfg, dtype).to(device)
    sd = {k: v.to(device) for k, v in sd.items()}
    ids = prompt_ids(cfg)
    impls = {
        "scratch-cache": lambda n: time_scratch(sd, cfg, ids, n, compile=True),
        EAGER: lambda n: time_scratch(sd, cfg, ids, n),
    }
    if nocache:
        impls["scratch-nocache"] = lambda n: time_scratch(sd, cfg, ids, n, cache=False)
    impls["transformers"] = lambda n: time_transformers(model, ids, n)
    label = f"{name} {str(dtype).removeprefix('torch.')}"
    warmup = {}
    for impl, fn in impls.items():
        progress.set_description(f"{label} warm-up {impl}")
        warmup[impl] = round(fn(WARMUP_TOKENS)[0], 2)
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
    agreement = {}
    reference = outputs[EAGER]
    for impl, tokens in outputs.items():
        agreement[impl] = sum(a == b for a, b in zip(tokens, reference, strict=True))
        if dtype == torch.float32 and agreement[impl] < NEW_TOKENS:  # bf16 rounding may fork a random model
            print(f"note: {label} {impl} agrees with eager on {agreement[impl]}/{NEW_TOKENS} tokens", file=sys.stderr)
    return {
        "model": name,
        "dtype": str(dtype).removeprefix("torch."),
        "prompt_tokens": len(ids),
        "new_tokens": NEW_TOKENS,
        "seconds": times,
        "tokens_per_s": {impl: round(NEW_TOKENS / statistics.median(t), 3) for impl, t in times.items()},
        "warmup_s": warmup,
        "tokens_equal_to_eager": agreement,
        "bandwidth_GBps": bandwidth,
    }


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


def plot(results: dict, details: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = ["scratch-cache", EAGER, "scratch-nocache", "transformers"]
    colors = {"scratch-cache": "C0", EAGER: "#9ecae1", "scratch-nocache": "C7", "transformers": "C1"}
    groups = details["groups"]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 4), constrained_layout=True, squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        rates = group["tokens_per_s"]
        names = [i for i in impls if i in rates]
        ax.bar(range(len(names)), [rates[n] for n in names], color=[colors[n] for n in names])
        ax.set_xticks(range(len(names)), [LABELS[n] for n in names], fontsize=8)
        for i, n in enumerate(names):
            ax.text(i, rates[n], f"{rates[n]:.1f}", ha="center", va="bottom", fontsize=8)
        roof = results["roofline_tokens_per_s"].get(f"{group['model']}-{group['dtype']}")
        if roof:
            ax.axhline(roof, color="C3", ls="--", label=f"roofline {roof:.1f} tok/s")
            typical = roof * details["bandwidth_median_GBps"] / results["bandwidth_GBps"]
            ax.axhline(typical, color="C3", ls=":", label=f"at the median read: {typical:.1f}")
            ax.legend(fontsize=8, loc="upper right")
            ax.set_ylim(0, max(roof, *rates.values()) * 1.35)
        ax.set_title(f"{group['model']}, {group['dtype']}")
        ax.set_ylabel("tokens / s (greedy, 128 new)")
    fig.suptitle(
        f"Decode speed on {details['machine']}; streaming read {results['bandwidth_GBps']:.1f} GB/s "
        f"(best round), {details['bandwidth_median_GBps']:.1f} GB/s (median)"
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize(groups: list[dict], nbval_suite_s: float | None) -> dict:
    """results.json, in the schema tests/test_tools.py fixes: the best round's bandwidth, one row per (model,
    dtype, implementation) except the eager cached run, and the 1B-shape rooflines."""
    bandwidth = max(b for group in groups for b in group["bandwidth_GBps"])
    rows = [
        {
            "model": g["model"],
            "impl": impl,
            "dtype": g["dtype"],
            "prompt_tokens": g["prompt_tokens"],
            "new_tokens": g["new_tokens"],
            "tokens_per_s": rate,
        }
        for g in groups
        for impl, rate in g["tokens_per_s"].items()
        if impl != EAGER
    ]
    cfg = llama_3_2_1b_config()
    roofline = {
        f"1b-shape-{g['dtype']}": round(bandwidth * 1e9 / bytes_per_token(cfg, getattr(torch, g["dtype"])), 3)
        for g in groups
        if g["model"] == "1b-shape"
    }
    return {
        "bandwidth_GBps": round(bandwidth, 2),
        "rows": rows,
        "roofline_tokens_per_s": roofline,
        "nbval_suite_s": nbval_suite_s,
    }


def machine(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} threads"


def print_table(results: dict, details: dict) -> None:
    print(
        f"\n{details['machine']}; streaming read {results['bandwidth_GBps']:.1f} GB/s in the best round, "
        f"{details['bandwidth_median_GBps']:.1f} GB/s median (the roofline uses the best)"
    )
    print(f"{'model':<10} {'dtype':<9} {'impl':<20} {'tokens/s':>9} {'vs transformers':>16} {'of roofline':>12}")
    for group in details["groups"]:
        rates = group["tokens_per_s"]
        roof = results["roofline_tokens_per_s"].get(f"{group['model']}-{group['dtype']}")
        for impl, rate in rates.items():
            share = f"{rate / roof:.0%}" if roof else "-"
            print(
                f"{group['model']:<10} {group['dtype']:<9} {impl:<20} {rate:>9.2f} "
                f"{rate / rates['transformers']:>15.2f}x {share:>12}"
            )
        if "scratch-nocache" in rates:
            print(
                f"{group['model']}: cached / uncached = {rates['scratch-cache'] / rates['scratch-nocache']:.1f}x "
                f"(eager cached / uncached = {rates[EAGER] / rates['scratch-nocache']:.1f}x)"
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
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to PyTorch here")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    groups = []
    tiny_cfg, tiny_sd = load_checkpoint(TINY_DIR, dtype=torch.float32)
    with tqdm(total=1 if args.skip_1b else 3, desc="bench") as progress:
        groups.append(bench_model("tiny", tiny_cfg, tiny_sd, torch.float32, args.device, args.repeats, True, progress))
        del tiny_sd
        if not args.skip_1b:
            cfg = llama_3_2_1b_config()
            sd = random_state_dict(cfg, seed=0)
            for dtype in (torch.bfloat16, torch.float32):
                groups.append(bench_model("1b-shape", cfg, sd, dtype, args.device, args.repeats, False, progress))
            del sd
    results = summarize(groups, None if args.skip_nbval else round(nbval_suite_seconds(), 1))
    details = {
        "machine": machine(args.device),
        "torch": torch.__version__,
        "bandwidth_note": "GB/s of each round's streaming read; results.json's bandwidth_GBps is the best",
        "bandwidth_median_GBps": statistics.median(b for g in groups for b in g["bandwidth_GBps"]),
        "groups": groups,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "details.json").write_text(json.dumps(details, indent=2) + "\n")
    plot(results, details, args.out / "decode.png")
    print_table(results, details)
    print(f"wrote results.json, details.json and decode.png in {display_path(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
