"""Instruction tuning (chapter 16, helpers/sft.py) and `python -m helpers finetune`: the label mask
against transformers' own assistant mask, the masked loss against LlamaForCausalLM's on export-hf's
output, packing's mask against separate sequences, the command's output directory (read back by
chat, evaluate and export-hf), its determinism, and one `error:` line for each bad input.

BAD_INPUTS is the table the README's "Bad input to finetune" section shows; a test keeps the two equal.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers.chat import ChatTemplate
from helpers.checkpoint import TINY_DIR, load_checkpoint
from helpers.hf import export_hf, transformers_module
from helpers.model import forward, forward_hidden
from helpers.numerics import logit_tolerance
from helpers.sft import (
    IGNORE,
    country_conversations,
    finetune,
    masked_loss,
    packing_mask,
    pad_batch,
    read_conversations,
    render_with_labels,
)
from helpers.tokenizer import Tokenizer
from helpers.tools.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = str(TINY_DIR)
CONVERSATIONS = [
    [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "What is the capital of Peru?"},
        {"role": "assistant", "content": "The capital of Peru is Lima."},
        {"role": "user", "content": "And which continent is it in?"},
        {"role": "assistant", "content": "Peru is a country in South America."},
    ],
    [
        {"role": "user", "content": "Which continent is Kenya in?"},
        {"role": "assistant", "content": "Kenya is a country in Africa."},
    ],
    [
        {"role": "user", "content": "Say <|eot_id|> please"},  # typed control-token text stays text
        {"role": "assistant", "content": "No."},
        {"role": "user", "content": "A question left unanswered"},
    ],
    [
        {"role": "user", "content": "Spell it"},
        {"role": "assistant", "content": "  two spaces first,\nthen a newline and an ending é"},
    ],
]
# A Llama 3 chat template whose assistant replies (and their end-of-turn tokens) sit inside
# {% generation %} blocks: what transformers needs to compute return_assistant_tokens_mask.
LLAMA3_GENERATION_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' }}"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + '<|eot_id|>' }}{% endgeneration %}"
    "{% else %}{{ m['content'] + '<|eot_id|>' }}{% endif %}{% endfor %}"
)


def write_jsonl(path: Path, conversations: list) -> Path:
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations))
    return path


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.load(TINY_DIR)


@pytest.fixture(scope="module")
def tuned_dir(tmp_path_factory):
    """A checkpoint tuned by the command on the conversations above (a few steps), and the log."""
    d = tmp_path_factory.mktemp("sft")
    data = write_jsonl(d / "chat.jsonl", CONVERSATIONS)
    code = main(
        ["finetune", "--checkpoint", TINY, "--data", str(data), "--out", str(d / "tuned"), "--steps", "12"]
        + ["--log", str(d / "log.json")]
    )
    assert code == 0
    return d


@pytest.fixture(scope="module")
def exported(tuned_dir):
    return export_hf(tuned_dir / "tuned", tuned_dir / "hf")


def test_the_label_mask_is_transformers_assistant_mask(tok, exported):
    """The ids and the trained positions equal those of transformers' apply_chat_template with
    return_assistant_tokens_mask (the tokenizer export-hf wrote, control tokens' text read as the
    control tokens, as in a chat template)."""
    hf_tok = transformers_module().AutoTokenizer.from_pretrained(exported, split_special_tokens=False)
    for messages in CONVERSATIONS[:2] + CONVERSATIONS[3:]:  # the third holds control-token text: see below
        enc = hf_tok.apply_chat_template(
            messages,
            chat_template=LLAMA3_GENERATION_TEMPLATE,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        ids, labels = render_with_labels(tok, messages)
        assert enc["input_ids"] == ids
        assert enc["assistant_masks"] == [int(x != IGNORE) for x in labels]
        assert all(x in (IGNORE, i) for x, i in zip(labels, ids, strict=True))
    # a user's "<|eot_id|>" is text to the book (never the control token), and messages after the
    # last reply are not rendered
    ids, labels = render_with_labels(tok, CONVERSATIONS[2])
    assert ids.count(tok.special_tokens["<|eot_id|>"]) == 2 and labels[-1] == ids[-1]


def test_the_masked_loss_is_transformers_loss_on_export_hf_output(tok, tuned_dir, exported):
    model = transformers_module().AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32)
    cfg, sd = load_checkpoint(tuned_dir / "tuned", dtype=torch.float32)
    inputs, labels = pad_batch([render_with_labels(tok, m) for m in CONVERSATIONS])
    with torch.no_grad():
        theirs = model(inputs, labels=labels).loss.item()
        ours = masked_loss(forward(inputs, sd, cfg), labels).item()
        tol = 2 * logit_tolerance(forward_hidden(inputs, sd, cfg), sd, cfg)
    assert abs(ours - theirs) <= tol, (ours, theirs, tol)


def test_masked_loss_is_cross_entropy_with_ignore_index_and_exact_for_a_compact_vocabulary():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 9, 17, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 17, (3, 9), generator=gen)
    labels[:, :4] = IGNORE
    labels[2, 6:] = IGNORE
    want = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)
    assert torch.allclose(masked_loss(logits, labels), want, rtol=0, atol=1e-12)
    # n_unseen zero logits appended == the same loss with those columns present
    padded = torch.cat([logits, torch.zeros(3, 9, 5, dtype=torch.float64)], dim=-1)
    assert torch.allclose(masked_loss(logits, labels, n_unseen=5), masked_loss(padded, labels), rtol=0, atol=1e-12)


def test_packing_mask_keeps_sequences_apart():
    """Attention over packed sequences with packing_mask equals each sequence's own causal attention."""
    lengths = [3, 5, 2]
    mask = packing_mask(lengths)
    assert mask.shape == (10, 10) and mask.dtype == torch.bool
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 10, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    packed = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    start = 0
    for n in lengths:
        s = slice(start, start + n)
        alone = F.scaled_dot_product_attention(q[..., s, :], k[..., s, :], v[..., s, :], is_causal=True)
        assert torch.allclose(packed[..., s, :], alone, rtol=0, atol=1e-12)
        start += n


def test_padding_is_labelled_ignore_and_changes_nothing_before_it(tok):
    cfg, sd = load_checkpoint(TINY_DIR, dtype=torch.float32)
    examples = [render_with_labels(tok, m) for m in CONVERSATIONS[1:3]]
    inputs, labels = pad_batch(examples)
    short = min(range(2), key=lambda b: len(examples[b][0]))
    n = len(examples[short][0])
    assert (labels[short, n:] == IGNORE).all()
    with torch.no_grad():
        alone = forward(torch.tensor(examples[short][0]), sd, cfg)
        batched = forward(inputs, sd, cfg)[short, :n]
    assert torch.allclose(
        batched, alone, rtol=0, atol=2 * logit_tolerance(forward_hidden(inputs[short, :n], sd, cfg), sd, cfg)
    )


def test_the_book_chat_set_keeps_held_out_countries_apart():
    from helpers.corpus import load_countries
    from helpers.tasks import held_out_countries

    countries = load_countries()
    held = {c.name for c in held_out_countries(countries)}
    train = country_conversations([c for c in countries if c.name not in held])
    assert train and not {c["country"] for c in train} & held
    assert {c["fact"] for c in train} == {"capital", "continent", "currency"}
    peru = [c for c in train if c["country"] == "Peru" and c["fact"] == "capital"]
    assert [c["messages"][1]["content"] for c in peru] == ["The capital of Peru is Lima."] * 3
    assert len({c["messages"][0]["content"] for c in peru}) == 3


def test_finetune_is_seeded_and_leaves_unused_zero_rows_zero(tok):
    cfg, sd = load_checkpoint(TINY_DIR, dtype=torch.float32)
    examples = [render_with_labels(tok, m) for m in CONVERSATIONS]
    a = finetune(sd, cfg, examples, steps=3, batch_size=2, seed=5)
    b = finetune(sd, cfg, examples, steps=3, batch_size=2, seed=5)
    assert a["losses"] == b["losses"]
    assert all(torch.equal(a["sd"][k], b["sd"][k]) for k in a["sd"])
    table = a["sd"]["tok_embeddings.weight"]
    trained = torch.zeros(cfg.vocab_size, dtype=torch.bool)
    trained[torch.tensor(a["vocab"])] = True
    assert (table[~trained] == 0).all() and a["sd"]["output.weight"] is table
    eot = tok.special_tokens["<|eot_id|>"]
    assert sd["tok_embeddings.weight"][eot].abs().sum() == 0 < table[eot].abs().sum()  # zero before, learnt after
    assert torch.equal(
        load_checkpoint(TINY_DIR, dtype=torch.float32)[1]["tok_embeddings.weight"], sd["tok_embeddings.weight"]
    )


def test_the_command_writes_a_chat_checkpoint_that_chat_evaluate_and_export_read(tuned_dir, capsys):
    out = tuned_dir / "tuned"
    assert sorted(p.name for p in out.iterdir()) == [
        "chat_template.json",
        "consolidated.00.pth",
        "params.json",
        "training.json",
    ]
    assert json.loads((out / "chat_template.json").read_text()) == {"format": "llama3"}
    log = json.loads((tuned_dir / "log.json").read_text())
    assert log == json.loads((out / "training.json").read_text())
    assert log["steps"] == 12 == len(log["losses"]) and log["conversations"] == len(CONVERSATIONS)
    assert all(math.isfinite(x) for x in log["losses"])
    assert not [p for p in tuned_dir.iterdir() if p.name.startswith(".")], "a temporary directory was left behind"
    capsys.readouterr()
    assert (
        main(["chat", "--checkpoint", str(out), "--message", "Which continent is Kenya in?", "--max-new-tokens", "4"])
        == 0
    )
    assert capsys.readouterr().out.strip()
    assert main(["evaluate", "--checkpoint", str(out), "--task", "capitals", "--limit", "2"]) == 0
    assert "acc" in capsys.readouterr().out
    assert ChatTemplate.load(out, Tokenizer.load(out)).format == "llama3"


def test_the_command_learns_a_small_file(tmp_path, capsys, tok):
    """A few conversations, reproduced after training: the replies are the most likely tokens."""
    from helpers.sft import reply_scores

    data = write_jsonl(tmp_path / "chat.jsonl", CONVERSATIONS[:2])
    out = tmp_path / "tuned"
    assert main(["finetune", "--checkpoint", TINY, "--data", str(data), "--out", str(out), "--steps", "60"]) == 0
    stdout = capsys.readouterr().out
    first, last = map(float, re.search(r"([0-9.]+) \(first steps\) -> ([0-9.]+)", stdout).groups())
    assert last < first / 4
    cfg, sd = load_checkpoint(out, dtype=torch.float32)
    assert all(s["greedy"] for s in reply_scores(sd, cfg, tok, [{"messages": m} for m in CONVERSATIONS[:2]]))
    # a second run onto the same directory needs --force, and replaces it whole
    assert main(["finetune", "--checkpoint", TINY, "--data", str(data), "--out", str(out), "--steps", "1"]) == 2
    assert (
        main(["finetune", "--checkpoint", TINY, "--data", str(data), "--out", str(out), "--steps", "1", "--force"]) == 0
    )
    assert json.loads((out / "training.json").read_text())["steps"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.jsonl", "tuned"]


def test_read_conversations_names_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"messages": CONVERSATIONS[1]}) + "\n\n" + '{"messages": [{"role": "user"}]}\n')
    with pytest.raises(ValueError, match=r"line 3: message 0's content must be text"):
        read_conversations(path)


def bad_line(t: Path, line: str) -> list[str]:
    path = t / "bad.jsonl"
    path.write_text(line + "\n")
    return ["--data", str(path)]


def a_file(t: Path, name: str, data: bytes) -> str:
    (t / name).write_bytes(data)
    return str(t / name)


def good(t: Path) -> str:
    return str(write_jsonl(t / "good.jsonl", CONVERSATIONS[1:2]))


BAD_INPUTS = [
    (
        "a data line that is not JSON",
        lambda t: ["--data", a_file(t, "two.jsonl", (json.dumps({"messages": CONVERSATIONS[1]}) + "\n{").encode())],
        "data file PATH line 2 is not JSON",
    ),
    (
        'a conversation that is not {"messages": [...]}',
        lambda t: bad_line(t, '[{"role": "user", "content": "hi"}]'),
        'data file PATH line 1: expected {"messages"',
    ),
    (
        "a conversation with no assistant turn",
        lambda t: bad_line(t, '{"messages": [{"role": "user", "content": "hi"}]}'),
        "data file PATH line 1: no assistant turn, so nothing to learn from",
    ),
    (
        "a message whose content is not text",
        lambda t: bad_line(t, '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 3}]}'),
        "data file PATH line 1: message 1's content must be text (got 3)",
    ),
    (
        "a message with an unknown role",
        lambda t: bad_line(t, '{"messages": [{"role": "robot", "content": "hi"}]}'),
        'data file PATH line 1: message 0 has role "robot": one of system, user, assistant',
    ),
    (
        "an empty data file",
        lambda t: ["--data", a_file(t, "empty.jsonl", b"\n")],
        "data file PATH holds no conversations",
    ),
    (
        "a data file that is not UTF-8",
        lambda t: ["--data", a_file(t, "latin1.jsonl", b'{"messages": "Caf\xe9"}\n')],
        "data file PATH is not UTF-8 text",
    ),
    ("an endless data file", lambda t: ["--data", "/dev/zero"], "data file /dev/zero is larger than 67,108,864 bytes"),
    ("a data file that does not exist", lambda t: ["--data", str(t / "no.jsonl")], "data file PATH does not exist"),
    ("--steps 0", lambda t: ["--data", good(t), "--steps", "0"], "--steps must be >= 1 (got 0)"),
    (
        "a learning rate that is not a positive number",
        lambda t: ["--data", good(t), "--lr", "nan"],
        "--lr must be a finite number > 0 (got nan)",
    ),
    ("--batch-size 0", lambda t: ["--data", good(t), "--batch-size", "0"], "--batch-size must be >= 1 (got 0)"),
    (
        "a method that is not implemented",
        lambda t: ["--data", good(t), "--method", "lora"],
        "argument --method: invalid choice: 'lora' (choose from 'sft')",
    ),
    (
        "--out a directory that is not empty",
        lambda t: ["--data", good(t), "--out", str(t)],
        "--out PATH is not empty: choose a new directory, or pass --force to replace it",
    ),
    (
        "--out onto a file",
        lambda t: ["--data", good(t), "--out", a_file(t, "file", b"x")],
        "--out PATH exists and is not a directory",
    ),
    (
        "--log that exists, without --force",
        lambda t: ["--data", good(t), "--log", a_file(t, "old.json", b"{}")],
        "--log PATH exists: choose another name, or pass --force to replace it",
    ),
]


@pytest.mark.parametrize("what, make, message", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_to_finetune_gets_one_error_line(tmp_path, capsys, what, make, message):
    argv = make(tmp_path)
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "new")]
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code = main(["finetune", "--checkpoint", TINY, *argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, f"{what}: exit {code}\n{err[-2000:]}"
    assert len(lines) == 1 and out == "", f"{what}: {err[-2000:]}"
    pattern = "error: " + re.escape(message).replace("PATH", r"\S+")
    assert re.match(pattern, lines[0]), f"{what}: {lines[0]!r} does not start as the README says: {message!r}"
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before, f"{what}: a file changed"
    assert not (tmp_path / "new").exists()


def test_readme_lists_exactly_the_bad_inputs_to_finetune_tested():
    text = (ROOT / "README.md").read_text()
    section = text.split("### Bad input to `finetune`", 1)[1].split("\n#", 1)[0]
    rows = [(a.strip(), b.strip()) for a, b in re.findall(r"^\| (.+?) \| `error: (.+?)` \|$", section, re.M)]
    assert rows == [(what, message) for what, _, message in BAD_INPUTS]
