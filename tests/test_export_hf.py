"""`python -m helpers export-hf`: a directory the Auto classes load offline, computing the book's
logits and encoding like Meta's tokenizer; refusals that lose nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.checkpoint import load_checkpoint, random_state_dict, save_checkpoint
from helpers.config import ModelConfig
from helpers.hf import export_hf, hf_tokenizer, transformers_module
from helpers.model import forward
from helpers.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
V = 128256
SHAPES = {  # the real vocabulary, so that text prompts work; tiny widths
    "gqa": ModelConfig(dim=64, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=V, multiple_of=32, use_scaled_rope=True),
    "mqa": ModelConfig(dim=48, n_layers=3, n_heads=4, n_kv_heads=1, vocab_size=V, multiple_of=16, rope_theta=10000.0),
}
TRICKY = [
    "The capital of France is",
    "1234567890 3.14159 1,000,000",
    "日本の首都は東京です。中文测试",
    "emoji 🦙🔥👩‍👩‍👧 done",
    "  leading, trailing and   inner spaces  \n\n\ttab\r\nCRLF",
    "<|begin_of_text|>special-token text<|eot_id|> stays text <|reserved_special_token_5|>",
    "naïve café — “quotes” 'll 've n't",
    "",
]


def _checkpoint(tmp_path, name: str, dtype=torch.float32) -> Path:
    cfg = SHAPES[name]
    ckpt = tmp_path / name / "original"
    save_checkpoint(ckpt, cfg, random_state_dict(cfg, seed=7, std=0.2), dtype=dtype)
    return ckpt


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_export_loads_with_auto_classes_and_matches_the_book(tmp_path, name):
    tf = transformers_module()
    ckpt = _checkpoint(tmp_path, name)
    out = export_hf(ckpt, tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == FILES
    model = tf.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = tf.AutoTokenizer.from_pretrained(out)
    cfg, sd = load_checkpoint(ckpt, dtype=torch.float32)
    text = "The capital of France is Paris, and 12345 people live in 日本 🦙"
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == Tokenizer.load(ckpt).encode(text)
    with torch.no_grad():
        theirs = model(ids).logits[0]
    diff = (theirs - forward(ids[0], sd, cfg)).abs().max().item()
    assert diff <= 2e-5, f"{name}: logits differ by {diff:.2e}"  # test_parity_meta.py's bar


def test_exported_tokenizer_encodes_and_decodes_like_meta(tmp_path, tokenizer):
    tf = transformers_module()
    hf_tokenizer(tokenizer).save_pretrained(tmp_path)
    loaded = tf.AutoTokenizer.from_pretrained(tmp_path)
    for text in TRICKY:
        ids = loaded(text)["input_ids"]
        assert ids == tokenizer.encode(text), repr(text)
        assert loaded.decode(ids, skip_special_tokens=True) == text, repr(text)
    assert loaded.convert_tokens_to_ids("<|eot_id|>") == tokenizer.eot_id
    assert len(loaded) == tokenizer.n_words


def test_the_embedded_model_exports_in_bfloat16_and_generates_paris(tmp_path, tokenizer):
    tf = transformers_module()
    out = export_hf(None, tmp_path / "tiny")  # $LLAMA_CHECKPOINT or the embedded model
    config = tf.AutoConfig.from_pretrained(out)
    assert config.dtype == torch.bfloat16 and config.tie_word_embeddings and config.rope_parameters["factor"] == 32
    model = tf.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tok = tf.AutoTokenizer.from_pretrained(out)
    ids = tok("The capital of France is", return_tensors="pt")
    new = model.generate(**ids, max_new_tokens=1, do_sample=False)[0, -1]
    assert tok.decode(new) == " Paris"


def cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_CHECKPOINT"}
    return subprocess.run(
        [sys.executable, "-m", "helpers", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_refuses_a_non_empty_directory_unless_forced(tmp_path):
    ckpt = _checkpoint(tmp_path, "mqa")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = cli("export-hf", "--checkpoint", str(ckpt), "--out", str(out))
    assert r.returncode == 2 and r.stderr.startswith("error:") and "--force" in r.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"]  # nothing lost, nothing added
    r = cli("export-hf", "--checkpoint", str(ckpt), "--out", str(out), "--force")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mqa", "out"]  # no temporary left behind
    r = cli("export-hf", "--checkpoint", str(ckpt), "--out", str(ckpt / "params.json"))
    assert r.returncode == 2 and "not a directory" in r.stderr


def test_a_failed_export_leaves_nothing_half_written(tmp_path, monkeypatch):
    import helpers.hf as hf

    ckpt = _checkpoint(tmp_path, "gqa")

    def broken(*_, **__):
        raise OSError("disk full")

    monkeypatch.setattr(hf, "hf_tokenizer", broken)  # fails after the weights were written
    with pytest.raises(OSError, match="disk full"):
        export_hf(ckpt, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gqa"]
    keep = tmp_path / "kept"
    keep.mkdir()
    (keep / "config.json").write_text("{}")
    with pytest.raises(OSError, match="disk full"):
        export_hf(ckpt, keep, force=True)
    assert [p.name for p in keep.iterdir()] == ["config.json"] and (keep / "config.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gqa", "kept"]


# meta-llama/Llama-3.2-1B's config.json on the Hugging Face Hub, as published (transformers 4.45's layout)
HUB_LLAMA_3_2_1B = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0",
    "use_cache": True,
    "vocab_size": 128256,
}


def test_config_json_is_the_hubs_llama_3_2_1b_config_for_the_1b_shape():
    from helpers import llama_3_2_1b_config
    from helpers.hf import hub_config

    ours = hub_config(llama_3_2_1b_config(), torch.bfloat16, 128000, 128001)
    assert ours.keys() == HUB_LLAMA_3_2_1B.keys()
    differ = {k: (ours[k], v) for k, v in HUB_LLAMA_3_2_1B.items() if ours[k] != v}
    assert differ.keys() == {"transformers_version"}, differ  # the version that wrote it
    assert all(type(ours[k]) is type(v) for k, v in HUB_LLAMA_3_2_1B.items()), "a float written as an int, or back"


def test_the_export_reads_as_the_hubs_layout_and_transformers_5_reads_it_back(tmp_path):
    """Readers of the Hub's layout (transformers 4, llama.cpp's converter) find rope_theta at the top
    level, the scaling in rope_scaling and the tokenizer class PreTrainedTokenizerFast; transformers 5
    turns them into its rope_parameters and still computes the book's logits."""
    import json

    tf = transformers_module()
    ckpt = _checkpoint(tmp_path, "gqa")
    out = export_hf(ckpt, tmp_path / "hf")
    written = json.loads((out / "config.json").read_text())
    assert written.keys() == HUB_LLAMA_3_2_1B.keys() and "rope_parameters" not in written
    cfg, sd = load_checkpoint(ckpt, dtype=torch.float32)
    assert written["rope_theta"] == cfg.rope_theta and written["rope_scaling"]["rope_type"] == "llama3"
    assert written["rope_scaling"]["factor"] == cfg.rope_scale_factor
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    config = tf.AutoConfig.from_pretrained(out)
    assert config.rope_parameters["rope_type"] == "llama3" and config.rope_parameters["factor"] == cfg.rope_scale_factor
    model = tf.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = tf.AutoTokenizer.from_pretrained(out)("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        diff = (model(ids).logits[0] - forward(ids[0], sd, cfg)).abs().max().item()
    assert diff <= 2e-5, diff


def test_unscaled_rope_exports_no_rope_scaling(tmp_path):
    import json

    out = export_hf(_checkpoint(tmp_path, "mqa"), tmp_path / "hf")
    written = json.loads((out / "config.json").read_text())
    assert written["rope_scaling"] is None and written["rope_theta"] == 10000.0
