"""Training: the next-token loss, initialisation, AdamW with warm-up and cosine decay, the loop.

``train_loop`` is the one optimisation loop of the book: ``make tiny-model`` trains
the embedded tiny-llama-3.2 with it (``train_tiny``), chapter 11 trains a smaller model
from scratch with it, and chapter 12 fine-tunes a mixture-of-experts model with it.

The tiny model's embedding table has 128,256 rows, but only the ~2,200 tokens that
occur in the corpus are ever seen. Training keeps a compact (n_seen, d) table; every
other row of the full table stays exactly zero, so its logit is exactly 0 and the
full-vocabulary softmax is cheap to compute exactly:

    loss = -l_y + log( sum_{seen t} e^{l_t} + (V - n_seen) * e^0 )
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable

import torch

from .checkpoint import expected_shapes
from .config import ModelConfig
from .corpus import Country, document, load_countries, seen_token_ids
from .model import forward, transformer_block
from .tokenizer import Tokenizer

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
    docs = [tok.encode(document(rng.choice(countries), rng), eos=True) for _ in range(batch_size)]
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


def corpus_loss(
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    batch: tuple[torch.Tensor, ...],
    n_unseen: int,
    block=transformer_block,
) -> torch.Tensor:
    """The next-token loss of a compact-vocabulary model (tied LM head) on a ``make_batch`` batch."""
    inputs, targets, mask = batch
    tied = sd | {"output.weight": sd["tok_embeddings.weight"]}
    return full_vocab_loss(forward(inputs, tied, cfg, block=block), targets, n_unseen, mask)


def compact_vocab(sd: dict[str, torch.Tensor], seen: list[int]) -> dict[str, torch.Tensor]:
    """The inverse of ``expand_to_full_vocab``: the seen rows of the tied table, to train further.

    Exact only for a model trained so, whose other rows are all zero (the embedded model);
    any other table is refused, since dropping its rows would change the model. Every tensor
    is a copy: the optimiser updates them in place, and ``sd`` stays as it was.
    """
    table = sd["tok_embeddings.weight"]
    rest = torch.ones(table.shape[0], dtype=torch.bool)
    rest[torch.tensor(seen)] = False
    if table[rest].any():
        raise ValueError(
            "the embedding has non-zero rows for tokens outside the corpus: this model was not trained "
            "with a compact vocabulary, so it cannot be compacted without changing it"
        )
    if "output.weight" in sd and not torch.equal(sd["output.weight"], table):
        raise ValueError("the LM head is not tied to the embedding: compact_vocab needs a tied model")
    out = {k: v.detach().clone() for k, v in sd.items() if k not in ("output.weight", "tok_embeddings.weight")}
    out["tok_embeddings.weight"] = table[torch.tensor(seen)].clone()
    return out


def expand_to_full_vocab(sd: dict[str, torch.Tensor], seen: list[int], vocab_size: int) -> dict[str, torch.Tensor]:
    """The compact embedding scattered into a (V, d) table of zeros; output tied to it."""
    compact = sd["tok_embeddings.weight"].detach()
    table = torch.zeros(vocab_size, compact.shape[1], dtype=compact.dtype)
    table[torch.tensor(seen)] = compact
    full = {k: v.detach().clone() for k, v in sd.items() if k != "tok_embeddings.weight"}
    full["tok_embeddings.weight"] = table
    full["output.weight"] = table
    return full


def learning_rate(step: int, steps: int, peak: float, warmup: int, floor: float = 0.1) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to ``floor * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_loop(
    params: dict[str, torch.Tensor],
    loss_fn: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    warmup: int | None = None,
    weight_decay: float = 0.01,
    decay: Callable[[str, torch.Tensor], bool] = lambda name, p: p.ndim == 2,
    clip: float = 1.0,
    betas: tuple[float, float] = (0.9, 0.95),
    progress: str | None = None,
    state: dict | None = None,
    stop: int | None = None,
) -> list[float]:
    """Minimise ``loss_fn(step)`` over ``params`` with AdamW; returns the loss of every step run.

    AdamW with weight decay on the parameters ``decay`` selects (by default the
    matrices), the learning rate from ``learning_rate`` (warm-up, then cosine), and
    gradients clipped to a global norm of ``clip``. ``progress``: a label for a
    progress bar, or None for none.

    Checkpoints: with ``state`` (a dict), the loop leaves in it the next step and AdamW's
    state when it ends, and a ``state`` that already holds them (from an earlier call, or
    read back from a file) makes it resume there, with the same schedule and moments.
    ``stop``: end before this step, as an interrupted run would (the schedule stays that of
    ``steps``).
    """
    from tqdm import tqdm  # plain text bars: tqdm.auto would want ipywidgets in a notebook

    names = list(params)
    groups = [
        {"params": [params[n] for n in names if decay(n, params[n])], "weight_decay": weight_decay},
        {"params": [params[n] for n in names if not decay(n, params[n])], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas)
    warmup = max(1, steps // 20) if warmup is None else warmup
    first = 0
    if state and "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
        first = state["step"]
    end = steps if stop is None else min(stop, steps)
    weights = [params[n] for n in names]
    losses: list[float] = []
    bar = tqdm(range(first, end), desc=progress, disable=progress is None, mininterval=2.0)
    for step in bar:
        loss = loss_fn(step)
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps, lr, warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(weights, clip)
        opt.step()
        losses.append(loss.item())
        if step % 25 == 0:
            bar.set_postfix(loss=f"{sum(losses[-25:]) / len(losses[-25:]):.3f}")
    if state is not None:
        state.update(step=end, optimizer=opt.state_dict())
    return losses


def train_tiny(
    steps: int = 1500,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    params: dict | None = None,
    countries: list[Country] | None = None,
    progress: bool = True,
    held_out: list[Country] | None = None,
    eval_every: int = 25,
) -> dict:
    """The recipe of the embedded model, from random initialisation: compact embedding,
    exact full-vocabulary loss, ``train_loop``. Returns {'cfg', 'sd' (full vocab, float32),
    'seen', 'losses', 'validation', 'seconds'}.

    ``held_out``: countries kept out of training; every ``eval_every`` steps the loss on a
    fixed batch of their documents is recorded in 'validation' as (step, loss). (The
    embedded model itself was trained on every country, with none held out.)"""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    cfg = ModelConfig.from_params(params or TINY_PARAMS)
    tok = Tokenizer.load(None)
    countries = countries if countries is not None else load_countries()
    seen = seen_token_ids(tok, countries + (held_out or []))  # held-out tokens: trained only as wrong answers
    to_compact = {t: i for i, t in enumerate(seen)}
    compact_cfg = dataclasses.replace(cfg, vocab_size=len(seen), extra={})
    sd = init_compact_state(compact_cfg, len(seen), seed)
    n_unseen = cfg.vocab_size - len(seen)
    validation: list[tuple[int, float]] = []
    check_batch = make_batch(held_out, tok, to_compact, 64, random.Random(seed + 1)) if held_out else None

    def loss_fn(step: int) -> torch.Tensor:
        if check_batch is not None and step % eval_every == 0:
            with torch.no_grad():
                validation.append((step, corpus_loss(sd, compact_cfg, check_batch, n_unseen).item()))
        batch = make_batch(countries, tok, to_compact, batch_size, rng)
        return corpus_loss(sd, compact_cfg, batch, n_unseen)

    start = time.perf_counter()
    losses = train_loop(sd, loss_fn, steps, lr, progress="training tiny-llama-3.2" if progress else None)
    if check_batch is not None:
        with torch.no_grad():
            validation.append((steps, corpus_loss(sd, compact_cfg, check_batch, n_unseen).item()))
    return {
        "cfg": cfg,
        "sd": expand_to_full_vocab(sd, seen, cfg.vocab_size),
        "seen": seen,
        "losses": losses,
        "validation": validation,
        "seconds": time.perf_counter() - start,
    }
