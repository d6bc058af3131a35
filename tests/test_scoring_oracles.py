"""Chapter 15's scorer checked by independent implementations, on ``export-hf``'s output of the
embedded model: lm-evaluation-harness (``--model hf``, float32, batch size 1, offline) gives the
same acc and acc_norm, the same per-item log-likelihoods and the same bits per byte; and
transformers' ``LlamaForCausalLM`` the same log-likelihoods and perplexity = exp(its loss).

Tolerance, derived (helpers/numerics.py): two float32 computations of a logit lie within
tau = ``logit_tolerance`` of each other, and a log-probability l_y - logsumexp(l) moves by at
most 2 tau when every logit moves by tau (logsumexp is 1-Lipschitz in the largest change). The
harness takes its log-softmax in float32, a sum of V exponentials that adds
``float32_tolerance(V, 1)`` more (relative error of a sum of positive terms, as a logarithm);
the book's is in float64. So a continuation of n tokens: n (2 tau + float32_tolerance(V, 1)).
"""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from helpers import scoring, tasks
from helpers.checkpoint import TINY_DIR, load_checkpoint
from helpers.corpus import corpus_text, load_countries
from helpers.hf import export_hf, transformers_module
from helpers.model import forward_hidden
from helpers.numerics import float32_tolerance, logit_tolerance
from helpers.tokenizer import Tokenizer

ENGLISH = (
    "The old lighthouse keeper climbed the stairs every evening, counting each step out loud. "
    "Nobody had asked him to do it, but he said the numbers kept him company on windy nights."
)


@pytest.fixture(scope="module")
def tiny():
    cfg, sd = load_checkpoint(TINY_DIR, dtype=torch.float32)
    return sd, cfg, Tokenizer.load(TINY_DIR)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    transformers_module().utils.logging.set_verbosity_error()
    return export_hf(TINY_DIR, tmp_path_factory.mktemp("export") / "tiny-llama-3.2-hf")


def check_items() -> list[dict]:
    """Items of every kind the chapter scores: training and held-out countries, multi-token
    choices (continents: " North America"), three shots, and MMLU's lettered layout."""
    capitals, continents = tasks.country_items("capitals"), tasks.country_items("continents")
    training = [i for i in capitals if i["split"] == "training"]
    held_out = [i for i in capitals if i["split"] == "held-out"]
    shots = scoring.with_shots(training[20:22], 3, training, seed=0)
    letters = [scoring.letter_item(i) for i in training[30:32]]
    return training[:4] + held_out[:2] + continents[40:43] + shots + letters


def tolerance(sd, cfg, tok, context: str, continuation: str) -> float:
    ctx, cont = scoring.encode_pair(tok, context, continuation)
    with torch.no_grad():
        tau = logit_tolerance(forward_hidden(torch.tensor(ctx + cont)[:-1], sd, cfg), sd, cfg)
    return len(cont) * (2 * tau + float32_tolerance(cfg.vocab_size, 1.0))


def quiet_lm_eval(monkeypatch):
    """lm-eval, imported with its logging and the progress bars of datasets and transformers off."""
    lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is installed by the Makefile from requirements-lmeval.txt")
    monkeypatch.setenv("HF_XET_HIGH_PERFORMANCE", "0")  # lm_eval sets it on import; keep the environment as it was
    for name in ("lm_eval", "lm-eval", "datasets", "transformers", "accelerate"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.ERROR)
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    from lm_eval.tasks import TaskManager

    return lm_eval, TaskManager


def run_lm_eval(tmp_path, monkeypatch, exported, task: dict, add_bos_token: bool, bootstrap_iters: int) -> dict:
    """simple_evaluate on one task written to tmp_path as YAML, offline, float32, batch size 1.
    (A mean's standard error is a formula there; other aggregations are bootstrapped, with
    ``bootstrap_iters`` resamples, 0 for none.)"""
    lm_eval, TaskManager = quiet_lm_eval(monkeypatch)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    (tmp_path / f"{task['task']}.yaml").write_text(json.dumps(task))  # JSON is YAML
    result = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={exported},dtype=float32,add_bos_token={add_bos_token}",
        tasks=[task["task"]],
        task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
        batch_size=1,
        device="cpu",
        num_fewshot=0,
        log_samples=True,
        bootstrap_iters=bootstrap_iters,
    )
    samples = sorted(result["samples"][task["task"]], key=lambda s: s["doc_id"])
    return {"results": result["results"][task["task"]], "samples": samples}


@pytest.mark.slow
def test_lm_eval_multiple_choice_gives_the_same_scores(tmp_path, monkeypatch, exported, tiny):
    sd, cfg, tok = tiny
    items = check_items()
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({k: i[k] for k in ("question", "choices", "answer")}) + "\n" for i in items))
    task = {
        "task": "book_multiple_choice",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(tmp_path / "datasets")},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}",
        "target_delimiter": " ",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }
    harness = run_lm_eval(tmp_path, monkeypatch, exported, task, add_bos_token=True, bootstrap_iters=1)
    ours = scoring.score_choices(sd, cfg, tok, items)
    assert len(harness["samples"]) == len(items)
    worst = 0.0
    for item, mine, theirs in zip(items, ours, harness["samples"], strict=True):
        assert [tuple(a) for a in theirs["arguments"]] == scoring.choice_requests(item)  # the same requests
        lls, greedy = zip(*[r[0] for r in theirs["resps"]], strict=True)
        for (context, continuation), a, b in zip(
            scoring.choice_requests(item), mine["loglikelihoods"], lls, strict=True
        ):
            bound = tolerance(sd, cfg, tok, context, continuation)
            assert abs(a - b) <= bound, (context, continuation, a, b, bound)
            worst = max(worst, abs(a - b) / bound)
        assert list(greedy) == mine["greedy"]
    outcomes = scoring.choice_outcomes(ours, items)
    for name in ("acc", "acc_norm"):
        value, stderr = scoring.mean_stderr(outcomes[name])
        assert harness["results"][f"{name},none"] == value
        assert math.isclose(harness["results"][f"{name}_stderr,none"], stderr, rel_tol=1e-9, abs_tol=1e-15)
    assert outcomes["acc"] != outcomes["acc_norm"] or sum(outcomes["acc"]) < len(items)  # not a trivial set
    print(f"largest |log-likelihood difference| = {worst:.2g} of the derived tolerance")


@pytest.mark.slow
def test_lm_eval_bits_per_byte_is_the_same(tmp_path, monkeypatch, exported, tiny):
    sd, cfg, tok = tiny
    texts = [ENGLISH, corpus_text(load_countries()[:3])]
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    task = {
        "task": "book_bits_per_byte",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(tmp_path / "datasets")},
        "test_split": "test",
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": [{"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False}],
    }
    # add_bos_token=False: the rolling windows already start with the BOS token (lm-eval's prefix
    # token); with True the tokenizer would add a second one, and BOS itself would be scored.
    harness = run_lm_eval(tmp_path, monkeypatch, exported, task, add_bos_token=False, bootstrap_iters=0)
    total_nll, total_bytes, total_bound = 0.0, 0, 0.0
    for text, sample in zip(texts, harness["samples"], strict=True):
        ids, logprobs = scoring.token_logprobs(sd, cfg, tok, text)
        with torch.no_grad():
            tau = logit_tolerance(forward_hidden(torch.tensor(ids[:-1]), sd, cfg), sd, cfg)
        bound = len(logprobs) * (2 * tau + float32_tolerance(cfg.vocab_size, 1.0))
        assert abs(float(logprobs.sum()) - sample["resps"][0][0]) <= bound
        result = scoring.bits_per_byte(sd, cfg, tok, text)
        total_nll, total_bytes, total_bound = (
            total_nll + result["nll"],
            total_bytes + result["n_bytes"],
            total_bound + bound,
        )
    bpb = total_nll / math.log(2) / total_bytes  # lm-eval's aggregate: all the texts' bits over all their bytes
    assert abs(harness["results"]["bits_per_byte,none"] - bpb) <= total_bound / math.log(2) / total_bytes


def test_transformers_gives_the_same_loglikelihoods_and_perplexity(exported, tiny):
    sd, cfg, tok = tiny
    model = transformers_module().AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    items = check_items()[::3]
    pairs = [pair for item in items for pair in scoring.choice_requests(item)]
    for (context, continuation), (ll, n, greedy) in zip(
        pairs, scoring.loglikelihoods(sd, cfg, tok, pairs), strict=True
    ):
        ctx, cont = scoring.encode_pair(tok, context, continuation)
        with torch.no_grad():
            logits = model(torch.tensor([ctx + cont[:-1]])).logits[0, len(ctx) - 1 :]  # (n, V)
        logprobs = torch.log_softmax(logits.double(), -1).gather(-1, torch.tensor(cont)[:, None])
        # both log-softmaxes in float64 here: only the logits differ
        bound = tolerance(sd, cfg, tok, context, continuation) - n * float32_tolerance(cfg.vocab_size, 1.0)
        assert abs(ll - float(logprobs.sum())) <= bound and n == len(cont)
        assert greedy == bool((logits.argmax(-1) == torch.tensor(cont)).all())
    for text in [ENGLISH, "The capital of France is Paris. The currency of France is the Euro."]:
        ours = scoring.bits_per_byte(sd, cfg, tok, text)
        ids = torch.tensor([[tok.bos_id, *tok.encode(text, bos=False)]])
        with torch.no_grad():
            loss = float(model(ids, labels=ids).loss)  # mean cross-entropy over every token after the first
            tau = logit_tolerance(forward_hidden(ids[0, :-1], sd, cfg), sd, cfg)
        assert abs(math.log(ours["perplexity"]) - loss) <= 2 * tau + float32_tolerance(cfg.vocab_size, 1.0)
