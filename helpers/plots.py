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
