"""``make bench``: how fast does the book's own implementation generate?

Greedy decoding, a 16-token prompt and 128 new tokens, end-of-text ignored, measured
in one run on one machine:

- ``scratch-cache``   helpers.generate with the KV cache (chapter 09);
- ``scratch-nocache`` the uncached loop of chapter 08 (tiny model only: quadratic);
- ``transformers``    LlamaForCausalLM.generate with its own cache, same weights and dtype;

on the embedded tiny checkpoint (float32) and on random weights of the real
Llama-3.2-1B shape (bfloat16 and float32). Decoding one token must read every weight
once, so memory bandwidth bounds it: the roofline is bandwidth / bytes of weights read
per token, with the bandwidth measured here by a streaming read.

Writes build/bench/results.json and build/bench/decode.png, prints a table.
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

from .checkpoint import REPO_ROOT, TINY_DIR, display_path, load_checkpoint, random_state_dict
from .config import ModelConfig, llama_3_2_1b_config
from .sampling import generate

OUT_DIR = REPO_ROOT / "build" / "bench"
PROMPT_TOKENS = 16
NEW_TOKENS = 128


def measure_bandwidth(gib: float = 1.0, repeats: int = 7) -> float:
    """Streaming-read bandwidth in GB/s: the median time to sum a large float32 tensor."""
    x = torch.ones(int(gib * 2**30) // 4)
    x.sum()  # fault the pages in
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - start)
    return x.nbytes / statistics.median(times) / 1e9


def bytes_per_token(cfg: ModelConfig, dtype: torch.dtype) -> int:
    """Weight bytes one decode step reads: every block's matrices and norms, the final norm,
    the LM head (V x d), and one embedding row."""
    size = torch.empty((), dtype=dtype).element_size()
    d, f, hd = cfg.dim, cfg.ffn_hidden_dim, cfg.head_dim
    per_block = d * (cfg.n_heads + 2 * cfg.n_kv_heads) * hd + cfg.n_heads * hd * d + 3 * d * f + 2 * d
    return size * (cfg.n_layers * per_block + d + cfg.vocab_size * d + d)


def prompt_ids(cfg: ModelConfig, seed: int = 0) -> list[int]:
    """A fixed 16-token prompt: BOS and 15 ids that have embeddings in every checkpoint used here."""
    from .tokenizer import Tokenizer

    tok = Tokenizer.load(None)
    ids = tok.encode("The capital of France is Paris. The capital of Japan is Tokyo. The")[:PROMPT_TOKENS]
    assert len(ids) == PROMPT_TOKENS and max(ids) < cfg.vocab_size
    return ids


def time_scratch(sd, cfg, ids, use_cache: bool) -> tuple[float, list[int]]:
    start = time.perf_counter()
    new = generate(ids, sd, cfg, NEW_TOKENS, use_cache=use_cache)
    return time.perf_counter() - start, new


def time_transformers(model, ids) -> tuple[float, list[int]]:
    inputs = torch.tensor([ids])
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            inputs,
            attention_mask=torch.ones_like(inputs),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=None,  # like the scratch runs: end-of-text is an ordinary token here
            pad_token_id=0,
        )
    return time.perf_counter() - start, out[0, len(ids) :].tolist()


def bench_model(name, cfg, sd, dtype, repeats, rows, nocache: bool, progress) -> None:
    from .hf import hf_model

    sd = {k: v.to(dtype) for k, v in sd.items()}
    sd["output.weight"] = sd["tok_embeddings.weight"]
    ids = prompt_ids(cfg)
    impls = [("scratch-cache", lambda: time_scratch(sd, cfg, ids, True))]
    if nocache:
        impls.append(("scratch-nocache", lambda: time_scratch(sd, cfg, ids, False)))
    model = hf_model(sd, cfg, dtype)
    impls.append(("transformers", lambda: time_transformers(model, ids)))
    # One warm-up run each, then the implementations take turns, so that a slow phase of
    # the machine hits all of them alike; each row is the median of its runs.
    progress.set_description(f"{name} {str(dtype)[6:]} warm-up")
    outputs = {impl: fn()[1] for impl, fn in impls}
    times: dict[str, list[float]] = {impl: [] for impl, _ in impls}
    for r in range(repeats):
        for impl, fn in impls:
            progress.set_description(f"{name} {str(dtype)[6:]} {impl} ({r + 1}/{repeats})")
            times[impl].append(fn()[0])
    for impl, _ in impls:
        rate = NEW_TOKENS / statistics.median(times[impl])
        rows.append(
            {
                "model": name,
                "impl": impl,
                "dtype": str(dtype).removeprefix("torch."),
                "prompt_tokens": len(ids),
                "new_tokens": NEW_TOKENS,
                "tokens_per_s": round(rate, 3),
            }
        )
    progress.update(1)
    if dtype == torch.float32:  # same greedy tokens from every implementation (float32 only)
        reference = outputs["scratch-cache"]
        for impl, tokens in outputs.items():
            agree = sum(a == b for a, b in zip(tokens, reference, strict=True))
            if agree < NEW_TOKENS:
                print(f"note: {name} {impl} agrees with scratch-cache on {agree}/{NEW_TOKENS} tokens", file=sys.stderr)


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


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = []
    for row in results["rows"]:
        key = (row["model"], row["dtype"])
        if key not in groups:
            groups.append(key)
    impls = ["scratch-cache", "scratch-nocache", "transformers"]
    colors = {"scratch-cache": "C0", "scratch-nocache": "C7", "transformers": "C1"}
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.8), constrained_layout=True, squeeze=False)
    for ax, (model, dtype) in zip(axes[0], groups, strict=True):
        rows = {r["impl"]: r["tokens_per_s"] for r in results["rows"] if (r["model"], r["dtype"]) == (model, dtype)}
        names = [i for i in impls if i in rows]
        ax.bar(range(len(names)), [rows[n] for n in names], color=[colors[n] for n in names])
        ax.set_xticks(range(len(names)), names, rotation=20)
        for i, n in enumerate(names):
            ax.text(i, rows[n], f"{rows[n]:.1f}", ha="center", va="bottom", fontsize=8)
        roof = results["roofline_tokens_per_s"].get(f"{model}-{dtype}")
        if roof:
            ax.axhline(roof, color="C3", ls="--", label=f"roofline {roof:.1f} tok/s")
            ax.legend(fontsize=8, loc="lower right")
        ax.set_title(f"{model}, {dtype}")
        ax.set_ylabel("tokens / s (greedy, 128 new)")
    fig.suptitle(f"Decode speed, {torch.get_num_threads()} CPU threads, bandwidth {results['bandwidth_GBps']:.1f} GB/s")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from tqdm.auto import tqdm

    parser = argparse.ArgumentParser(description="Benchmark decoding speed (writes build/bench/)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (median), after one warm-up")
    parser.add_argument("--skip-1b", action="store_true", help="only the tiny checkpoint (quick)")
    parser.add_argument("--skip-nbval", action="store_true")
    args = parser.parse_args(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    bandwidth = measure_bandwidth()
    rows: list[dict] = []
    tiny_cfg, tiny_sd = load_checkpoint(TINY_DIR, dtype=torch.float32)
    steps = 1 + (0 if args.skip_1b else 2)
    with tqdm(total=steps, desc="bench") as progress:
        bench_model("tiny", tiny_cfg, tiny_sd, torch.float32, args.repeats, rows, True, progress)
        del tiny_sd
        roofline = {}
        if not args.skip_1b:
            cfg = llama_3_2_1b_config()
            sd = random_state_dict(cfg, seed=0)
            for dtype in (torch.bfloat16, torch.float32):
                bench_model("1b-shape", cfg, sd, dtype, args.repeats, rows, False, progress)
                name = f"1b-shape-{str(dtype).removeprefix('torch.')}"
                roofline[name] = round(bandwidth * 1e9 / bytes_per_token(cfg, dtype), 3)
            del sd
    results = {
        "bandwidth_GBps": round(bandwidth, 2),
        "rows": rows,
        "roofline_tokens_per_s": roofline,
        "nbval_suite_s": None if args.skip_nbval else round(nbval_suite_seconds(), 1),
    }
    (OUT_DIR / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, OUT_DIR / "decode.png")

    print(f"\nmemory bandwidth (streaming read): {bandwidth:.1f} GB/s; {torch.get_num_threads()} threads")
    print(f"{'model':<10} {'dtype':<9} {'impl':<16} {'tokens/s':>9} {'vs transformers':>16} {'of roofline':>12}")
    for r in rows:
        key = (r["model"], r["dtype"], "transformers")
        ref = next(x["tokens_per_s"] for x in rows if (x["model"], x["dtype"], x["impl"]) == key)
        roof = roofline.get(f"{r['model']}-{r['dtype']}")
        share = f"{r['tokens_per_s'] / roof:.0%}" if roof else "-"
        print(
            f"{r['model']:<10} {r['dtype']:<9} {r['impl']:<16} {r['tokens_per_s']:>9.2f} "
            f"{r['tokens_per_s'] / ref:>15.2f}x {share:>12}"
        )
    tiny = {r["impl"]: r["tokens_per_s"] for r in rows if r["model"] == "tiny"}
    print(f"tiny: cached / uncached = {tiny['scratch-cache'] / tiny['scratch-nocache']:.1f}x")
    if results["nbval_suite_s"] is not None:
        print(f"pytest --nbval notebooks/: {results['nbval_suite_s']:.0f} s")
    print(f"wrote {display_path(OUT_DIR / 'results.json')} and {display_path(OUT_DIR / 'decode.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
