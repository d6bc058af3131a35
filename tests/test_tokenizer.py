"""The Llama 3 tokenizer: known ids, agreement with Meta's own Tokenizer class, round trips."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.checkpoint import packaged_tokenizer_path
from helpers.tokenizer import PATTERN, SPECIAL_TOKENS, Tokenizer, TokenizerError


@pytest.fixture(scope="module")
def meta_tok():
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    return MetaTokenizer(packaged_tokenizer_path())


def test_write_up_prompt(tokenizer):
    assert tokenizer.encode("The capital of France is") == [128000, 791, 6864, 315, 9822, 374]
    assert tokenizer.encode(" Paris", bos=False) == [12366]
    assert tokenizer.pieces([128000, 791, 6864]) == ["<|begin_of_text|>", "The", " capital"]


def test_vocabulary_and_special_tokens(tokenizer):
    assert packaged_tokenizer_path().stat().st_size == 2_183_982
    assert tokenizer.n_base == 128000 and tokenizer.n_words == 128256 and len(SPECIAL_TOKENS) == 256
    assert tokenizer.bos_id == 128000 and tokenizer.eos_id == 128001 and tokenizer.eot_id == 128009
    assert tokenizer.special_tokens["<|reserved_special_token_245|>"] == 128255
    assert "'ll" in PATTERN and "'11" not in PATTERN


def test_special_token_text_is_not_a_special_token(tokenizer):
    ids = tokenizer.encode("<|end_of_text|>", bos=False)
    assert tokenizer.eos_id not in ids and len(ids) > 1


def test_same_ids_and_specials_as_meta(tokenizer, meta_tok):
    assert tokenizer.special_tokens == meta_tok.special_tokens
    assert tokenizer.encoding._pat_str == meta_tok.model._pat_str


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_matches_meta_tokenizer_on_any_text(meta_tok, text):
    assert _shared().encode(text, bos=True, eos=True) == meta_tok.encode(text, bos=True, eos=True)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_roundtrip(text):
    tok = _shared()
    ids = tok.encode(text, bos=False)
    assert tok.decode(ids) == text
    assert all(0 <= i < 128000 for i in ids)


def _shared(cache={}):  # noqa: B006 - one tokenizer for all hypothesis examples
    if "tok" not in cache:
        cache["tok"] = Tokenizer.load(None)
    return cache["tok"]


def test_checkpoint_dir_tokenizer_is_preferred(tmp_path, tokenizer):
    (tmp_path / "tokenizer.model").write_bytes(packaged_tokenizer_path().read_bytes())
    assert Tokenizer.load(tmp_path).path == tmp_path / "tokenizer.model"
    assert Tokenizer.load(tmp_path / "elsewhere").path == packaged_tokenizer_path()


def test_malformed_tokenizer_file(tmp_path):
    (tmp_path / "tokenizer.model").write_text("IQ== 0\nnot-base64!! x\n")
    with pytest.raises(TokenizerError, match="line 2 is not 'base64-token rank'"):
        Tokenizer.load(tmp_path)


def test_out_of_range_ids_and_non_text(tokenizer):
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tokenizer.decode([5, 128256])
    with pytest.raises(TokenizerError, match="expected text"):
        tokenizer.encode(b"bytes")


def test_empty_tokenizer_file(tmp_path):
    (tmp_path / "tokenizer.model").write_text("")
    with pytest.raises(TokenizerError, match=r"holds no tokens \(the file is empty\)"):
        Tokenizer.load(tmp_path)


def test_tokenizer_that_does_not_match_params_is_refused(tmp_path):
    """A truncated tokenizer.model made <|begin_of_text|> id 1000 for a 128256-token model."""
    import json

    lines = packaged_tokenizer_path().read_text().splitlines()[:1000]
    (tmp_path / "tokenizer.model").write_text("\n".join(lines) + "\n")
    (tmp_path / "params.json").write_text(json.dumps({"vocab_size": 128256}))
    with pytest.raises(TokenizerError, match="defines 1,256 token ids but params.json says vocab_size 128,256"):
        Tokenizer.load(tmp_path)
    (tmp_path / "params.json").write_text(json.dumps({"vocab_size": 1256}))
    assert Tokenizer.load(tmp_path).bos_id == 1000  # consistent, if small: accepted
