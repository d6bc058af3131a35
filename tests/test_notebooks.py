"""The committed notebooks: functions shown on screen equal their helpers, outputs are clean and complete.

(nbval, run by `make test`, re-executes every notebook and compares its outputs.)
"""

import ast
import importlib
import json
import pkgutil
import re
from pathlib import Path

import pytest

import helpers

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXPECTED = [
    "01_tokenizer",
    "02_embedding",
    "03_rmsnorm",
    "04_attention_gqa",
    "05_rope",
    "06_one_layer",
    "07_full_stack",
    "08_lm_head_sampling",
    "09_kv_cache",
]


def helper_functions() -> dict[str, list[ast.FunctionDef]]:
    """Every top-level function and class of every helpers module, by name (a name may occur twice)."""
    out: dict[str, list] = {}
    for info in pkgutil.iter_modules(helpers.__path__):
        module = importlib.import_module(f"helpers.{info.name}")
        tree = ast.parse(Path(module.__file__).read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                out.setdefault(node.name, []).append(node)
    return out


def strip_docstrings(node):
    for n in ast.walk(node):
        if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef) and n.body:
            first = n.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                n.body = n.body[1:] or [ast.Pass()]
    return ast.dump(node, include_attributes=False)


def code_cells(path):
    nb = json.loads(path.read_text())
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_all_chapters_exist():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_functions_on_screen_equal_their_helpers(path):
    library = helper_functions()
    for cell in code_cells(path):
        source = "".join(cell["source"])
        tree = ast.parse("\n".join(line for line in source.splitlines() if not line.startswith(("%", "!"))))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name in library:
                assert strip_docstrings(node) in [strip_docstrings(h) for h in library[node.name]], (
                    f"{path.name} defines {node.name} differently from helpers: keep them identical"
                )


BAD = re.compile(r"(/root/|/home/|/Users/|/tmp/|/work/|hf_[A-Za-z0-9]{20,}|Traceback|Warning|WARNING)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_committed_and_clean(path):
    for i, cell in enumerate(code_cells(path)):
        assert cell["execution_count"] is not None, f"{path.name} cell {i} was not executed: run `make notebooks`"
        for out in cell["outputs"]:
            assert out["output_type"] != "error", f"{path.name} cell {i} has an error output"
            assert out.get("name") != "stderr", (
                f"{path.name} cell {i} writes to stderr: {''.join(out.get('text', ''))[:200]}"
            )
            text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            assert not BAD.search(text), f"{path.name} cell {i} shows {BAD.search(text).group(0)!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_template(path):
    nb = json.loads(path.read_text())
    markdown = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    for heading in ("## Setup", "## With Meta's weights", "## Recap", "## Try it yourself"):
        assert heading in markdown, f"{path.name} lacks '{heading}'"
    code = "\n".join("".join(c["source"]) for c in code_cells(path))
    assert "resolve_checkpoint_dir()" in code and "checkpoint:" in code
    assert "✓" in code, "a chapter checks its result against an independent computation"
    assert "plt.show()" in code, "a chapter has at least one figure"
    if path.stem != "09_kv_cache":
        assert "save_artifact(" in code
