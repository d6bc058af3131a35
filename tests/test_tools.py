"""make run's notebook driver, and the pieces of make bench that are not timings."""

import nbformat
import torch

from helpers import book
from helpers.bench import bytes_per_token
from helpers.checkpoint import parameter_count
from helpers.config import llama_3_2_1b_config
from helpers.sampling import decode_head


def test_bytes_read_per_decoded_token_at_1b():
    cfg = llama_3_2_1b_config()
    # every weight once, the LM head included, but of the embedding table only one row
    expected = parameter_count(cfg, include_output=True) - cfg.vocab_size * cfg.dim + cfg.dim
    assert bytes_per_token(cfg, torch.bfloat16) == 2 * expected
    assert bytes_per_token(cfg, torch.float32) == 4 * expected


def test_decode_head_gives_the_same_logits():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(1000, 64, generator=gen)
    h = torch.randn(64, generator=gen)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
        got, want = h.to(dtype) @ decode_head(w.to(dtype)), h.to(dtype) @ w.to(dtype).T
        torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)


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
    assert (tmp_path / "build" / "html" / "01_fine.html").is_file()
