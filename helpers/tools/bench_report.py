"""``make bench``'s outputs: results.json's rows, the figure and the printed table."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..kernels import KERNEL_SCHEMES as QUANTIZED
from .roofline import roofline_fraction

EAGER = "scratch-cache eager"  # not a results.json row: details.json, the table and the figure

LABELS = {
    "scratch-cache": "scratch, cache\n(compiled)",
    EAGER: "scratch, cache\n(eager)",
    "scratch-nocache": "scratch,\nno cache",
    "transformers": "transformers",
    "scratch-cache int8": "int8 weights\n(compiled)",
    "scratch-cache int4": "int4 weights\n(compiled)",
    "scratch-cache w8a8": "int8 weights and\nactivations (compiled)",
    "llama.cpp bf16": "llama.cpp\nbf16",
    "llama.cpp q8_0": "llama.cpp\nQ8_0",
    "llama.cpp q4_0": "llama.cpp\nQ4_0",
}
PEER = "llama.cpp"
# the book's run each llama.cpp type is compared with, per round
BOOK_OF_PEER = {"bf16": "scratch-cache", "q8_0": "scratch-cache int8", "q4_0": "scratch-cache int4"}


def split_impl(impl: str, dtype: str) -> tuple[str, str]:
    """A group's implementation name -> results.json's (impl, dtype): "scratch-cache int8" is
    ("scratch-cache", "int8"), "llama.cpp q8_0" is ("llama.cpp", "q8_0")."""
    name, _, variant = impl.partition(" ")
    if name in ("scratch-cache", PEER) and variant and variant != "eager":
        return name, variant
    return impl, dtype


def per_round_ratio(group: dict, impl: str, other: str) -> list[float]:
    """tokens/s of ``impl`` over ``other``'s, round by round (they ran side by side)."""
    return [round(b / a, 3) for a, b in zip(group["seconds"][impl], group["seconds"][other], strict=True)]


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
            name, dtype = split_impl(impl, g["dtype"])
            row = {
                "model": g["model"],
                "impl": name,
                "dtype": dtype,
                "prompt_tokens": g["prompt_tokens"],
                "new_tokens": g["new_tokens"],
                "tokens_per_s": rate,
            }
            if g["model"] == "1b-shape":
                row["roofline_fraction"] = roofline_fraction(g, impl)
            if name == PEER:
                row["bytes_per_token"] = g["bytes_per_token"][impl]
                book = BOOK_OF_PEER[dtype]
                row["book"] = split_impl(book, g["dtype"])[1]
                row["book_over_peer_per_round"] = per_round_ratio(g, book, impl)
            rows.append(row)
    roofline = {}
    for g in groups:
        if g["model"] == "1b-shape":
            for impl, bytes_read in g["bytes_per_token"].items():
                if impl == EAGER:
                    continue
                name, dtype = split_impl(impl, g["dtype"])
                key = f"1b-shape-{dtype}" + (f"-{PEER}" if name == PEER else "")
                roofline[key] = round(bandwidth * 1e9 / bytes_read, 3)
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

    order = ["scratch-cache", "llama.cpp bf16", "scratch-cache int8", "scratch-cache w8a8", "llama.cpp q8_0"]
    order += ["scratch-cache int4", "llama.cpp q4_0", EAGER, "scratch-nocache", "transformers"]
    colors = {"scratch-cache": "C0", "scratch-cache int8": "C2", "scratch-cache int4": "C4", EAGER: "#9ecae1"}
    colors |= {"scratch-cache w8a8": "C8", "scratch-nocache": "C7", "transformers": "C1"}
    colors |= {f"{PEER} {t}": "C5" for t in BOOK_OF_PEER}  # the peer's bars in one colour, beside the book's
    groups = details["groups"]
    bars = [[i for i in order if i in group["tokens_per_s"]] for group in groups]
    widths = [max(4, len(names)) for names in bars]  # a panel's width follows its number of bars
    fig, axes = plt.subplots(
        1,
        len(groups),
        figsize=(1.15 * sum(widths), 4.2),
        constrained_layout=True,
        squeeze=False,
        gridspec_kw={"width_ratios": widths},
    )
    for ax, group, names in zip(axes[0], groups, bars, strict=True):
        rates = group["tokens_per_s"]
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
