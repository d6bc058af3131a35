"""make run's notebook driver, and the pieces of make bench that are not timings."""

import nbformat
import torch

from helpers.checkpoint import parameter_count
from helpers.config import llama_3_2_1b_config
from helpers.tools import book
from helpers.tools.bench import EAGER, bytes_per_token, summarize


def test_bytes_read_per_decoded_token_at_1b():
    cfg = llama_3_2_1b_config()
    # every weight once, the LM head included, but of the embedding table only one row
    expected = parameter_count(cfg, include_output=True) - cfg.vocab_size * cfg.dim + cfg.dim
    assert bytes_per_token(cfg, torch.bfloat16) == 2 * expected
    assert bytes_per_token(cfg, torch.float32) == 4 * expected


def test_results_json_has_exactly_the_issue_schema():
    def group(model, dtype, rates, bandwidth):
        return {
            "model": model,
            "dtype": dtype,
            "prompt_tokens": 16,
            "new_tokens": 128,
            "tokens_per_s": rates,
            "bandwidth_GBps": bandwidth,
        }

    groups = [
        group(
            "tiny", "float32", {"scratch-cache": 9.0, EAGER: 7.0, "scratch-nocache": 1.0, "transformers": 4.0}, [30.0]
        ),
        group("1b-shape", "bfloat16", {"scratch-cache": 2.0, EAGER: 1.0, "transformers": 1.5}, [31.0, 35.0]),
        group("1b-shape", "float32", {"scratch-cache": 1.0, EAGER: 0.5, "transformers": 0.7}, [33.0]),
    ]
    results = summarize(groups, 51.0)
    assert list(results) == ["bandwidth_GBps", "rows", "roofline_tokens_per_s", "nbval_suite_s"]
    assert results["bandwidth_GBps"] == 35.0  # the best round: a roofline is an upper bound
    assert all(
        list(row) == ["model", "impl", "dtype", "prompt_tokens", "new_tokens", "tokens_per_s"]
        for row in results["rows"]
    )
    assert [(r["model"], r["dtype"], r["impl"]) for r in results["rows"]] == [
        ("tiny", "float32", "scratch-cache"),
        ("tiny", "float32", "scratch-nocache"),
        ("tiny", "float32", "transformers"),
        ("1b-shape", "bfloat16", "scratch-cache"),
        ("1b-shape", "bfloat16", "transformers"),
        ("1b-shape", "float32", "scratch-cache"),
        ("1b-shape", "float32", "transformers"),
    ]
    cfg = llama_3_2_1b_config()
    assert results["roofline_tokens_per_s"] == {
        "1b-shape-bfloat16": round(35e9 / bytes_per_token(cfg, torch.bfloat16), 3),
        "1b-shape-float32": round(35e9 / bytes_per_token(cfg, torch.float32), 3),
    }
    assert summarize(groups[:1], None)["roofline_tokens_per_s"] == {}


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
