"""Measuring a model (chapter 15): log-likelihoods, multiple choice, exact match, bits per byte,
and how far a score can be trusted.

One scorer serves every measurement: ``loglikelihoods`` gives the log-probability of a
continuation after a context, with lm-evaluation-harness's conventions (``encode_pair``), so
that its numbers can be checked against the harness on the same weights. Multiple choice
scores each choice that way and picks the most likely; bits per byte scores every token of a
text. A score on n items is a mean of n outcomes, and ``mean_stderr``, ``bootstrap_interval``
and ``paired_comparison`` say how much it would move on another n items like them.
"""

from __future__ import annotations

import math
import random
import re
import string
from collections.abc import Callable, Sequence

import torch

from .config import ModelConfig
from .generation import generate, weights_device_dtype
from .model import forward_hidden, lm_head
from .tokenizer import Tokenizer

# lm-evaluation-harness's ``multiple_choice`` default: a choice follows the question after one space.
TARGET_DELIMITER = " "
# ... and few-shot examples are separated from each other and from the question by a blank line.
FEWSHOT_DELIMITER = "\n\n"
# How many positions' logits are turned into float64 log-probabilities at once: (rows, V) float64
# is 1 MB per row for Llama 3's vocabulary.
ROWS_PER_STEP = 128
# How many tokens one forward pass of ``loglikelihoods`` takes (batch x padded length).
TOKENS_PER_BATCH = 4096


# --- the scorer -------------------------------------------------------------------------------


def encode_pair(tok: Tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """The tokens of a context and of its continuation, split as lm-evaluation-harness splits them.

    BPE merges across the boundary (" Paris" is one token, not " " and "Paris"), so the
    continuation's tokens are not ``encode(continuation)``: the whole text is encoded (BOS
    first where the tokenizer has one) and cut after as many tokens as the context alone
    has. Trailing spaces of the context move to the continuation first. An empty context is
    the document-start token alone: BOS, or end-of-text for a tokenizer without BOS.
    Returns (context ids, continuation ids); the model reads their concatenation.
    """
    if not continuation:
        raise ValueError("the continuation is empty: there is nothing to score")
    if not context:
        prefix = tok.bos_id if tok.bos_id is not None else tok.eos_id
        return [prefix], tok.encode(continuation, bos=False)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tok.encode(context + continuation)
    context_ids = tok.encode(context)
    continuation_ids = whole[len(context_ids) :]
    if not continuation_ids:
        raise ValueError(f"{continuation!r} adds no token after {context!r}: there is nothing to score")
    return context_ids, continuation_ids


def _target_logprobs(
    h: torch.Tensor, targets: torch.Tensor, sd: dict[str, torch.Tensor], cfg: ModelConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability (float64) of each target token, and whether it is the most likely token,
    from the hidden states that predict it. h: (R, d), targets: (R,) -> (R,), (R,) bool.

    The LM head runs ``ROWS_PER_STEP`` rows at a time; the log-softmax is taken in float64,
    where a sum over 128,256 exponentials is exact to ~1e-13 on every processor."""
    logprobs, greedy = [], []
    for start in range(0, h.shape[0], ROWS_PER_STEP):
        logits = lm_head(h[start : start + ROWS_PER_STEP], sd, cfg)  # (r, V) float32
        t = targets[start : start + ROWS_PER_STEP, None]
        logprobs.append(torch.log_softmax(logits.double(), dim=-1).gather(-1, t)[:, 0])
        greedy.append(logits.argmax(-1) == t[:, 0])
    return torch.cat(logprobs).cpu(), torch.cat(greedy).cpu()


def loglikelihoods(
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    tok: Tokenizer,
    pairs: Sequence[tuple[str, str]],
    progress: Callable[[int], None] | None = None,
) -> list[tuple[float, int, bool]]:
    """``loglikelihood`` of many (context, continuation) pairs, in batches.

    The model reads context + continuation minus its last token; the rows from the context's
    last position on predict the continuation. Sequences of different lengths share a batch
    by right-padding: under the causal mask a position never sees the ones after it, so the
    padding changes nothing before it and needs no mask of its own. Longest first, so that
    one batch holds sequences of similar length. ``progress(k)`` is called after every batch
    with the number of pairs it scored. Returns one (sum of log-probabilities in nats,
    number of continuation tokens, whether greedy decoding would produce the continuation)
    per pair, in the order given.
    """
    encoded = [encode_pair(tok, context, continuation) for context, continuation in pairs]
    for (context, _), (ctx, cont) in zip(pairs, encoded, strict=True):
        if len(ctx) + len(cont) - 1 > cfg.max_seq_len:
            raise ValueError(
                f"{len(ctx) + len(cont) - 1} tokens exceed the context of {cfg.max_seq_len}: "
                f"shorten the question starting {context[:40]!r} (or use fewer shots)"
            )
    order = sorted(range(len(pairs)), key=lambda i: -sum(map(len, encoded[i])))
    device, _ = weights_device_dtype(sd)
    out: list[tuple[float, int, bool]] = [(0.0, 0, False)] * len(pairs)
    start = 0
    with torch.inference_mode():
        while start < len(order):
            longest = sum(map(len, encoded[order[start]])) - 1
            batch = order[start : start + max(1, TOKENS_PER_BATCH // longest)]
            inputs = torch.zeros(len(batch), longest, dtype=torch.long)  # right-padded with token 0
            rows, targets = [], []
            for b, i in enumerate(batch):
                ctx, cont = encoded[i]
                seq = ctx + cont
                inputs[b, : len(seq) - 1] = torch.tensor(seq[:-1])
                rows += [(b, p) for p in range(len(ctx) - 1, len(seq) - 1)]
                targets += cont
            h = forward_hidden(inputs.to(device), sd, cfg)  # (B, N, d)
            index = torch.tensor(rows, device=device)  # (R, 2): (sequence, position) of each predicting row
            picked = h[index[:, 0], index[:, 1]]  # (R, d)
            logprobs, greedy = _target_logprobs(picked, torch.tensor(targets, device=device), sd, cfg)
            at = 0
            for i in batch:
                n = len(encoded[i][1])
                out[i] = (float(logprobs[at : at + n].sum()), n, bool(greedy[at : at + n].all()))
                at += n
            start += len(batch)
            if progress is not None:
                progress(len(batch))
    return out


def loglikelihood(
    sd: dict[str, torch.Tensor], cfg: ModelConfig, tok: Tokenizer, context: str, continuation: str
) -> tuple[float, int, bool]:
    """log P(continuation | context) under the model, in nats, with lm-evaluation-harness's
    tokenization (``encode_pair``): (sum of the continuation tokens' log-probabilities, their
    number, whether each is the model's most likely token there)."""
    return loglikelihoods(sd, cfg, tok, [(context, continuation)])[0]


# --- multiple choice --------------------------------------------------------------------------


def choice_requests(item: dict, delimiter: str = TARGET_DELIMITER) -> list[tuple[str, str]]:
    """The (context, continuation) pairs that score one item ``{"question", "choices", "answer"}``:
    each choice after the question, ``delimiter`` between them (lm-eval's ``target_delimiter``)."""
    return [(item["question"], delimiter + choice) for choice in item["choices"]]


def score_choices(
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    tok: Tokenizer,
    items: Sequence[dict],
    delimiter: str = TARGET_DELIMITER,
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """Every choice of every item scored in one call of ``loglikelihoods``. Returns per item
    ``{"loglikelihoods": [nats per choice], "n_tokens": [tokens per choice], "greedy": [bool per
    choice], "gold": answer index}``."""
    pairs = [pair for item in items for pair in choice_requests(item, delimiter)]
    scored = iter(loglikelihoods(sd, cfg, tok, pairs, progress))
    results = []
    for item in items:
        lls, n_tokens, greedy = zip(*[next(scored) for _ in item["choices"]], strict=True)
        results.append(
            {"loglikelihoods": list(lls), "n_tokens": list(n_tokens), "greedy": list(greedy), "gold": item["answer"]}
        )
    return results


def index_of_max(values: Sequence[float]) -> int:
    """Index of the largest value, the first one on a tie (as ``numpy.argmax``)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def predict(result: dict, choices: Sequence[str], norm: str = "none") -> int:
    """The chosen index for one scored item (a ``score_choices`` result).

    norm: "none" -- the largest log-likelihood (lm-eval's ``acc``); "chars" -- divided by the
    choice's length in characters, the choice as written, without the delimiter (``acc_norm``);
    "bytes" -- by its UTF-8 bytes (``acc_bytes``); "tokens" -- by its number of tokens (the
    mean log-probability per token). A sum favours short choices: each extra token can only
    lower it.
    """
    lls = result["loglikelihoods"]
    if norm == "none":
        return index_of_max(lls)
    if norm == "chars":
        return index_of_max([ll / len(c) for ll, c in zip(lls, choices, strict=True)])
    if norm == "bytes":
        return index_of_max([ll / len(c.encode("utf-8")) for ll, c in zip(lls, choices, strict=True)])
    if norm == "tokens":
        return index_of_max([ll / n for ll, n in zip(lls, result["n_tokens"], strict=True)])
    raise ValueError(f"norm must be one of none, chars, bytes, tokens (got {norm!r})")


# The accuracies ``choice_outcomes`` reports, and the normalisation of each.
ACCURACIES = {"acc": "none", "acc_norm": "chars", "acc_per_token": "tokens"}


def choice_outcomes(results: Sequence[dict], items: Sequence[dict]) -> dict[str, list[int]]:
    """1 where an item's prediction is its answer, 0 where not, under each normalisation of
    ``ACCURACIES``: {"acc": [...], "acc_norm": [...], "acc_per_token": [...]}. The mean of a list
    is the accuracy; the list itself is what its standard error and intervals are computed from."""
    return {
        name: [int(predict(r, item["choices"], norm) == r["gold"]) for r, item in zip(results, items, strict=True)]
        for name, norm in ACCURACIES.items()
    }


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def letter_item(item: dict) -> dict:
    """The same question in MMLU's style: the choices listed after it as "A. ...", "B. ...", and
    "Answer:"; what is scored is the letter (" A", " B", ...), not the choice's text.

    A small model often prefers one letter whatever the question: comparing this with the
    choice-text score shows whether it reads the listed options at all.
    """
    if len(item["choices"]) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} choices can be lettered (got {len(item['choices'])})")
    listed = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(item["choices"]))
    return item | {
        "question": f"{item['question'].strip()}\n{listed}\nAnswer:",
        "choices": list(LETTERS[: len(item["choices"])]),
    }


def with_shots(
    items: Sequence[dict], k: int, pool: Sequence[dict] | None = None, seed: int = 0, delimiter: str = TARGET_DELIMITER
) -> list[dict]:
    """Each item with ``k`` solved examples before its question (k-shot prompting).

    Examples are drawn from ``pool`` (default: the items themselves), never an item with the
    same question, with a generator seeded once with ``seed``: the same prompts on every run.
    An example is its question, the delimiter and its answer's text; examples and the question
    are separated by a blank line (lm-eval's ``fewshot_delimiter``).
    """
    pool = list(items if pool is None else pool)
    if k < 0:
        raise ValueError(f"the number of shots must be >= 0 (got {k})")
    rng = random.Random(seed)
    out = []
    for item in items:
        others = [p for p in pool if p["question"] != item["question"]]
        if k > len(others):
            raise ValueError(f"{k} shots asked for, but only {len(others)} other examples are available")
        shots = rng.sample(others, k)
        solved = [f"{s['question']}{delimiter}{s['choices'][s['answer']]}" for s in shots]
        out.append(item | {"question": FEWSHOT_DELIMITER.join([*solved, item["question"]])})
    return out


# --- exact match ------------------------------------------------------------------------------


PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation before comparing answers: lower case, no punctuation, no articles
    (a, an, the), single spaces. "The Euro." and "euro" are then the same answer."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str, normalize: bool = True) -> int:
    """1 if the two answers are equal (after ``normalize_answer`` unless ``normalize`` is False), else 0."""
    if normalize:
        prediction, reference = normalize_answer(prediction), normalize_answer(reference)
    return int(prediction == reference)


def greedy_answer(
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    tok: Tokenizer,
    prompt: str,
    max_new_tokens: int = 16,
    until: Sequence[str] = ("\n", "."),
) -> str:
    """What the model says after ``prompt``, greedily, cut before the first of ``until`` (and at
    the end-of-text token): the answer an exact-match score compares."""
    new = generate(tok.encode(prompt), sd, cfg, max_new_tokens, stop_ids=tok.stop_ids)
    text = tok.decode([t for t in new if t not in tok.stop_ids])
    for stop in until:
        text = text.split(stop)[0]
    return text.strip()


def exact_match_outcomes(
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    tok: Tokenizer,
    items: Sequence[dict],
    max_new_tokens: int = 16,
    until: Sequence[str] = ("\n", "."),
) -> tuple[list[int], list[str]]:
    """Multiple-choice items asked as open questions: the greedy answer to each question, and
    1 where it equals the right choice (``exact_match``), else 0. Returns (outcomes, answers).

    Harder than picking among choices: the model must produce the answer, not only prefer it."""
    answers = [greedy_answer(sd, cfg, tok, item["question"], max_new_tokens, until) for item in items]
    outcomes = [exact_match(a, item["choices"][item["answer"]]) for a, item in zip(answers, items, strict=True)]
    return outcomes, answers


# --- how far a score can be trusted -----------------------------------------------------------


def mean_stderr(outcomes: Sequence[float]) -> tuple[float, float]:
    """The mean of n outcomes and its standard error, s / sqrt(n), with s the sample standard
    deviation (n - 1 in the denominator), as lm-eval reports it. For 0/1 outcomes with mean p
    that is sqrt(p (1 - p) / (n - 1)): about 0.03 for p = 0.5 and n = 250. NaN for n < 2."""
    n = len(outcomes)
    if n == 0:
        raise ValueError("no outcomes: the mean of nothing is undefined")
    mean = math.fsum(outcomes) / n
    if n < 2:
        return mean, math.nan
    variance = math.fsum((x - mean) ** 2 for x in outcomes) / (n - 1)
    return mean, math.sqrt(variance / n)


def bootstrap_means(outcomes: Sequence[float], resamples: int = 1000, seed: int = 0) -> list[float]:
    """The means of ``resamples`` samples of n outcomes drawn WITH replacement from the n
    given (the same item can come twice): how the mean would vary over other test sets like
    this one. Seeded: the same list on every run and machine."""
    if not outcomes:
        raise ValueError("no outcomes to resample")
    rng, n = random.Random(seed), len(outcomes)
    return [math.fsum(rng.choices(outcomes, k=n)) / n for _ in range(resamples)]


def percentile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` of the values: from the (1 - level)/2 to the (1 + level)/2 quantile
    (the sorted value at that rank, no interpolation)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1) (got {level})")
    ranked = sorted(values)
    tail = round((1 - level) / 2 * len(ranked), 9)  # 1 - 0.9 is 0.0999...98 in binary: not rank 49 of 1000
    lo = min(len(ranked) - 1, math.floor(tail))
    hi = max(0, math.ceil(len(ranked) - tail) - 1)
    return ranked[lo], ranked[hi]


def bootstrap_interval(
    outcomes: Sequence[float], level: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean: the central ``level`` of ``bootstrap_means``."""
    return percentile_interval(bootstrap_means(outcomes, resamples, seed), level)


def wilson_interval(outcomes: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Wilson's score interval for a proportion of 0/1 outcomes (z = 1.96: 95%).

    Where every answer is right (or every one wrong), the standard error and the bootstrap
    both give an interval of width 0 -- resampling all-ones gives all-ones -- but 246 right
    answers out of 246 do not prove a 100% rate: Wilson's interval still reaches down to
    about 1 - z^2 / n (98.5% for n = 246), and near 0.5 it agrees with +- z standard errors."""
    n = len(outcomes)
    if n == 0:
        raise ValueError("no outcomes: a proportion of nothing is undefined")
    p = math.fsum(outcomes) / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_comparison(
    a: Sequence[float], b: Sequence[float], level: float = 0.95, resamples: int = 1000, seed: int = 0
) -> dict[str, float | tuple[float, float]]:
    """Model A against model B on the same items: {"difference": mean(a) - mean(b), "stderr": the
    standard error of the mean of the per-item differences a_i - b_i, "interval": a bootstrap
    interval of the difference (items resampled, each keeping both its outcomes)}.

    Pairing removes what the items share: an easy item is easy for both models, and the
    differences vary less than either score, so a gap too small to see between two
    independent scores can still be clear item by item.
    """
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need the same items: {len(a)} against {len(b)}")
    differences = [x - y for x, y in zip(a, b, strict=True)]
    difference, stderr = mean_stderr(differences)
    return {
        "difference": difference,
        "stderr": stderr,
        "interval": bootstrap_interval(differences, level, resamples, seed),
    }


# --- bits per byte ----------------------------------------------------------------------------


def token_logprobs(
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    tok: Tokenizer,
    text: str,
    window: int | None = None,
    stride: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[int], torch.Tensor]:
    """The log-probability (float64, nats) of every token of ``text`` given all before it.

    The text is encoded after a document-start token -- BOS, or end-of-text for a tokenizer
    without one, as lm-eval's rolling log-likelihood does -- so that its first token is
    predicted too. A text longer than ``window`` tokens (default: the model's context,
    at most 2048) is read in windows that start every ``stride`` tokens (default half a
    window); each window scores only the tokens no earlier window scored, so every token
    after the first window is predicted from at least window - stride tokens before it.
    ``progress(k)`` is called after each window with the number of tokens it scored.
    Returns (ids, the document-start token first; logprobs (len(ids) - 1,), one per token after it).
    """
    window = min(cfg.max_seq_len, 2048) if window is None else window
    stride = window // 2 if stride is None else stride
    if not 2 <= window <= cfg.max_seq_len:
        raise ValueError(f"window must be in 2 .. {cfg.max_seq_len} tokens (got {window})")
    if not 1 <= stride < window:
        raise ValueError(f"stride must be in 1 .. window - 1 = {window - 1} (got {stride})")
    if not text:
        raise ValueError("the text is empty: there is nothing to score")
    prefix = tok.bos_id if tok.bos_id is not None else tok.eos_id
    ids = [prefix, *tok.encode(text, bos=False)]
    device, _ = weights_device_dtype(sd)
    parts, scored, begin = [], 1, 0  # positions 1 .. scored-1 are scored so far
    with torch.inference_mode():
        while scored < len(ids):
            end = min(begin + window, len(ids))
            h = forward_hidden(torch.tensor(ids[begin : end - 1], device=device), sd, cfg)  # (n, d)
            first = scored - begin - 1  # the row that predicts position `scored`
            targets = torch.tensor(ids[scored:end], device=device)
            parts.append(_target_logprobs(h[first:], targets, sd, cfg)[0])
            if progress is not None:
                progress(end - scored)
            scored, begin = end, begin + stride
    return ids, torch.cat(parts)


def bits_per_byte(
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    tok: Tokenizer,
    text: str | Sequence[str],
    window: int | None = None,
    stride: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float | int]:
    """How well a model compresses ``text``: the bits an ideal coder driven by its predictions
    would spend, sum over tokens of -log2 p(token | before), divided by the text's UTF-8 bytes.

    Unlike perplexity per token, it does not depend on the tokenizer: a model with longer
    tokens predicts fewer, harder tokens for the same text. ``text`` may be a list of
    documents, each read from its own document-start token: then all their bits over all
    their bytes (lm-eval's aggregate). Returns {"bits_per_byte", "perplexity" (per token: exp
    of the mean negative log-likelihood), "nll" (nats, summed), "n_tokens" (predicted),
    "n_bytes", "n_documents", "window", "stride"}. Windows and ``progress`` as in
    ``token_logprobs``.
    """
    documents = [text] if isinstance(text, str) else list(text)
    if not documents:
        raise ValueError("no documents: there is nothing to score")
    window = min(cfg.max_seq_len, 2048) if window is None else window
    stride = window // 2 if stride is None else stride
    nll, n_tokens, n_bytes = 0.0, 0, 0
    for document in documents:
        _, logprobs = token_logprobs(sd, cfg, tok, document, window, stride, progress)
        nll -= float(logprobs.sum())
        n_tokens += len(logprobs)
        n_bytes += len(document.encode("utf-8"))
    return {
        "bits_per_byte": nll / math.log(2) / n_bytes,
        "perplexity": math.exp(nll / n_tokens),
        "nll": nll,
        "n_tokens": n_tokens,
        "n_bytes": n_bytes,
        "n_documents": len(documents),
        "window": window,
        "stride": stride,
    }
