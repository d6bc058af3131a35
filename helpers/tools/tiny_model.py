"""``make tiny-model``: train the embedded tiny-llama-3.2 and write its model card.

Trains with ``helpers.train.train_tiny`` (the book's own forward and training loop),
stores the weights in bfloat16 in Meta's format, evaluates the stored weights and
writes training_log.json, loss_curve.png and MODEL_CARD.md (from model_card.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..checkpoint import TINY_DIR, load_checkpoint, save_checkpoint
from ..corpus import corpus_text, load_countries, seen_token_ids
from ..evaluate import fact_accuracy
from ..files import atomic_write_text, display_path
from ..generation import generate
from ..tokenizer import Tokenizer
from ..train import TINY_PARAMS, train_tiny

CARD_TEMPLATE = Path(__file__).with_name("model_card.md")
SAMPLE_PROMPTS = [
    "The capital of France is",
    "The capital of Japan is",
    "Kenya is a country in",
    "The currency of Brazil is the",
    "Ouagadougou is the capital of",
    "The capital of Atlantis is",
]


def plot_losses(losses: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = 50
    smooth = [
        sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
        for i in range(len(losses))
    ]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(losses, color="0.8", lw=0.6, label="per step")
    ax.plot(smooth, color="C0", lw=1.5, label=f"mean of last {window}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy (nats/token, full vocabulary)")
    ax.set_title("tiny-llama-3.2 training loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(out: Path, info: dict) -> dict:
    """Evaluate the stored checkpoint in ``out/original`` and write training_log.json, loss_curve.png, MODEL_CARD.md."""
    cfg, sd = load_checkpoint(out / "original", dtype=torch.float32)
    tok = Tokenizer.load(None)
    countries = load_countries()
    acc, misses = fact_accuracy(sd, cfg, tok, countries)
    by_continent = {}
    for name in sorted({c.continent for c in countries}):
        group = [c for c in countries if c.continent == name]
        by_continent[name] = (len(group), len(group) - sum(m[0] in {c.name for c in group} for m in misses))
    with_currency = [c for c in countries if c.currency]
    log = {
        **{k: v for k, v in info.items() if k != "losses"},
        "n_countries": len(countries),
        "n_seen_tokens": len(seen_token_ids(tok, countries)),
        "corpus_tokens_one_pass": len(tok.encode(corpus_text(countries), bos=False)),
        "final_loss_mean_last_100": round(sum(info["losses"][-100:]) / len(info["losses"][-100:]), 4),
        "capital_accuracy": round(acc, 4),
        "capital_by_continent": by_continent,
        "capital_misses": misses,
        "reverse_capital_accuracy": round(
            fact_accuracy(sd, cfg, tok, countries, "{c.capital} is the capital of", "{c.name}", with_misses=False)[0], 4
        ),
        "continent_accuracy": round(
            fact_accuracy(sd, cfg, tok, countries, "{c.name} is a country in", "{c.continent}", with_misses=False)[0], 4
        ),
        "currency_accuracy": round(
            fact_accuracy(
                sd, cfg, tok, with_currency, "The currency of {c.name} is the", "{c.currency}", with_misses=False
            )[0],
            4,
        ),
        "samples": {
            p: tok.decode(
                [t for t in generate(tok.encode(p), sd, cfg, 24, stop_ids=tok.stop_ids) if t not in tok.stop_ids]
            )
            for p in SAMPLE_PROMPTS
        },
        "losses": info["losses"],
    }
    text = json.dumps(log, indent=1, ensure_ascii=False) + "\n"
    atomic_write_text(out / "training_log.json", text)
    plot_losses(info["losses"], out / "loss_curve.png")
    card = model_card(log, out)
    atomic_write_text(out / "MODEL_CARD.md", card)
    return log


def model_card(log: dict, out: Path) -> str:
    """MODEL_CARD.md, written from the training log so that it always describes the stored checkpoint."""
    size = (out / "original" / "consolidated.00.pth").stat().st_size
    fields = {
        "PARAMS": "\n".join(f"| `{k}` | {v} |" for k, v in TINY_PARAMS.items()),
        "SIZE": f"{size / 2**20:.1f}",
        "SEEN": f"{log['n_seen_tokens']:,}",
        "COUNTRIES": str(log["n_countries"]),
        "CORPUS": f"{log['corpus_tokens_one_pass']:,}",
        "LR": str(log["lr"]),
        "STEPS": str(log["steps"]),
        "BATCH": str(log["batch_size"]),
        "SEED": str(log["seed"]),
        "SECONDS": f"{log['train_seconds']:.0f}",
        "THREADS": str(log["threads"]),
        "FIRST": f"{log['first_loss']:.2f}",
        "FINAL": f"{log['final_loss_mean_last_100']:.3f}",
        "ACC": f"{log['capital_accuracy']:.1%}",
        "ROWS": "\n".join(f"| {k} | {n} | {ok} | {ok / n:.1%} |" for k, (n, ok) in log["capital_by_continent"].items()),
        "MISSES": ", ".join(f"{c} ({want} → {got!r})" for c, want, got in log["capital_misses"]) or "none",
        "REVERSE": f"{log['reverse_capital_accuracy']:.1%}",
        "CONTINENT": f"{log['continent_accuracy']:.1%}",
        "CURRENCY": f"{log['currency_accuracy']:.1%}",
        "SAMPLES": "\n".join(f"| {p} | {g!r} |" for p, g in log["samples"].items()),
    }
    text = CARD_TEMPLATE.read_text()
    for key, value in fields.items():
        text = text.replace(f"@{key}@", value)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the embedded tiny-llama-3.2 checkpoint")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(TINY_DIR.parent), help="model directory (original/ is written inside)")
    parser.add_argument(
        "--report-only", action="store_true", help="re-evaluate the stored checkpoint and rewrite the card"
    )
    args = parser.parse_args(argv)

    out = Path(args.out)
    if args.report_only:
        info = json.loads((out / "training_log.json").read_text())
    else:
        result = train_tiny(args.steps, args.batch_size, args.lr, args.seed)
        # Stored in bfloat16, like Meta's checkpoints; everything reported is measured on the stored weights.
        save_checkpoint(out / "original", result["cfg"], result["sd"], dtype=torch.bfloat16)
        info = {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "train_seconds": round(result["seconds"], 1),
            "threads": torch.get_num_threads(),
            "first_loss": round(result["losses"][0], 4),
            "losses": [round(x, 4) for x in result["losses"]],
        }
    log = report(out, info)
    print(
        f"saved {display_path(out / 'original')}: loss {log['final_loss_mean_last_100']}, "
        f"capital accuracy {log['capital_accuracy']:.1%}, continent {log['continent_accuracy']:.1%}, "
        f"currency {log['currency_accuracy']:.1%}; 'The capital of France is' -> {log['samples'][SAMPLE_PROMPTS[0]]!r}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
