"""``make bench --profile`` (``python -m helpers.tools.bench --profile``): where a 1B-shape
decode step's time goes per weight format, its products against the whole step."""

from __future__ import annotations

import statistics
import time

import torch

from ..config import ModelConfig
from ..kernels import KERNEL_SCHEMES as QUANTIZED
from ..kernels import quantize_for_kernels
from .bench import prompt_ids, tied_in
from .roofline import measure_bandwidth


def where_time_goes(cfg: ModelConfig, sd: dict, schemes=QUANTIZED, rounds: int = 5, steps: int = 16) -> list[dict]:
    """``--profile``: per weight format, one compiled decode step against its matrix products alone.

    The products -- the step's 7 L projections, then its LM head, one row each -- run through the
    same ``linear``, compiled with the same one-row rewrite as in the step, back to back on the
    same weights. Their times against the step's say where its time goes; their bytes over their
    time, next to the streaming read of the same round, say whether they wait on memory (near
    the bandwidth) or on arithmetic (well below it). Formats take turns in each round; medians."""
    from ..compiled import compiled_step, decompose_one_row_products
    from ..generation import prefill
    from ..kv_cache import KVCache
    from ..linear import linear
    from ..quantize import is_projection
    from ..rope import precompute_freqs_cis

    sd = tied_in(sd, torch.bfloat16)
    formats = {"bfloat16": sd} | {s: quantize_for_kernels(sd, s) for s in schemes}
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
        with torch.inference_mode(), decompose_one_row_products():
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
            nbytes = sum(w.nbytes for w in ws)
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
