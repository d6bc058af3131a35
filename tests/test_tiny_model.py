"""The embedded tiny-llama-3.2: it loads through the normal path, knows capitals, and can be re-trained."""

import random

import pytest
import torch

from helpers.checkpoint import TINY_DIR, load_checkpoint
from helpers.config import llama_3_2_1b_config
from helpers.corpus import Country, document, load_countries, seen_token_ids, sentences
from helpers.evaluate import fact_accuracy
from helpers.model import forward
from helpers.tokenizer import Tokenizer
from helpers.train import full_vocab_loss, train_tiny


@pytest.fixture(scope="module")
def tiny():
    return load_checkpoint(TINY_DIR, dtype=torch.float32)


@pytest.fixture(scope="module")
def countries():
    return load_countries()


def test_same_structure_as_llama_3_2_1b(tiny):
    cfg, sd = tiny
    real = llama_3_2_1b_config()
    assert (cfg.n_layers, cfg.vocab_size, cfg.norm_eps, cfg.rope_theta) == (16, 128256, 1e-5, 500000.0)
    assert cfg.use_scaled_rope and cfg.rope_scale_factor == real.rope_scale_factor
    assert cfg.n_rep == real.n_rep == 4
    stored = torch.load(TINY_DIR / "consolidated.00.pth", weights_only=True, mmap=True)
    assert stored["layers.0.attention.wq.weight"].dtype == torch.bfloat16
    assert torch.equal(stored["output.weight"], stored["tok_embeddings.weight"])


def test_unseen_token_rows_are_exactly_zero(tiny, countries):
    cfg, sd = tiny
    seen = seen_token_ids(Tokenizer.load(None), countries)
    nonzero = sd["tok_embeddings.weight"].abs().sum(-1) != 0
    assert set(torch.nonzero(nonzero).flatten().tolist()) <= set(seen)
    assert int(nonzero.sum()) > 0.95 * len(seen)


def test_the_capital_of_france_is_paris(tiny):
    cfg, sd = tiny
    tok = Tokenizer.load(TINY_DIR)
    logits = forward(torch.tensor(tok.encode("The capital of France is")), sd, cfg)
    assert tok.piece(int(logits[-1].argmax())) == " Paris"


@pytest.mark.slow
def test_capital_accuracy_on_a_fixed_sample(tiny, countries):
    cfg, sd = tiny
    sample = random.Random(1234).sample(countries, 40)
    acc, misses = fact_accuracy(sd, cfg, Tokenizer.load(TINY_DIR), sample)
    assert acc >= 0.95, misses


def test_corpus_is_deterministic_and_factual(countries):
    france = next(c for c in countries if c.name == "France")
    assert france.capital == "Paris" and france.continent == "Europe" and france.currency == "Euro"
    assert "Spain" in france.neighbours
    assert document(france, random.Random(0)) == document(france, random.Random(0))
    assert sentences(france)[0] == "The capital of France is Paris."
    assert len(countries) >= 240


def test_full_vocab_loss_equals_softmax_over_all_tokens():
    gen = torch.Generator().manual_seed(0)
    seen_logits = torch.randn(2, 3, 5, generator=gen)
    targets = torch.randint(0, 5, (2, 3), generator=gen)
    n_unseen = 20
    full = torch.cat([seen_logits, torch.zeros(2, 3, n_unseen)], dim=-1)
    expected = torch.nn.functional.cross_entropy(full.view(-1, 25), targets.view(-1))
    got = full_vocab_loss(seen_logits, targets, n_unseen, torch.ones(2, 3))
    torch.testing.assert_close(got, expected)


@pytest.mark.slow
def test_training_smoke_loss_decreases():
    countries = [
        Country("France", "Paris", "Europe", "Euro", ("Spain",), ("Marseille",)),
        Country("Japan", "Tokyo", "Asia", "Yen", (), ("Osaka",)),
    ]
    params = {
        "dim": 32,
        "n_layers": 2,
        "n_heads": 4,
        "n_kv_heads": 1,
        "vocab_size": 128256,
        "multiple_of": 32,
        "use_scaled_rope": True,
    }
    result = train_tiny(steps=40, batch_size=8, lr=1e-2, seed=0, params=params, countries=countries, progress=False)
    losses = result["losses"]
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    sd = result["sd"]
    assert sd["output.weight"] is sd["tok_embeddings.weight"]
    unseen = torch.ones(128256, dtype=torch.bool)
    unseen[torch.tensor(result["seen"])] = False
    assert sd["tok_embeddings.weight"][unseen].abs().max() == 0
