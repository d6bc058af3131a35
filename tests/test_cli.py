"""`python -m helpers generate|logits|chat`: output format, and one clear line for each user mistake."""

import json
from pathlib import Path

import pytest
import torch

from helpers.checkpoint import load_checkpoint
from helpers.model import forward
from helpers.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The capital of France is"


def test_logits_file_format(tmp_path, tokenizer_vocab_ckpt, cli):
    out = tmp_path / "logits.pt"
    r = cli("logits", "--checkpoint", str(tokenizer_vocab_ckpt), "--prompt", PROMPT, "--out", str(out))
    assert r.returncode == 0, r.stderr
    data = torch.load(out, weights_only=True)
    assert set(data) == {"tokens", "logits"}
    assert data["tokens"].tolist() == [128000, 791, 6864, 315, 9822, 374]
    assert data["logits"].dtype == torch.float32 and data["logits"].shape == (6, 128256)
    cfg, sd = load_checkpoint(tokenizer_vocab_ckpt, dtype=torch.float32)
    torch.testing.assert_close(data["logits"], forward(data["tokens"], sd, cfg))
    assert r.stdout == f"wrote {out}: tokens (6,), logits (6, 128256) from {tokenizer_vocab_ckpt}\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temporary file is left"


def test_generate_cached_equals_uncached(tokenizer_vocab_ckpt, cli):
    base = ("generate", "--checkpoint", str(tokenizer_vocab_ckpt), "--prompt", PROMPT, "--max-new-tokens", "8")
    cached, uncached = cli(*base), cli(*base, "--no-cache")
    assert cached.returncode == 0, cached.stderr
    assert cached.stdout == uncached.stdout and cached.stdout.startswith(PROMPT)
    sampled = [
        cli(*base, "--temperature", "1.5", "--top-k", "50", "--top-p", "0.95", "--seed", "7").stdout for _ in range(2)
    ]
    assert sampled[0] == sampled[1]


def test_generate_uses_the_environment_checkpoint(tokenizer_vocab_ckpt, cli):
    r = cli(
        "generate",
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "2",
        env={"LLAMA_CHECKPOINT": str(tokenizer_vocab_ckpt)},
    )
    assert r.returncode == 0, r.stderr
    cfg, sd = load_checkpoint(tokenizer_vocab_ckpt, dtype=torch.float32)
    tok = Tokenizer.load(None)
    ids = tok.encode(PROMPT)
    first = int(forward(torch.tensor(ids), sd, cfg)[-1].argmax())
    assert r.stdout.startswith(PROMPT + tok.decode([first]))


@pytest.mark.parametrize(
    "args, message",
    [
        (("--prompt", ""), "the prompt is empty"),
        (("--prompt", PROMPT, "--temperature", "0"), "temperature must be a finite number > 0"),
        (("--prompt", PROMPT, "--temperature", "1", "--top-p", "1.2"), "top_p must be in (0, 1]"),
        (("--prompt", PROMPT, "--temperature", "1", "--top-k", "0"), "top_k must be an integer >= 1"),
        (("--prompt", PROMPT, "--max-new-tokens", "0"), "--max-new-tokens must be >= 1"),
        (("--prompt", PROMPT, "--compile", "--no-cache"), "leave out --no-cache"),
    ],
)
def test_user_mistakes_get_one_line(tokenizer_vocab_ckpt, args, message, cli):
    r = cli("generate", "--checkpoint", str(tokenizer_vocab_ckpt), *args)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_missing_checkpoint_and_bad_out(tmp_path, tokenizer_vocab_ckpt, cli):
    r = cli("generate", "--checkpoint", str(tmp_path / "nowhere"), "--prompt", PROMPT)
    assert r.returncode == 2 and "holds no params.json" in r.stderr and "Traceback" not in r.stderr
    r = cli(
        "logits", "--checkpoint", str(tokenizer_vocab_ckpt), "--prompt", PROMPT, "--out", str(tmp_path / "no" / "x.pt")
    )
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert not (tmp_path / "no").exists()


def test_prompt_longer_than_context(tmp_path, tokenizer_vocab_ckpt):
    import json

    params = json.loads((tokenizer_vocab_ckpt / "params.json").read_text())
    # the context limit is a config value; a checkpoint can't lower it, so test via the library path
    import dataclasses

    from helpers.config import ModelConfig
    from helpers.generation import generate

    cfg = dataclasses.replace(ModelConfig.from_params(params), max_seq_len=4)
    _, sd = load_checkpoint(tokenizer_vocab_ckpt)
    with pytest.raises(ValueError, match="exceed the context"):
        generate(Tokenizer.load(None).encode(PROMPT), sd, cfg, 1)


def test_chat_refuses_a_model_without_a_chat_format_in_one_line(cli):
    """The embedded model is a base model: its tokenizer holds Llama 3's control tokens, but its
    directory carries no chat format, so `chat` says what to use instead and exits 2."""
    r = cli("chat", "--message", "What is the capital of France?")
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: models/tiny-llama-3.2/original has no chat format")
    for advice in ("not trained to chat", "generate --prompt", "make smollm2", "--completion"):
        assert advice in lines[0], advice


def test_chat_completion_is_labelled_as_one(cli):
    from helpers.tools.cli import COMPLETION_LABEL

    r = cli("chat", "--completion", "--message", PROMPT, "--max-new-tokens", "2")
    assert r.returncode == 0, r.stderr
    label, text = r.stdout.split("\n", 1)
    assert label == COMPLETION_LABEL and text.startswith(PROMPT + " Paris")
    r = cli("chat", "--completion", "--system", "Be brief.", "--message", PROMPT)
    assert r.returncode == 2 and "--system needs a chat format" in r.stderr


def test_chat_follows_the_directory_not_the_model(tokenizer_vocab_ckpt, cli):
    """The rule is whether the checkpoint directory carries a chat format: the same weights chat
    once a chat_template.json is written beside them (as a fine-tuned chat checkpoint will be)."""
    args = ("chat", "--checkpoint", str(tokenizer_vocab_ckpt), "--message", "Hello", "--max-new-tokens", "2")
    assert cli(*args).returncode == 2
    (tokenizer_vocab_ckpt / "chat_template.json").write_text(json.dumps({"format": "llama3"}))
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert not r.stdout.startswith("# completion")
