"""The committed notebooks: code on screen equals its helpers, outputs are clean and complete,
every chapter follows the template, exercises ship unsolved with a check each, and a chapter
opened cold runs. (nbval, run by `make test`, re-executes every notebook and compares outputs.)
"""

import ast
import importlib
import json
import os
import pkgutil
import re
from pathlib import Path

import pytest

import helpers
from helpers.chapters import chapter_of_module, chapters

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXPECTED = [c.stem for c in chapters()]  # the table of chapters, notebooks/book.json
# Modules whose functions and classes are concepts the chapters teach: a chapter that imports
# one of them relies on a definition some chapter shows on screen.
CONCEPT_MODULES = {m for c in chapters() for m in c.concepts}


def helper_definitions() -> dict[str, list[tuple[str, ast.AST]]]:
    """Every top-level function and class of every helpers module, by name: [(module, node)]."""
    out: dict[str, list] = {}
    for info in pkgutil.iter_modules(helpers.__path__):
        if info.ispkg:
            continue
        module = importlib.import_module(f"helpers.{info.name}")
        tree = ast.parse(Path(module.__file__).read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                out.setdefault(node.name, []).append((info.name, node))
    return out


def code_cells(path):
    nb = json.loads(path.read_text())
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def parse(cell) -> ast.Module:
    source = "".join(cell["source"])
    return ast.parse("\n".join(line for line in source.splitlines() if not line.startswith(("%", "!"))))


def shown(path) -> set[str]:
    """Names of the helpers' functions and classes that a chapter defines on screen."""
    library = helper_definitions()
    return {
        node.name
        for cell in code_cells(path)
        for node in parse(cell).body
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in library
    }


def test_all_chapters_exist():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_on_screen_is_generated_from_its_helpers(path):
    """Every definition a chapter shows with a helper's name is tagged and is that helper's
    current source, character for character: `make notebooks` writes it (helpers/tools/shown.py)."""
    import nbformat

    from helpers.tools.shown import fill

    nb = nbformat.read(path, as_version=4)
    stale = fill(nb)
    assert not stale, f"{path.name} cells {stale} show an old version of a helper: run `make notebooks`"


def test_the_shown_definitions_are_filled_in_and_checked():
    """The filler replaces a hand-edited copy, keeps the lines around it, and refuses a
    definition with a helper's name that carries no tag."""
    import nbformat

    from helpers.tools.shown import fill_cell, helper_source

    cell = nbformat.v4.new_code_cell(
        "%matplotlib inline\ndef rms_norm(x, weight, eps=1e-5):\n    return x\n\n\ny = rms_norm(x, g)",
        metadata={"shown": ["helpers.rmsnorm.rms_norm"]},
    )
    assert fill_cell(cell)
    assert (
        cell.source == "%matplotlib inline\n" + helper_source("helpers.rmsnorm.rms_norm") + "\n\n\ny = rms_norm(x, g)"
    )
    assert not fill_cell(cell)  # filled: nothing changes the second time
    untagged = nbformat.v4.new_code_cell("def rms_norm(x, weight, eps=1e-5):\n    return x")
    with pytest.raises(ValueError, match="without a 'shown' tag"):
        fill_cell(untagged)
    wrong = nbformat.v4.new_code_cell("x = 1", metadata={"shown": ["helpers.rmsnorm.rms_norm"]})
    with pytest.raises(ValueError, match="does not define them"):
        fill_cell(wrong)


def test_the_table_of_chapters_is_the_book():
    """notebooks/book.json lists every chapter, in order, with what the rest of the book reads
    from it: the notebook (titled as the row says), its checks module (every check it defines
    exported by helpers.check), its solution file, the stages it saves (helpers.book.stages has their
    recipes), and the syllabus lists it by number and title."""
    import helpers.check
    from helpers.book.stages import RECIPES

    table = chapters()
    assert [c.stem for c in table] == [p.stem for p in NOTEBOOKS], (
        "a notebook without a row, or a row without a notebook"
    )
    syllabus = (ROOT / "notebooks" / "SYLLABUS.md").read_text()
    for c in table:
        first = "".join(nbformat_cells(c.path)[0]["source"]).splitlines()[0]
        assert first.startswith(f"# {c.number} · "), f"{c.stem}: the title line must start with '# {c.number} · '"
        module = importlib.import_module(f"helpers.check.{c.checks}")
        made = {
            n
            for n, f in vars(module).items()
            if callable(f) and hasattr(f, "__wrapped__") and f.__module__ == module.__name__
        }
        assert made and made <= set(helpers.check.__all__), (
            f"{c.checks}: checks not exported by helpers.check: {made - set(helpers.check.__all__)}"
        )
        if (ROOT / "notebooks" / "solutions").is_dir():  # the student copy has none
            assert (ROOT / "notebooks" / "solutions" / f"{c.stem}.py").is_file(), f"{c.stem}: no solution file"
        assert re.search(rf"(?m)^\| {c.number} \| {re.escape(c.title)} \|", syllabus), (
            f"SYLLABUS.md lists no row '| {c.number} | {c.title} |'"
        )
    weeks = dict(re.findall(r"(?m)^\| (\d+) \| ([0-9, ]+[0-9])", syllabus.split("week | chapters |", 1)[-1]))
    for c in table:
        assert c.number in weeks.get(str(c.week), "").split(", "), (
            f"SYLLABUS.md's week {c.week} does not teach chapter {c.number}"
        )
    assert set(RECIPES) == {s for c in table for s in c.saves}, (
        "helpers.book.stages.RECIPES and the table's 'saves' differ"
    )
    with pytest.raises(ValueError, match="numbers must be unique and in order"):
        import json
        import tempfile

        rows = json.loads((ROOT / "notebooks" / "book.json").read_text())
        rows["chapters"] = rows["chapters"][::-1]
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "book.json").write_text(json.dumps(rows))
            chapters(Path(d) / "book.json")


def nbformat_cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


# Named in a chapter, not shown: the library's defensive version of what the chapter shows in its
# core form (read_gguf: chapter 14's parse_gguf_header, with every length it reads checked), the
# machinery around a shown concept (ChatTemplate: a format's name and default system message, read
# from a file; check_messages: refusing malformed messages; render_template: a sandbox in a child
# process) and a check (transformers_from_gguf).
NAMED_NOT_SHOWN = {"read_gguf", "ChatTemplate", "check_messages", "transformers_from_gguf", "render_template"}


def test_every_concept_a_chapter_imports_is_shown_in_a_chapter():
    library = helper_definitions()
    on_screen = set().union(*(shown(p) for p in NOTEBOOKS))
    missing = []
    for path in NOTEBOOKS:
        for cell in code_cells(path):
            for node in ast.walk(parse(cell)):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("helpers"):
                    for alias in node.names:
                        modules = {m for m, _ in library.get(alias.name, [])}
                        is_error = alias.name.endswith("Error")  # exceptions are not concepts
                        named = alias.name in NAMED_NOT_SHOWN
                        if modules & CONCEPT_MODULES and alias.name not in on_screen and not is_error and not named:
                            missing.append(f"{path.stem} imports {alias.name}")
    assert not missing, f"never shown in any chapter: {missing}"


BAD = re.compile(r"(/root/|/home/|/Users/|/tmp/|/work/|hf_[A-Za-z0-9]{20,}|Traceback|Warning|WARNING)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_committed_and_clean(path):
    for i, cell in enumerate(code_cells(path)):
        assert cell["execution_count"] is not None, f"{path.name} cell {i} was not executed: run `make notebooks`"
        assert cell["outputs"], f"{path.name} cell {i} shows nothing: a cell should show what it did"
        for out in cell["outputs"]:
            assert out["output_type"] != "error", f"{path.name} cell {i} has an error output"
            assert out.get("name") != "stderr", (
                f"{path.name} cell {i} writes to stderr: {''.join(out.get('text', ''))[:200]}"
            )
            text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            assert not BAD.search(text), f"{path.name} cell {i} shows {BAD.search(text).group(0)!r}"
            assert "rebuilt with helpers" not in text, (
                f"{path.name} cell {i}: committed outputs come from `make notebooks`"
            )


def sections(path) -> dict[str, list[dict]]:
    """Cells grouped under each '## ' heading."""
    nb = json.loads(path.read_text())
    out, current = {"top": []}, "top"
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            for line in source.splitlines():
                if line.startswith("## "):
                    current = line[3:].strip()
                    out.setdefault(current, [])
        out[current].append(cell)
    return out


def outputs_text(cells) -> str:
    return "".join(
        "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
        for c in cells
        if c["cell_type"] == "code"
        for o in c["outputs"]
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_template(path):
    parts = sections(path)
    for heading in ("Setup", "Check", "With Meta's weights", "Recap", "Try it yourself"):
        assert any(h.startswith(heading) for h in parts), f"{path.name} lacks a '## {heading}' section"
    setup = next(cells for h, cells in parts.items() if h.startswith("Setup"))
    setup_code = "\n".join("".join(c["source"]) for c in setup if c["cell_type"] == "code")
    assert "resolve_checkpoint_dir()" in setup_code and "book_prompt()" in setup_code
    assert "checkpoint:" in outputs_text(setup), f"{path.name}: the setup prints the checkpoint"
    top = "\n".join("".join(c["source"]) for c in parts["top"] + setup)
    assert "pipeline(" in top, f"{path.name}: the map at the top draws the pipeline schematic"
    check = next(cells for h, cells in parts.items() if h.startswith("Check"))
    assert "✓" in outputs_text(check), f"{path.name}: the Check section prints a ✓ line from a real comparison"
    figures = sum("image/png" in o.get("data", {}) for c in code_cells(path) for o in c["outputs"])
    assert figures >= 2, f"{path.name}: a chapter draws the schematic and at least one figure ({figures} drawn)"
    markdown = "\n".join(
        "".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"
    )
    recap = markdown.split("\n## Recap", 1)[-1].split("\n## ", 1)[0]
    sources = recap.split("Sources:", 1)[-1] if "Sources:" in recap else ""
    assert re.search(r"\*[^*]{8,}\*", sources), f"{path.name}: the recap's 'Sources:' cites at least one work by title"


def chapter_checks(stem: str) -> list[str]:
    """The exercise checks of a chapter, in the order its helpers/check module defines them (the
    student copy has no solutions to read them from)."""
    import ast as ast_

    path = next((ROOT / "helpers" / "check").glob(f"ch{stem[:2]}_*.py"))
    tree = ast_.parse(path.read_text(encoding="utf-8"))
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast_.FunctionDef) and any(ast_.unparse(d) == "exercise" for d in node.decorator_list)
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_ship_unsolved_with_a_check_each(path):
    """Every stub raises NotImplementedError, the committed output says so, and the chapter calls
    exactly the checks its solutions file passes."""
    cells = next(cells for h, cells in sections(path).items() if h.startswith("Try it yourself"))
    called = []
    for cell in (c for c in cells if c["cell_type"] == "code"):
        tree = parse(cell)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                raises = [n for n in ast.walk(node) if isinstance(n, ast.Raise)]
                assert raises and all("NotImplementedError" in ast.unparse(r) for r in raises), (
                    f"{path.name}: the stub {node.name} must only raise NotImplementedError"
                )
        called += re.findall(r"check\.(\w+)\(", "".join(cell["source"]))
        text = outputs_text([cell])
        assert text.count("not written yet") == len(re.findall(r"check\.\w+\(", "".join(cell["source"]))), (
            f"{path.name}: the committed output shows the check reporting the unsolved stub"
        )
        assert "✓" not in text
    assert called == chapter_checks(path.stem)


@pytest.mark.slow
def test_a_chapter_opened_cold_runs(tmp_path):
    """Chapter 06 with no artifacts at all (a fresh clone, opened alone): Run All succeeds and
    says in one line what it rebuilt."""
    import nbformat

    from helpers.tools.book import execute

    env = {"BOOK_ARTIFACTS": str(tmp_path / "artifacts")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nb = execute(ROOT / "notebooks" / "06_one_layer.ipynb")
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    setup = next(c for c in nb.cells if c.cell_type == "code" and "load_stage(" in c.source)
    lines = [line for line in outputs_text([setup]).splitlines() if "rebuilt with helpers" in line]
    assert lines and all("does not exist" in line for line in lines)
    assert (tmp_path / "artifacts" / "tiny-llama-3.2" / "06_one_layer.pt").is_file()
    assert isinstance(nb, nbformat.NotebookNode)


# A literal, non-zero tolerance in a check: right for one model's values on one processor.
LITERAL_TOLERANCE = re.compile(r"\b(atol|rtol)\s*=\s*[0-9.]*[1-9][0-9.]*(e[-+]?[0-9]+)?")


def test_no_check_in_a_chapter_uses_a_literal_tolerance():
    """Every float comparison in the notebooks derives its tolerance from the values
    (helpers.numerics, chapter 03); exact comparisons (atol=0) stay exact."""
    found = [
        f"{path.stem} cell {i}: {m.group(0)}"
        for path in NOTEBOOKS
        for i, cell in enumerate(code_cells(path))
        for m in LITERAL_TOLERANCE.finditer("".join(cell["source"]))
    ]
    assert not found, f"derive these from the values (helpers.numerics.float32_tolerance): {found}"
    assert LITERAL_TOLERANCE.search("assert_close(a, b, rtol=0, atol=1e-6)")
    assert not LITERAL_TOLERANCE.search("assert_close(a, b, rtol=0, atol=0)") and not LITERAL_TOLERANCE.search(
        "atol=tol"
    )


@pytest.mark.slow
def test_a_chapter_run_alone_gives_its_committed_outputs(tmp_path):
    """nbval on chapters 05 and 08 alone, with an empty artifacts folder, as a teacher re-running
    one chapter or a CI job running a subset meets them: they rebuild what the chapters before
    them would have saved and still match every committed output."""
    import subprocess
    import sys

    env = {**os.environ, "BOOK_ARTIFACTS": str(tmp_path / "artifacts")}
    chapters = ["notebooks/05_rope.ipynb", "notebooks/08_lm_head_sampling.ipynb"]
    # the same sanitizing as make test's, and this test's artifacts folder read as the book's
    sanitize = tmp_path / "sanitize.cfg"
    sanitize.write_text(
        (ROOT / "tests" / "nbval_sanitize.cfg").read_text()
        + f"\n[this-test's-artifacts]\nregex: {re.escape(str(tmp_path / 'artifacts'))}\nreplace: artifacts\n"
    )
    nbval = ["--nbval", "--nbval-current-env", "--nbval-sanitize-with", str(sanitize)]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *nbval, *chapters],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:]
    built = tmp_path / "artifacts" / "tiny-llama-3.2"
    assert (built / "04_qkv.pt").is_file() and (built / "07_full_stack.pt").is_file()  # it did rebuild


@pytest.mark.parametrize(
    "prompt", ["   ", "Столица Японии — 東京 🦙 naïve"], ids=["two-tokens", "non-ascii-with-untrained-tokens"]
)
@pytest.mark.slow
def test_the_chapters_that_index_the_prompt_run_on_any_prompt(tmp_path, prompt):
    """A prompt of two tokens (a fixed position such as 3 does not exist), and one whose tokens the
    embedded model never saw (zero vectors, tied logits, an early end of text): chapters 05, 08
    and 09 ran into each of these; they run, and skip the default prompt's own checks."""
    from helpers.tools.book import execute

    chapters = ("05_rope", "08_lm_head_sampling", "09_kv_cache")
    env = {"BOOK_ARTIFACTS": str(tmp_path / "artifacts"), "BOOK_PROMPT": prompt}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        shown = {name: outputs_text(execute(ROOT / "notebooks" / f"{name}.ipynb").cells) for name in chapters}
        assert "(not checked: the next token is ' Paris'" in shown["08_lm_head_sampling"]
        assert "cached == uncached logits" in shown["09_kv_cache"]
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_a_prompt_longer_than_the_chapters_can_show_is_refused_in_one_line(monkeypatch):
    from helpers.book.stages import MAX_PROMPT_CHARACTERS, book_prompt

    monkeypatch.setenv("BOOK_PROMPT", "x" * (MAX_PROMPT_CHARACTERS + 1))
    with pytest.raises(ValueError, match=f"has {MAX_PROMPT_CHARACTERS + 1} characters, more than the"):
        book_prompt()
    monkeypatch.setenv("BOOK_PROMPT", "x" * MAX_PROMPT_CHARACTERS)
    assert book_prompt() == "x" * MAX_PROMPT_CHARACTERS


# The chapter by which each library module is complete: it imports only modules complete by then.
# And the code a chapter shows names nothing a later chapter introduces: later chapters extend the
# earlier code through seams (a weight that multiplies itself, the block passed to the stack, the
# step passed to generate), never through a branch in it.
CHAPTER_OF_MODULE = chapter_of_module()
# The one seam that still reaches back: chapter 05's attention (and the stack of 07-08 that calls
# it) takes chapter 09's cache as an optional argument, as gpt-fast's and Meta's attention do.
REACHES_BACK = {"KVCache"}
# Checks, not concepts: chapter 10 compares its 4-bit weights with bitsandbytes inside transformers,
# loading the same weights there with chapter 13's conversion.
CHECKED_AHEAD = {"hf_model", "transformers_module"}


def run_time_imports(tree: ast.Module) -> set[str]:
    """The helpers modules a module imports when it runs (``if TYPE_CHECKING:`` blocks excluded)."""
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    return {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module and id(node) not in skip
    }


def test_library_modules_import_only_what_earlier_chapters_taught():
    modules = {p.stem for p in (ROOT / "helpers").glob("*.py")} - {"__init__", "__main__"}
    assert modules == set(CHAPTER_OF_MODULE), f"give each module its chapter: {modules ^ set(CHAPTER_OF_MODULE)}"
    late = []
    for module, chapter in CHAPTER_OF_MODULE.items():
        tree = ast.parse((ROOT / "helpers" / f"{module}.py").read_text())
        late += [f"{module} (ch{chapter:02d}) imports {m} (ch{CHAPTER_OF_MODULE[m]:02d})"
                 for m in run_time_imports(tree) if CHAPTER_OF_MODULE.get(m, 0) > chapter]  # fmt: skip
    assert not late, late


def introduced_in() -> dict[str, int]:
    """Each helper name and the chapter that introduces it: the first to show it, or, for a name
    no chapter shows, the first chapter that shows anything of its module (else the module's)."""
    from helpers.tools.shown import library

    first: dict[str, int] = {}
    for path in NOTEBOOKS:
        for cell in code_cells(path):
            for qualified in cell.get("metadata", {}).get("shown", []):
                first.setdefault(qualified, int(path.stem[:2]))
    module_first: dict[str, int] = {}
    for qualified, chapter in first.items():
        module = qualified.split(".")[1]
        module_first[module] = min(module_first.get(module, 99), chapter)
    out: dict[str, int] = {}
    for name, qualified in library().items():
        chapters = []
        for q in qualified:
            module = q.split(".")[1]
            chapters.append(first.get(q, module_first.get(module, CHAPTER_OF_MODULE.get(module, 0))))
        out[name] = min(chapters)
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_chapter_shows_nothing_a_later_chapter_introduces(path):
    """The definitions chapter N shows name no helper that a chapter after N introduces."""
    from helpers.tools.shown import helper_source

    chapter, when = int(path.stem[:2]), introduced_in()
    found = []
    for cell in code_cells(path):
        for qualified in cell.get("metadata", {}).get("shown", []):
            tree = ast.parse(helper_source(qualified))
            names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
            found += [
                f"{qualified} names {name} (chapter {when[name]:02d})"
                for name in sorted(names - REACHES_BACK - CHECKED_AHEAD)
                if when.get(name, 0) > chapter
            ]
    assert not found, f"{path.name} (chapter {chapter}) shows code from later chapters: {found}"


# What a notebook may import from a later chapter: the cache seam and the checks above, and the
# book's facts about countries with their accuracy (chapter 11's data, measured in chapter 10 with a
# pointer there) -- data and measuring instruments, not a concept the chapter relies on.
DATA_AHEAD = {"load_countries", "sentences", "fact_accuracy"}
IMPORTED_AHEAD = REACHES_BACK | CHECKED_AHEAD | DATA_AHEAD


def later_imports(path: Path, cells: list[dict] | None = None) -> list[str]:
    """The names a chapter's code cells import that a later chapter introduces, and any import of
    ``helpers.tools`` (the command-line tooling, which no notebook uses)."""
    chapter, when = int(path.stem[:2]), introduced_in()
    found = []
    for cell in code_cells(path) if cells is None else cells:
        for node in ast.walk(parse(cell)):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names if a.name.startswith("helpers")]
                found += [f"import {m}" for m in modules if m.startswith("helpers.tools")]
                continue
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "helpers"):
                continue
            parts = node.module.split(".")
            if parts[1:2] == ["tools"] or (parts == ["helpers"] and "tools" in {a.name for a in node.names}):
                found.append(f"from {node.module} import {', '.join(a.name for a in node.names)} (tooling)")
                continue
            if len(parts) > 2 or parts[1:2] in (["book"], ["check"]):
                continue  # the book's machinery and the exercise checks
            for alias in node.names:
                module = parts[1] if len(parts) > 1 else alias.name
                introduced = when.get(alias.name, CHAPTER_OF_MODULE.get(module, 0))
                if introduced > chapter and alias.name not in IMPORTED_AHEAD:
                    found.append(f"{alias.name} from {node.module} (chapter {introduced:02d})")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_chapter_imports_nothing_a_later_chapter_introduces(path):
    found = later_imports(path)
    assert not found, f"{path.name} imports what a later chapter introduces: {found}"


def test_the_import_order_rule_rejects_a_name_from_the_next_chapter():
    """The rule above fails on what it exists for: chapter 11 importing chapter 12's router, or
    chapter 14 importing the command-line tooling."""
    training, real = (ROOT / "notebooks" / f"{c.stem}.ipynb" for c in chapters() if c.number in ("11", "14"))
    cell = {
        "cell_type": "code",
        "source": ["from helpers.moe import route\n", "from helpers.corpus import load_countries\n"],
    }
    assert later_imports(training, [cell]) == ["route from helpers.moe (chapter 12)"]
    tooling = {"cell_type": "code", "source": ["from helpers.tools import smollm2\n"]}
    assert later_imports(real, [tooling]) == ["from helpers.tools import smollm2 (tooling)"]
