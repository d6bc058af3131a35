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


def int8_candidates(cfg: ModelConfig, sd: dict, rounds: int = 5, repeats: int = 3) -> list[dict]:
    """``--profile``: the ways PyTorch offers to multiply one activation row by int8 weights,
    each over a step's 7 L projections (their codes streamed from memory, not from a cache),
    in turns within each round; medians. What W8A8 runs on was chosen from these numbers:

    - ``inductor float loop``: int8's compiled path, codes converted to float32 and multiplied;
    - ``_weight_int8pack_mm``: ATen's weight-only int8 kernel (bfloat16 row);
    - ``torch._int_mm``: the row rounded to int8, int8 x int8 -> int32 (oneDNN);
    - ``fbgemm dynamic``: the row rounded to uint8 with a zero point, uint8 x int8 -> int32 (VNNI).
    """
    from ..compiled import decompose_one_row_products
    from ..kernels import Int8KernelWeight, fbgemm_sums_exactly
    from ..quantize import is_projection

    int8 = quantize_for_kernels(tied_in(sd, torch.bfloat16), "int8")
    w8a8 = quantize_for_kernels(tied_in(sd, torch.bfloat16), "w8a8")
    keys = [k for k in int8 if is_projection(k)]
    rows = {n: torch.randn(1, n, dtype=torch.bfloat16) for n in {int8[k].shape[1] for k in keys}}

    def each(product):
        return lambda: [product(rows[int8[k].shape[1]], k) for k in keys]

    def int_mm(x, k):
        w = int8[k]
        scale = x.float().abs().amax(-1, keepdim=True).clamp(min=1e-12) / 127
        q = torch.round(x.float() / scale).to(torch.int8)
        return (torch._int_mm(q, w.codes.T).float() * scale * w.scales.float()).to(x.dtype)

    with decompose_one_row_products():
        loop = torch.compile(each(lambda x, k: int8[k].linear(x)), dynamic=False)
        candidates = {
            "inductor float loop": loop,
            "_weight_int8pack_mm": each(lambda x, k: Int8KernelWeight.product(int8[k], x, int8[k].scales)),
        }
        if fbgemm_sums_exactly():  # (without AVX-512 VNNI, oneDNN's _int_mm gave wrong sums here, fbgemm saturates)
            candidates["torch._int_mm"] = each(int_mm)
            candidates["fbgemm dynamic"] = each(lambda x, k: w8a8[k].linear(x))
        times = {name: [] for name in candidates}
        bandwidth = []
        with torch.inference_mode():
            reference = candidates["inductor float loop"]()  # compile, warm up, and check they agree:
            for name, fn in candidates.items():  # the same product, up to the row's rounding to 8 bits
                for got, want in zip(fn(), reference, strict=True):
                    error = float((got.float() - want.float()).norm() / want.float().norm())
                    if error > 0.05:
                        raise AssertionError(f"{name}'s product is {error:.3f} away from the float loop's")
            for _ in range(rounds):
                bandwidth.append(measure_bandwidth())
                for name, fn in candidates.items():
                    start = time.perf_counter()
                    for _ in range(repeats):
                        fn()
                    times[name].append((time.perf_counter() - start) / repeats)
    nbytes = sum(int8[k].codes.nbytes for k in keys)
    return [
        {
            "product": name,
            "matrices": len(keys),
            "ms": round(statistics.median(t) * 1e3, 2),
            "code_bytes": nbytes,
            "GBps": round(nbytes / statistics.median(t) / 1e9, 1),
            "bandwidth_GBps": round(statistics.median(bandwidth), 1),
        }
        for name, t in times.items()
    ]


def print_candidates(rows: list[dict]) -> None:
    first = rows[0]
    print(
        f"\none-row int8 products over the {first['matrices']} projections ({first['code_bytes'] / 1e9:.2f} GB of codes)"
    )
    for r in rows:
        print(f"{r['product']:<22}{r['ms']:>8.1f} ms {r['GBps']:>6.1f} GB/s")
