"""Chapter 15's scorer and tasks (helpers/scoring.py, helpers/tasks.py), on the embedded model.

The independent checks -- lm-evaluation-harness and transformers on export-hf's output -- are in
tests/test_scoring_oracles.py; these are the scorer's own properties."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import statistics
from pathlib import Path

import pytest
import torch

from helpers import numerics, scoring, tasks
from helpers.checkpoint import TINY_DIR, load_checkpoint, packaged_tokenizer_path
from helpers.corpus import load_countries
from helpers.model import forward, forward_hidden
from helpers.tokenizer import Tokenizer, llama3_description

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny():
    cfg, sd = load_checkpoint(TINY_DIR, dtype=torch.float32)
    return sd, cfg, Tokenizer.load(TINY_DIR)


@pytest.fixture(scope="module")
def no_bos_tokenizer() -> Tokenizer:
    """Llama 3's vocabulary described without a BOS token, as SmolLM2's tokenizer is."""
    return Tokenizer(packaged_tokenizer_path(), dataclasses.replace(llama3_description(), bos=None))


def reference_loglikelihood(sd, cfg, ids: list[int], n_continuation: int) -> tuple[float, bool]:
    """The whole sequence through ``forward`` at once; the last n tokens' log-probabilities summed."""
    with torch.no_grad():
        logits = forward(torch.tensor(ids[:-1]), sd, cfg)[-n_continuation:]  # (n, V)
    targets = torch.tensor(ids[-n_continuation:])
    logprobs = torch.log_softmax(logits.double(), -1).gather(-1, targets[:, None])[:, 0]
    return float(logprobs.sum()), bool((logits.argmax(-1) == targets).all())


def test_encode_pair_splits_the_whole_text_after_the_context_tokens(tiny, no_bos_tokenizer):
    _, _, tok = tiny
    assert scoring.encode_pair(tok, "The capital of France is", " Paris") == (
        [128000, 791, 6864, 315, 9822, 374],
        [12366],
    )
    # a trailing space of the context belongs to the continuation (" Paris" is one token)
    assert scoring.encode_pair(tok, "The capital of France is ", "Paris") == scoring.encode_pair(
        tok, "The capital of France is", " Paris"
    )
    # without BOS, nothing comes first; an empty context is the document-start token alone
    ctx, cont = scoring.encode_pair(no_bos_tokenizer, "The capital of France is", " Paris")
    assert ctx == [791, 6864, 315, 9822, 374] and cont == [12366]
    assert scoring.encode_pair(tok, "", "Paris") == ([128000], tok.encode("Paris", bos=False))
    assert scoring.encode_pair(no_bos_tokenizer, "", "Paris")[0] == [no_bos_tokenizer.eos_id]
    with pytest.raises(ValueError, match="the continuation is empty"):
        scoring.encode_pair(tok, "The capital of France is", "")


@pytest.mark.slow
def test_batched_loglikelihoods_equal_one_forward_per_pair(tiny):
    sd, cfg, tok = tiny
    pairs = [
        ("The capital of France is", " Paris"),
        ("The capital of France is", " North America"),
        ("Kenya is a country in", " Africa"),
        ("The currency of Japan is the", " Yen"),
        ("The capital of Burkina Faso is", " Ouagadougou"),
        ("", "The capital of France is Paris."),
    ]
    batched = scoring.loglikelihoods(sd, cfg, tok, pairs)
    for (context, continuation), (ll, n, greedy) in zip(pairs, batched, strict=True):
        ctx, cont = scoring.encode_pair(tok, context, continuation)
        want, want_greedy = reference_loglikelihood(sd, cfg, ctx + cont, len(cont))
        with torch.no_grad():
            tau = numerics.logit_tolerance(forward_hidden(torch.tensor(ctx + cont)[:-1], sd, cfg), sd, cfg)
        assert n == len(cont)
        assert abs(ll - want) <= 2 * tau * n, (context, continuation, ll, want)
        assert greedy == want_greedy
        assert scoring.loglikelihood(sd, cfg, tok, context, continuation)[1:] == (n, greedy)
    assert batched[0][2] and not batched[1][2]  # the model says Paris, and not "North America"


def test_a_pair_longer_than_the_context_is_refused(tiny):
    sd, cfg, tok = tiny
    short = dataclasses.replace(cfg, max_seq_len=4)
    with pytest.raises(ValueError, match="exceed the context of 4"):
        scoring.loglikelihoods(sd, short, tok, [("The capital of France is", " Paris")])


def test_predict_follows_lm_evals_normalisations():
    result = {"loglikelihoods": [-3.0, -4.0, -5.0], "n_tokens": [3, 1, 10], "gold": 2}
    choices = ["abc", "abcdefgh", "abcdéfghij"]  # 3, 8 and 10 characters; 3, 8 and 11 bytes
    assert scoring.predict(result, choices, "none") == 0  # the largest sum
    assert scoring.predict(result, choices, "chars") == 1  # -1, -0.5, -0.5 per character: the first of two
    assert scoring.predict(result, choices, "bytes") == 2  # -1, -0.5, -0.45 per byte
    assert scoring.predict(result, choices, "tokens") == 2  # -1, -4, -0.5 per token
    assert scoring.index_of_max([1.0, 3.0, 3.0]) == 1  # ties: the first, as numpy.argmax
    with pytest.raises(ValueError, match="norm must be one of"):
        scoring.predict(result, choices, "words")
    outcomes = scoring.choice_outcomes([result], [{"choices": choices}])
    assert outcomes == {"acc": [0], "acc_norm": [0], "acc_per_token": [1]}


def test_letter_item_is_mmlus_layout():
    item = {"question": "The capital of France is ", "choices": ["Rome", "Paris", "Lima", "Oslo"], "answer": 1}
    lettered = scoring.letter_item(item)
    assert lettered["question"] == "The capital of France is\nA. Rome\nB. Paris\nC. Lima\nD. Oslo\nAnswer:"
    assert lettered["choices"] == ["A", "B", "C", "D"] and lettered["answer"] == 1
    assert scoring.choice_requests(lettered)[1] == (lettered["question"], " B")


def test_shots_come_from_other_questions_seeded():
    items = tasks.country_items("capitals")
    pool = [item for item in items if item["split"] == "training"]
    three = scoring.with_shots(items[:5], 3, pool, seed=0)
    assert three == scoring.with_shots(items[:5], 3, pool, seed=0)
    assert three != scoring.with_shots(items[:5], 3, pool, seed=1)
    for item, shot in zip(items[:5], three, strict=True):
        parts = shot["question"].split("\n\n")
        assert len(parts) == 4 and parts[-1] == item["question"]
        for example in parts[:-1]:
            solved = next(p for p in pool if example.startswith(p["question"] + " "))
            assert example == solved["question"] + " " + solved["choices"][solved["answer"]]
            assert solved["question"] != item["question"]
        assert {k: v for k, v in shot.items() if k != "question"} == {k: v for k, v in item.items() if k != "question"}
    assert scoring.with_shots(items[:2], 0) == items[:2]
    with pytest.raises(ValueError, match="only 1 other examples"):
        scoring.with_shots(items[:2], 2)
    with pytest.raises(ValueError, match="must be >= 0"):
        scoring.with_shots(items[:2], -1)


def test_exact_match_normalises_case_punctuation_and_articles(tiny):
    assert scoring.normalize_answer("  The Euro. ") == "euro"
    assert scoring.exact_match("the  EURO!", "Euro") == 1
    assert scoring.exact_match("the Euro", "Euro", normalize=False) == 0
    assert scoring.exact_match("Paris", "Lyon") == 0
    sd, cfg, tok = tiny
    assert scoring.greedy_answer(sd, cfg, tok, "The capital of France is") == "Paris"
    items = [i for i in tasks.country_items("currencies") if i["country"] in ("France", "Japan")]
    outcomes, answers = scoring.exact_match_outcomes(sd, cfg, tok, items)
    assert answers == ["Euro", "Yen"] and outcomes == [1, 1]


def test_standard_error_is_lm_evals_sample_formula():
    outcomes = [1, 0, 1, 1, 0, 1, 1, 1]
    mean, stderr = scoring.mean_stderr(outcomes)
    assert mean == statistics.fmean(outcomes)
    assert math.isclose(stderr, statistics.stdev(outcomes) / math.sqrt(len(outcomes)), rel_tol=1e-12)
    p, n = mean, len(outcomes)
    assert math.isclose(stderr, math.sqrt(p * (1 - p) / (n - 1)), rel_tol=1e-12)
    assert math.isnan(scoring.mean_stderr([1])[1])
    with pytest.raises(ValueError, match="no outcomes"):
        scoring.mean_stderr([])


def test_bootstrap_resamples_with_replacement_and_is_seeded():
    outcomes = [0, 1] * 5
    means = scoring.bootstrap_means(outcomes, resamples=2000, seed=3)
    assert means == scoring.bootstrap_means(outcomes, resamples=2000, seed=3)
    assert len(set(means)) > 5  # without replacement every resample would have mean 0.5
    assert math.isclose(statistics.fmean(means), 0.5, abs_tol=4 * 0.5 / math.sqrt(10 * 2000))
    lo, hi = scoring.bootstrap_interval(outcomes, seed=3, resamples=2000)
    assert lo < 0.5 < hi and (lo, hi) == scoring.percentile_interval(means, 0.95)
    # the interval's width is about that of +-1.96 standard errors (of the bootstrap's own spread)
    spread = statistics.pstdev(means)
    assert abs((hi - lo) - 2 * 1.96 * spread) <= 0.1 + 1e-9
    assert scoring.percentile_interval(list(range(1000)), 0.9) == (50, 949)


def test_wilson_interval_does_not_collapse_at_all_right():
    lo, hi = scoring.wilson_interval([1] * 246)
    assert hi == 1.0 and math.isclose(lo, 246 / (246 + 1.96**2), rel_tol=1e-12)  # the closed form at p = 1
    assert scoring.bootstrap_interval([1] * 246) == (1, 1) and scoring.mean_stderr([1] * 246)[1] == 0
    lo, hi = scoring.wilson_interval([0] * 10)
    assert lo == 0.0 and math.isclose(hi, 1.96**2 / (10 + 1.96**2), rel_tol=1e-12)
    half = [0, 1] * 500  # near p = 0.5 and large n: about +- 1.96 standard errors
    lo, hi = scoring.wilson_interval(half)
    mean, stderr = scoring.mean_stderr(half)
    assert abs((hi - lo) / 2 - 1.96 * stderr) < 1e-3 and math.isclose((lo + hi) / 2, mean)


def test_paired_comparison_uses_the_per_item_differences():
    rng = random.Random(0)
    easy = [rng.random() < 0.7 for _ in range(200)]
    a = [int(e) for e in easy]
    b = [int(e and rng.random() < 0.9) for e in easy]  # B loses a tenth of A's right answers
    paired = scoring.paired_comparison(a, b, seed=0)
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    assert math.isclose(paired["difference"], statistics.fmean(a) - statistics.fmean(b), rel_tol=1e-12)
    assert math.isclose(paired["stderr"], statistics.stdev(diffs) / math.sqrt(200), rel_tol=1e-12)
    lo, hi = paired["interval"]
    assert 0 < lo <= paired["difference"] <= hi
    unpaired = math.hypot(scoring.mean_stderr(a)[1], scoring.mean_stderr(b)[1])
    assert paired["stderr"] < unpaired  # pairing removes what the items share
    same = scoring.paired_comparison(a, a)
    assert same == {"difference": 0.0, "stderr": 0.0, "interval": (0.0, 0.0)}
    with pytest.raises(ValueError, match="the same items"):
        scoring.paired_comparison(a, b[:-1])


def test_bits_per_byte_scores_every_token_once_whatever_the_windows(tiny):
    sd, cfg, tok = tiny
    text = "The capital of France is Paris. France is a country in Europe. The currency of France is the Euro."
    ids, whole = scoring.token_logprobs(sd, cfg, tok, text)
    assert ids[0] == tok.bos_id and len(whole) == len(ids) - 1
    with torch.no_grad():
        logits = forward(torch.tensor(ids[:-1]), sd, cfg)
        tau = numerics.logit_tolerance(forward_hidden(torch.tensor(ids[:-1]), sd, cfg), sd, cfg)
    want = torch.log_softmax(logits.double(), -1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    assert (whole - want).abs().max() <= 2 * tau
    for window, stride in [(8, 4), (8, 7), (5, 1)]:
        _, windowed = scoring.token_logprobs(sd, cfg, tok, text, window, stride)
        assert len(windowed) == len(whole)
        # the first window is the same computation; later tokens see less context
        assert (windowed[: window - 1] - whole[: window - 1]).abs().max() <= 2 * tau
    result = scoring.bits_per_byte(sd, cfg, tok, text)
    nll = -float(whole.sum())
    assert result["n_bytes"] == len(text.encode()) and result["n_tokens"] == len(ids) - 1
    assert math.isclose(result["bits_per_byte"], nll / math.log(2) / len(text.encode()), rel_tol=1e-12)
    assert math.isclose(result["perplexity"], math.exp(nll / (len(ids) - 1)), rel_tol=1e-12)
    assert (result["window"], result["stride"]) == (2048, 1024)
    for window, stride, message in [(1, None, "window must be in 2"), (8, 8, "stride must be in 1 .. window - 1")]:
        with pytest.raises(ValueError, match=message):
            scoring.token_logprobs(sd, cfg, tok, text, window, stride)
    with pytest.raises(ValueError, match="the text is empty"):
        scoring.bits_per_byte(sd, cfg, tok, "")


def test_bits_per_byte_of_documents_is_all_their_bits_over_all_their_bytes(tiny):
    sd, cfg, tok = tiny
    documents = ["The capital of France is Paris.", "Kenya is a country in Africa."]
    each = [scoring.bits_per_byte(sd, cfg, tok, d) for d in documents]
    both = scoring.bits_per_byte(sd, cfg, tok, documents)
    assert both["n_documents"] == 2 and both["n_tokens"] == sum(r["n_tokens"] for r in each)
    assert both["nll"] == sum(r["nll"] for r in each) and both["n_bytes"] == sum(r["n_bytes"] for r in each)
    assert math.isclose(both["bits_per_byte"], both["nll"] / math.log(2) / both["n_bytes"], rel_tol=1e-12)
    with pytest.raises(ValueError, match="no documents"):
        scoring.bits_per_byte(sd, cfg, tok, [])


def test_bits_per_byte_without_bos_starts_at_end_of_text(tiny, no_bos_tokenizer):
    sd, cfg, _ = tiny
    ids, logprobs = scoring.token_logprobs(sd, cfg, no_bos_tokenizer, "Paris is the capital of France.")
    assert ids[0] == no_bos_tokenizer.eos_id and len(logprobs) == len(ids) - 1


def test_country_items_are_four_choices_from_the_same_field():
    countries = load_countries()
    for task, (prompt, field) in tasks.COUNTRY_TASKS.items():
        items = tasks.country_items(task)
        assert items == tasks.country_items(task)  # seeded
        having = [c for c in countries if getattr(c, field)]
        assert [item["country"] for item in items] == [c.name for c in having]
        values = {getattr(c, field) for c in countries}
        for item, c in zip(items, having, strict=True):
            assert item["question"] == prompt.format(c=c)
            assert len(item["choices"]) == 4 == len(set(item["choices"]))
            assert item["choices"][item["answer"]] == getattr(c, field)
            assert set(item["choices"]) <= values
        golds = [item["answer"] for item in items]
        assert len(set(golds)) == 4  # the right answer is not always in one place
    other = tasks.country_items("capitals", prompt="Q: What is the capital of {c.name}?\nA:")
    assert other[0]["question"] == "Q: What is the capital of Afghanistan?\nA:"
    assert [i | {"question": ""} for i in other] == [i | {"question": ""} for i in tasks.country_items("capitals")]
    france = next(i for i in tasks.country_items("currencies") if i["country"] == "France")
    assert france["question"] == "The currency of France is the" and france["choices"][france["answer"]] == "Euro"


def test_held_out_countries_are_chapter_12s():
    """Chapter 11 draws its held-out countries on screen; the split here must stay that one."""
    notebook = json.loads((ROOT / "notebooks" / "11_training.ipynb").read_text())
    source = "\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code")
    line = "held_out = sorted(random.Random(0).sample(countries, len(countries) // 10), key=lambda c: c.name)"
    assert line in source
    countries = load_countries()
    held_out = tasks.held_out_countries(countries)
    assert held_out == sorted(random.Random(0).sample(countries, len(countries) // 10), key=lambda c: c.name)
    assert len(held_out) == 24 and [c.name for c in held_out[:4]] == [
        "Armenia",
        "Cabo Verde",
        "Democratic Republic of the Congo",
        "Eswatini",
    ]  # as chapter 11 prints them
    items = tasks.country_items("capitals")
    assert {i["country"] for i in items if i["split"] == "held-out"} == {c.name for c in held_out}


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"question": "Q", "choices": ["a", "b"], "answer": 0}', "{not json"], "line 2 is not JSON"),
        (['{"question": "Q", "choices": ["a"], "answer": 0}'], "line 1: 'choices' must be a list of at least 2"),
        (['{"question": "Q", "choices": [], "answer": 0}'], "'choices' must be a list of at least 2 texts"),
        (['{"question": "Q", "choices": ["a", "b"], "answer": 2}'], "an integer in 0..1 (got 2)"),
        (['{"question": "Q", "choices": ["a", "b"], "answer": -1}'], "an integer in 0..1 (got -1)"),
        (['{"question": "Q", "choices": ["a", "b"], "answer": true}'], "an integer in 0..1 (got true)"),
        (['{"question": "Q", "choices": ["a", "b"], "answer": "a"}'], 'an integer in 0..1 (got "a")'),
        (['{"question": "Q", "choices": ["a", 3], "answer": 0}'], "choice 1 must be a non-empty text (got 3)"),
        (['{"question": "Q", "choices": ["a", ""], "answer": 0}'], 'choice 1 must be a non-empty text (got "")'),
        (['{"question": " ", "choices": ["a", "b"], "answer": 0}'], "the question must be a non-empty text"),
        (['{"question": 7, "choices": ["a", "b"], "answer": 0}'], "the question must be a non-empty text"),
        (['{"choices": ["a", "b"]}'], "no 'question', 'answer'"),
        (['["Q", ["a", "b"], 0]'], "expected a JSON object"),
        (["[" * 100_000], "line 1 is not JSON (RecursionError)"),
        (["", "  "], "holds no items"),
    ],
)
def test_a_bad_task_file_is_refused_naming_the_line(tmp_path, lines, message):
    path = tmp_path / "task.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as err:
        tasks.read_items(path)
    assert message in str(err.value) and "task.jsonl" in str(err.value)


def test_task_files_are_read_bounded_and_as_utf8(tmp_path, monkeypatch):
    path = tmp_path / "task.jsonl"
    item = {"question": "Q \u2028 with a line separator", "choices": ["a", "b"], "answer": 1, "extra": 0}
    path.write_text(json.dumps(item, ensure_ascii=False) + "\r\n\n")
    assert tasks.read_items(path) == [{k: item[k] for k in ("question", "choices", "answer")}]
    path.write_bytes(b'{"question": "\xff", "choices": ["a", "b"], "answer": 0}\n')
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        tasks.read_items(path)
    monkeypatch.setattr(tasks, "MAX_TASK_BYTES", 1000)
    with pytest.raises(ValueError, match="is larger than 1,000 bytes"):
        tasks.read_items("/dev/zero")  # an endless file
    with pytest.raises(OSError, match="does not exist"):
        tasks.read_items(tmp_path / "missing.jsonl")
    with pytest.raises(OSError, match="is a directory"):
        tasks.read_items(tmp_path)
