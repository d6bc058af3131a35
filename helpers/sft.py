"""Chapter 16: instruction tuning (supervised fine-tuning, SFT) -- teaching a base model to answer
in a chat format.

A conversation is rendered in the model's chat format (chapter 14) as one token sequence, and
every token gets a **label**: the token itself where the assistant speaks (its reply and the
end-of-turn token that closes it), -100 everywhere else (the system and user messages, the
headers, the BOS). The loss is chapter 11's next-token cross-entropy averaged over the labelled
positions only, so the model learns to write replies, not to predict questions. -100 is
PyTorch's ``ignore_index`` and what Hugging Face's models skip in ``labels``.

Training reuses chapter 11 unchanged: its ``train_loop`` runs the loss function it is given,
and its compact-vocabulary trick keeps the exact full-vocabulary loss cheap for the embedded
model, whose rows outside the corpus are zero.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from .chat import CHAT_FILE, ChatError, ChatTemplate, check_messages
from .checkpoint import save_checkpoint
from .config import ModelConfig
from .corpus import Country
from .files import display_path, new_directory, read_bounded
from .generation import generate
from .model import forward, forward_hidden
from .scoring import _target_logprobs
from .tokenizer import Tokenizer
from .train import compact_vocab, expand_to_full_vocab, train_loop

LLAMA3 = ChatTemplate("llama3")  # the embedded model's tokenizer is Llama 3's: its chat format
IGNORE = -100  # the label of a position that is not trained (torch's and transformers' ignore_index)
# The token that ends the assistant's turn, per chat format: trained, so that the model learns to stop.
END_OF_TURN = {"llama3": "<|eot_id|>", "chatml": "<|im_end|>"}
# The book's chat set: each fact asked in three phrasings, answered with the corpus's sentence.
QUESTIONS = {
    "capital": (
        "What is the capital of {c.name}?",
        "Which city is the capital of {c.name}?",
        "Name the capital of {c.name}.",
    ),
    "continent": (
        "Which continent is {c.name} in?",
        "On which continent is {c.name}?",
        "Where is {c.name}? Name the continent.",
    ),
    "currency": (
        "What currency does {c.name} use?",
        "What is the currency of {c.name}?",
        "Which money is used in {c.name}?",
    ),
}
ANSWERS = {
    "capital": "The capital of {c.name} is {c.capital}.",
    "continent": "{c.name} is a country in {c.continent}.",
    "currency": "The currency of {c.name} is the {c.currency}.",
}
# A conversation file of 10,000 conversations weighs about 2 MB; a larger one than this is refused unread.
MAX_DATA_BYTES = 64 << 20


# --- data --------------------------------------------------------------------------------------


def country_conversations(countries: Sequence[Country], phrasings: Sequence[int] = (0, 1, 2)) -> list[dict]:
    """The book's chat set: for every country and fact (capital, continent, currency) one
    conversation per phrasing in ``phrasings``: a user question and a one-sentence answer
    ("What is the capital of Peru?" -> "The capital of Peru is Lima."). Each is
    ``{"messages": [...], "country", "fact", "answer"}`` ("answer": the fact alone, "Lima")."""
    out = []
    for c in countries:
        for fact, questions in QUESTIONS.items():
            value = getattr(c, fact)
            if not value:  # a few countries have no currency in GeoNames
                continue
            for k in phrasings:
                messages = [
                    {"role": "user", "content": questions[k].format(c=c)},
                    {"role": "assistant", "content": ANSWERS[fact].format(c=c)},
                ]
                out.append({"messages": messages, "country": c.name, "fact": fact, "answer": value})
    return out


def check_conversation(conversation, where: str) -> list[dict]:
    """A conversation read from a file: ``{"messages": [{"role", "content"}, ...]}`` with roles
    system, user or assistant, text contents and at least one assistant turn. Returns its
    messages; raises ValueError naming ``where``."""
    if not isinstance(conversation, dict) or not isinstance(conversation.get("messages"), list):
        raise ValueError(f'{where}: expected {{"messages": [{{"role": ..., "content": ...}}, ...]}}')
    messages = conversation["messages"]
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            role = m.get("role") if isinstance(m, dict) else m
            raise ValueError(f"{where}: message {i} has role {json.dumps(role)[:40]}: one of system, user, assistant")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: message {i}'s content must be text (got {json.dumps(m.get('content'))[:40]})")
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError(f"{where}: no assistant turn, so nothing to learn from")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def read_conversations(path: str | Path) -> list[dict]:
    """The conversations of a JSONL file, one ``{"messages": [...]}`` per line (blank lines
    skipped), each checked by ``check_conversation``; read up to ``MAX_DATA_BYTES`` (a larger or
    endless file is refused), UTF-8. An error names the line. Returns ``[{"messages": [...]}]``."""
    where = display_path(path)
    try:
        data = read_bounded(path, MAX_DATA_BYTES, f"data file {where}", "10,000 conversations weigh about 2 MB")
    except FileNotFoundError:
        raise OSError(f"data file {where} does not exist") from None
    except IsADirectoryError:
        raise OSError(f"data file {where} is a directory: give a .jsonl file") from None
    except OSError as err:
        raise OSError(f"data file {where} cannot be read ({err.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"data file {where} is not UTF-8 text (byte {err.start})") from None
    out = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            conversation = json.loads(line)
        except (ValueError, RecursionError) as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else type(err).__name__
            raise ValueError(f"data file {where} line {lineno} is not JSON ({reason})") from None
        out.append({"messages": check_conversation(conversation, f"data file {where} line {lineno}")})
    if not out:
        raise ValueError(f'data file {where} holds no conversations: one {{"messages": [...]}} per line')
    return out


# --- the label mask ----------------------------------------------------------------------------


def render_with_labels(
    tok: Tokenizer, messages: Sequence[dict], template: ChatTemplate = LLAMA3
) -> tuple[list[int], list[int]]:
    """A conversation in ``template``'s chat format, and its labels: each assistant message's
    tokens and the end-of-turn token after it keep their id, every other position is IGNORE.

    The prompt before each assistant message is the chat format's own (``template.prompt``: all
    messages so far and the assistant's header); the reply follows it. Messages after the last
    assistant message are left out (nothing would be learnt from them). Returns (ids, labels),
    two lists of the same length; labels[t] is the token at t, or IGNORE.
    """
    check_messages(messages)
    end = tok.special_tokens[END_OF_TURN[template.format]]
    ids: list[int] = []
    labels: list[int] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = template.prompt(tok, messages[:i])  # everything so far, then the assistant's header
        if prompt[: len(ids)] != ids:
            raise ChatError(f"the {template.format} format renders message {i - 1} differently in context")
        ids += prompt[len(ids) :]
        labels += [IGNORE] * (len(ids) - len(labels))
        reply = tok.encode(m["content"], bos=False) + [end]
        ids += reply
        labels += reply
    if not ids:
        raise ChatError("the conversation has no assistant message: there is nothing to train on")
    return ids, labels


def pad_batch(examples: Sequence[tuple[list[int], list[int]]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (ids, labels) pairs to the longest: inputs (B, N) with ``pad_id`` after each
    sequence, labels (B, N) with IGNORE there. Under the causal mask a position never attends to
    the ones after it, so the padding changes nothing before it and needs no mask of its own."""
    n = max(len(ids) for ids, _ in examples)
    inputs = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    for b, (ids, lab) in enumerate(examples):
        inputs[b, : len(ids)] = torch.tensor(ids)
        labels[b, : len(lab)] = torch.tensor(lab)
    return inputs, labels


def packing_mask(lengths: Sequence[int]) -> torch.Tensor:
    """The attention mask of sequences packed end to end into one row: position i may attend to
    j if j <= i and both belong to the same sequence (block-diagonal and causal). (N, N) bool,
    N = sum(lengths). Each sequence's RoPE positions must also restart at 0."""
    seq = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    n = len(seq)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    return causal & (seq[:, None] == seq[None, :])


# --- the loss ----------------------------------------------------------------------------------


def masked_loss(logits: torch.Tensor, labels: torch.Tensor, n_unseen: int = 0) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions.

    logits (B, N, V'), labels (B, N) with IGNORE where not trained -> a scalar (nats/token). Row
    t predicts the token at t + 1, so the logits drop their last row and the labels their first.
    ``n_unseen``: tokens left out of a compact vocabulary (chapter 11) whose logits are exactly 0;
    each adds e^0 to the softmax's sum, so the loss is still the full vocabulary's.
    """
    logits, targets = logits[:, :-1], labels[:, 1:]
    trained = targets != IGNORE
    if n_unseen:
        logits = torch.cat([logits, torch.full_like(logits[..., :1], float(n_unseen)).log()], dim=-1)
    log_z = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return ((log_z - picked) * trained).sum() / trained.sum()


def sft_loss(
    sd: dict[str, torch.Tensor], cfg: ModelConfig, batch: tuple[torch.Tensor, torch.Tensor], n_unseen: int = 0
) -> torch.Tensor:
    """``masked_loss`` of a tied model (``output.weight`` is the embedding) on a ``pad_batch`` batch."""
    inputs, labels = batch
    tied = sd | {"output.weight": sd["tok_embeddings.weight"]}
    return masked_loss(forward(inputs, tied, cfg), labels, n_unseen)


# --- training ----------------------------------------------------------------------------------


def finetune(
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    examples: Sequence[tuple[list[int], list[int]]],
    steps: int = 300,
    lr: float = 1e-3,
    batch_size: int = 16,
    seed: int = 0,
    progress: str | None = None,
) -> dict:
    """Supervised fine-tuning of a tied model on ``render_with_labels`` examples, with chapter 11's
    ``train_loop``: each step a batch of ``batch_size`` examples drawn with a generator seeded
    with ``seed``, the loss ``sft_loss``.

    The embedding is trained compact (chapter 11): the rows that are not zero, and the rows of
    every token the examples contain. Any other row stays exactly zero, as it was. Returns
    {"sd": the tuned weights (full vocabulary, output tied), "losses": per step, "vocab": the
    trained rows}."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    table = sd["tok_embeddings.weight"]
    used = {t for ids, _ in examples for t in ids}
    vocab = sorted(used | set(table.abs().sum(1).nonzero()[:, 0].tolist()))
    to_compact = {t: i for i, t in enumerate(vocab)}
    params = {k: v.requires_grad_() for k, v in compact_vocab(sd, vocab).items()}
    compact_cfg = dataclasses.replace(cfg, vocab_size=len(vocab), extra={})
    n_unseen = cfg.vocab_size - len(vocab)
    compact = [
        ([to_compact[t] for t in ids], [to_compact[t] if t != IGNORE else IGNORE for t in labels])
        for ids, labels in examples
    ]
    torch.manual_seed(seed)
    rng = random.Random(seed)

    def loss_fn(step: int) -> torch.Tensor:
        batch = pad_batch([compact[rng.randrange(len(compact))] for _ in range(batch_size)])
        return sft_loss(params, compact_cfg, batch, n_unseen)

    losses = train_loop(params, loss_fn, steps, lr, progress=progress)
    return {"sd": expand_to_full_vocab(params, vocab, cfg.vocab_size), "losses": losses, "vocab": vocab}


# --- the tuned model on disk -------------------------------------------------------------------


def save_chat_checkpoint(
    out: str | Path,
    cfg: ModelConfig,
    sd: dict[str, torch.Tensor],
    source: str | Path,
    template: ChatTemplate,
    force: bool = False,
    log: dict | None = None,
) -> Path:
    """A checkpoint directory in the book's format -- params.json, consolidated.00.pth -- with the
    tokenizer files of ``source`` (the checkpoint it was tuned from) and ``chat_template.json``, so
    that ``chat``, ``evaluate`` and ``export-hf`` read it. Written through ``files.new_directory``:
    a non-empty ``out`` is refused unless ``force``, and nothing half-written is left behind.
    ``log``: written as training.json beside the weights."""
    source = Path(source)
    with new_directory(out, force, "--out", source=source) as tmp:
        save_checkpoint(tmp, cfg, sd)
        for name in ("tokenizer.model", "tokenizer_description.json"):
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
        chat = {"format": template.format}
        if template.default_system is not None:
            chat["default_system"] = template.default_system
        (tmp / CHAT_FILE).write_text(json.dumps(chat, indent=1) + "\n", encoding="utf-8")
        if log is not None:
            (tmp / "training.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    return Path(out)


# --- before and after --------------------------------------------------------------------------


def chat_answer(
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    tok: Tokenizer,
    question: str,
    template: ChatTemplate = LLAMA3,
    max_new_tokens: int = 12,
) -> str:
    """The model's greedy reply to one user message in ``template``'s chat format, up to its
    end-of-turn token (or ``max_new_tokens``)."""
    ids = template.prompt(tok, [{"role": "user", "content": question}])
    new = generate(ids, sd, cfg, max_new_tokens, stop_ids=tok.stop_ids)
    return tok.decode([t for t in new if t not in tok.stop_ids]).strip()


def reply_scores(
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    tok: Tokenizer,
    conversations: Sequence[dict],
    template: ChatTemplate = LLAMA3,
    batch_size: int = 64,
) -> list[dict]:
    """Chapter 15's scorer on chat replies: each conversation rendered with its labels, and the
    labelled tokens -- the assistant's reply and its end-of-turn token, the very tokens the SFT
    loss trains -- scored under teacher forcing (``scoring._target_logprobs``). Returns per
    conversation {"logprob": their summed log-probability (nats), "n_tokens", "greedy": whether
    each is the model's most likely token there}. "greedy" is exact match without normalisation:
    greedy decoding after the prompt writes exactly this reply and then ends the turn."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(conversations), batch_size):
            chunk = [
                render_with_labels(tok, c["messages"], template) for c in conversations[start : start + batch_size]
            ]
            inputs, labels = pad_batch(chunk)
            h = forward_hidden(inputs, sd, cfg)  # (B, N, d)
            rows = (labels[:, 1:] != IGNORE).nonzero()  # (R, 2): (sequence, position) of each predicting row
            logprobs, greedy = _target_logprobs(h[rows[:, 0], rows[:, 1]], labels[rows[:, 0], rows[:, 1] + 1], sd, cfg)
            for b in range(len(chunk)):
                mine = rows[:, 0] == b
                out.append(
                    {
                        "logprob": float(logprobs[mine].sum()),
                        "n_tokens": int(mine.sum()),
                        "greedy": bool(greedy[mine].all()),
                    }
                )
    return out
