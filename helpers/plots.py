"""Small plotting helpers shared by the notebooks (matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch


def style() -> None:
    """One look for every figure in the book."""
    plt.rcParams.update(
        {
            "figure.dpi": 90,
            "savefig.dpi": 90,
            "axes.grid": False,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "xtick.labelsize": 9,
            "ytick.labelsize": 9,
            "figure.constrained_layout.use": True,  # also makes room for colorbars
        }
    )


def heatmap(
    ax,
    matrix: torch.Tensor,
    xlabels: Sequence[str] | None = None,
    ylabels: Sequence[str] | None = None,
    title: str = "",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool = False,
    fmt: str = "{:.2f}",
    colorbar: bool = True,
):
    """Draw a 2-D tensor with token strings on the axes; -inf cells show as blank."""
    data = matrix.detach().float().cpu()
    data = torch.where(torch.isinf(data), torch.nan, data)
    im = ax.imshow(data.numpy(), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    if xlabels is not None:
        ax.set_xticks(range(len(xlabels)), list(xlabels), rotation=60, ha="right")
    if ylabels is not None:
        ax.set_yticks(range(len(ylabels)), list(ylabels))
    if annotate:
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                v = float(data[i, j])
                if v == v:  # not NaN
                    r, g, b, _ = im.cmap(im.norm(v))
                    dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                    text = fmt.format(v)
                    text = text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"
                    ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return im


def token_labels(pieces: Sequence[str]) -> list[str]:
    """Readable axis labels: special tokens shortened, leading spaces shown as '␣'."""
    out = []
    for p in pieces:
        if p.startswith("<|") and p.endswith("|>"):
            p = {"<|begin_of_text|>": "<bos>", "<|end_of_text|>": "<eos>"}.get(p, p)
        out.append(p.replace(" ", "␣"))
    return out


# The boxes of the pipeline schematic, left to right: key -> (label, in the repeated block?)
_PIPELINE = [
    ("text", "text", False),
    ("tokens", "tokens", False),
    ("embedding", "embedding", False),
    ("norm1", "RMSNorm", True),
    ("attention", "attention\nRoPE · GQA", True),
    ("add1", "+", True),
    ("norm2", "RMSNorm", True),
    ("ffn", "SwiGLU\nFFN", True),
    ("add2", "+", True),
    ("final_norm", "RMSNorm", False),
    ("lm_head", "LM head", False),
    ("next", "next\ntoken", False),
]


def pipeline(
    cfg, n_tokens: int | str, highlight: Sequence[str] = (), notes: dict[str, str] | None = None, title: str = ""
):
    """Draw the model as a chain of boxes with the tensor shapes between them, for this config.

    ``highlight``: keys of the boxes this chapter builds (text, tokens, embedding, norm1,
    attention, add1, norm2, ffn, add2, final_norm, lm_head, next); ``notes``: a line of
    text under a box (e.g. what a chapter changes there). ``n_tokens`` may be a symbol ("N").
    Returns the figure.
    """
    notes = notes or {}
    n, d, v = n_tokens, cfg.dim, cfg.vocab_size
    shapes = {  # the tensor on the arrow leaving each box
        "text": "",
        "tokens": f"({n},)",
        "embedding": f"({n}, {d})",
        "norm1": f"({n}, {d})",
        "attention": f"({n}, {d})",
        "add1": f"({n}, {d})",
        "norm2": f"({n}, {d})",
        "ffn": f"({n}, {d})",
        "add2": f"({n}, {d})",
        "final_norm": f"({n}, {d})",
        "lm_head": f"({n}, {v})",
        "next": "",
    }
    under = {
        "attention": f"Q ({n}, {cfg.n_heads}, {cfg.head_dim})\nK, V ({n}, {cfg.n_kv_heads}, {cfg.head_dim})",
        "ffn": f"hidden ({n}, {cfg.ffn_hidden_dim})",
        "lm_head": "tied to the\nembedding",
    } | notes
    fig, ax = plt.subplots(figsize=(12, 2.9))
    # each box as wide as its label needs at a readable size; the "+" of a residual is narrow
    slots = [0.45 if label == "+" else 0.7 + 0.075 * max(map(len, label.split("\n"))) for _, label, _ in _PIPELINE]
    gap, y = 0.5, 0.0
    xs = [sum(slots[:i]) + i * gap for i in range(len(_PIPELINE))]
    inside = [i for i, (_, _, inner) in enumerate(_PIPELINE) if inner]
    left_end, right_end = xs[inside[0]], xs[inside[-1]] + slots[inside[-1]]
    ax.add_patch(
        plt.Rectangle((left_end - 0.18, -0.95), right_end - left_end + 0.36, 2.1, fill=False, ls="--", lw=1, ec="0.45")
    )
    ax.text(right_end + 0.1, -0.9, f"× L = {cfg.n_layers} blocks", fontsize=9, color="0.35", ha="right", va="bottom")
    for x, slot, (key, label, _) in zip(xs, slots, _PIPELINE, strict=True):
        on = key in highlight
        small = label == "+"
        box_w = 0.36 if small else slot
        ax.add_patch(
            plt.Rectangle(
                (x + (slot - box_w) / 2, y - 0.3),
                box_w,
                0.6,
                color="#f4a261" if on else "#e9ecef",
                ec="#9c4a0f" if on else "0.6",
                lw=1.4 if on else 0.8,
            )
        )
        ax.text(
            x + slot / 2,
            y,
            label,
            ha="center",
            va="center",
            fontsize=11 if small else 8.5,
            weight="bold" if on else None,
        )
        if key in under:
            ax.text(x + slot / 2, y - 0.42, under[key], ha="center", va="top", fontsize=7.8, color="0.25")
    for x0, slot, (key, _, _), x1 in zip(xs, slots, _PIPELINE, xs[1:], strict=False):
        ax.annotate("", xy=(x1, y), xytext=(x0 + slot, y), arrowprops={"arrowstyle": "->", "lw": 0.8, "color": "0.3"})
        if shapes[key]:  # on a white ground: a residual connection leaves from under some of these labels
            ax.text(
                (x0 + slot + x1) / 2, y + 0.36, shapes[key], ha="center", va="bottom", fontsize=7.8, color="0.2",
                bbox={"fc": "white", "ec": "none", "pad": 0.6}, zorder=3,
            )  # fmt: skip
    for start, plus in (("norm1", "add1"), ("norm2", "add2")):  # the residual connections skip each sub-layer
        i, j = (
            next(k for k, p in enumerate(_PIPELINE) if p[0] == start),
            next(k for k, p in enumerate(_PIPELINE) if p[0] == plus),
        )
        x0, x1 = xs[i] - gap / 2, xs[j] + slots[j] / 2
        ax.plot([x0, x0, x1, x1], [y, y + 0.78, y + 0.78, y + 0.3], color="#2a9d8f", lw=1)
    ax.text(xs[3], y + 0.84, "residual stream", fontsize=7.8, color="#2a9d8f")
    ax.set_xlim(-0.2, xs[-1] + slots[-1] + 0.2)
    ax.set_ylim(-1.05, 1.2)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=11, loc="left")
    return fig
