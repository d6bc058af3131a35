"""make run's notebook driver, and the pieces of make bench that are not timings."""

import math

import nbformat
import pytest
import torch

from helpers.checkpoint import expected_shapes, parameter_count, random_state_dict
from helpers.config import ModelConfig, llama_3_2_1b_config
from helpers.tools import book
from helpers.tools.bench import EAGER, bytes_per_token, summarize


def test_bytes_read_per_decoded_token_at_1b():
    cfg = llama_3_2_1b_config()
    # every weight once, the LM head included, but of the embedding table only one row
    expected = parameter_count(cfg, include_output=True) - cfg.vocab_size * cfg.dim + cfg.dim
    assert bytes_per_token(cfg, torch.bfloat16) == 2 * expected
    assert bytes_per_token(cfg, torch.float32) == 4 * expected


def test_results_json_schema_and_per_round_roofline_fractions():
    cfg = llama_3_2_1b_config()
    bf16, int4 = bytes_per_token(cfg, torch.bfloat16), bytes_per_token(cfg, torch.bfloat16, "int4")

    def group(model, dtype, rates, bandwidth, bytes_read=None):
        impls = list(rates)
        return {
            "model": model,
            "dtype": dtype,
            "prompt_tokens": 16,
            "new_tokens": 128,
            "tokens_per_s": rates,
            "seconds": {i: [128 / rates[i]] * len(bandwidth) for i in impls},
            "bandwidth_GBps": bandwidth,
            "bytes_per_token": bytes_read or dict.fromkeys(impls, 1),
        }

    one_b = group(
        "1b-shape",
        "bfloat16",
        {"scratch-cache": 2.0, EAGER: 1.0, "scratch-cache int4": 3.0, "transformers": 1.5},
        [31.0, 35.0, 20.0],
        {"scratch-cache": bf16, EAGER: bf16, "scratch-cache int4": int4, "transformers": bf16},
    )
    one_b["seconds"]["scratch-cache"] = [64.0, 32.0, 64.0]  # 2, 4 and 2 tok/s in the three rounds
    groups = [
        group(
            "tiny", "float32", {"scratch-cache": 9.0, EAGER: 7.0, "scratch-nocache": 1.0, "transformers": 4.0}, [30.0]
        ),
        one_b,
    ]
    results = summarize(groups, 51.0)
    assert list(results) == ["bandwidth_GBps", "rows", "roofline_tokens_per_s", "nbval_suite_s"]
    assert results["bandwidth_GBps"] == 35.0  # the best round: a roofline is an upper bound
    keys = ["model", "impl", "dtype", "prompt_tokens", "new_tokens", "tokens_per_s"]
    assert all(list(r) == keys for r in results["rows"] if r["model"] == "tiny")
    assert all(list(r) == [*keys, "roofline_fraction"] for r in results["rows"] if r["model"] == "1b-shape")
    assert [(r["model"], r["dtype"], r["impl"]) for r in results["rows"]] == [
        ("tiny", "float32", "scratch-cache"),
        ("tiny", "float32", "scratch-nocache"),
        ("tiny", "float32", "transformers"),
        ("1b-shape", "bfloat16", "scratch-cache"),
        ("1b-shape", "int4", "scratch-cache"),
        ("1b-shape", "bfloat16", "transformers"),
    ]
    # each round against its own roofline: 2 / (31e9 / bf16), 4 / (35e9 / bf16), 2 / (20e9 / bf16); the median
    per_round = sorted([2 * bf16 / 31e9, 4 * bf16 / 35e9, 2 * bf16 / 20e9])
    assert results["rows"][3]["roofline_fraction"] == round(per_round[1], 3)
    assert results["roofline_tokens_per_s"] == {
        "1b-shape-bfloat16": round(35e9 / bf16, 3),
        "1b-shape-int4": round(35e9 / int4, 3),
    }
    assert summarize(groups[:1], None)["roofline_tokens_per_s"] == {}


def test_bytes_read_per_token_count_the_quantized_scales():
    cfg = llama_3_2_1b_config()
    projections = sum(
        math.prod(s) for k, s in expected_shapes(cfg).items() if ".attention.w" in k or ".feed_forward." in k
    )
    rest = bytes_per_token(cfg, torch.bfloat16) - 2 * projections  # head, norms, one embedding row in bf16
    # int8: a byte per weight and a bf16 scale per output row; int4: half a byte and a bf16 scale and zero per 64
    rows = sum(s[0] for k, s in expected_shapes(cfg).items() if ".attention.w" in k or ".feed_forward." in k)
    assert bytes_per_token(cfg, torch.bfloat16, "int8") == rest + projections + 2 * rows
    assert bytes_per_token(cfg, torch.bfloat16, "int4") == rest + projections // 2 + projections // 64 * 4
    # W8A8: int8's codes, its float32 scales as fbgemm reads them
    assert bytes_per_token(cfg, torch.bfloat16, "w8a8") == rest + projections + 4 * rows


@pytest.mark.slow
def test_profile_times_exactly_the_matrices_a_step_reads():
    """--profile's projections and LM head, with the norms and one embedding row, are the bytes
    bytes_per_token says a step reads, for every format: no matrix left out or counted twice."""
    from helpers.tools.profile_step import where_time_goes

    cfg = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=128256, multiple_of=64)
    rows = where_time_goes(cfg, random_state_dict(cfg), rounds=1, steps=1)
    assert [r["weights"] for r in rows] == ["bfloat16", "int8", "int4", "w8a8"]
    norms_and_row = (2 * cfg.n_layers + 1) * cfg.dim * 2 + cfg.dim * 2
    for r, scheme in zip(rows, (None, "int8", "int4", "w8a8"), strict=True):
        read = r["projections"]["bytes"] + r["LM head"]["bytes"] + norms_and_row
        assert read == bytes_per_token(cfg, torch.bfloat16, scheme), r["weights"]


def test_run_book_names_the_failing_notebook(tmp_path, monkeypatch, capsys):
    for name, source in [
        ("01_fine", "print('ok')"),
        ("02_broken", "raise ValueError('boom')"),
        ("03_never", "print(3)"),
    ]:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(source)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    monkeypatch.setattr(book, "NOTEBOOKS_DIR", tmp_path)
    monkeypatch.setattr(book, "BUILD_DIR", tmp_path / "build")
    assert book.run_book() == 1
    out = capsys.readouterr()
    assert "01_fine.ipynb" in out.out and "03_never" not in out.out
    assert "FAILED 02_broken.ipynb" in out.err and "boom" in out.err
    html = (tmp_path / "build" / "html" / "01_fine.html").read_text()
    # equations render offline: MathJax is loaded from the copy beside the page, no CDN
    assert 'src="mathjax/MathJax.js?config=' in html and 'src="http' not in html
    assert (tmp_path / "build" / "html" / "mathjax" / "MathJax.js").is_file()


def test_run_book_reports_an_interruption_as_such(tmp_path, monkeypatch, capsys):
    """Ctrl-C used to surface as a bare AssertionError from the kernel client."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(1)")]
    nbformat.write(nb, tmp_path / "01_only.ipynb")
    monkeypatch.setattr(book, "NOTEBOOKS_DIR", tmp_path)
    monkeypatch.setattr(book, "BUILD_DIR", tmp_path / "build")

    def interrupted(path, timeout=600):
        raise KeyboardInterrupt

    monkeypatch.setattr(book, "execute", interrupted)
    assert book.run_book() == 130
    err = capsys.readouterr().err
    assert "INTERRUPTED in 01_only.ipynb" in err and "AssertionError" not in err


def test_profile_int8_candidates_compute_the_same_products_over_every_projection():
    """--profile's one-row int8 products: each agrees with the float loop (checked inside, up to
    the activation row's rounding), and each streams exactly the projections' codes."""
    from helpers.tools.profile_step import int8_candidates

    cfg = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=256, multiple_of=64)
    rows = int8_candidates(cfg, random_state_dict(cfg), rounds=1, repeats=1)
    from helpers.kernels import fbgemm_sums_exactly

    names = ["inductor float loop", "_weight_int8pack_mm"]
    names += ["torch._int_mm", "fbgemm dynamic"] if fbgemm_sums_exactly() else []
    assert [r["product"] for r in rows] == names
    projections = sum(
        math.prod(s) for k, s in expected_shapes(cfg).items() if ".attention.w" in k or ".feed_forward." in k
    )
    assert all(r["code_bytes"] == projections and r["matrices"] == 7 * cfg.n_layers for r in rows)
