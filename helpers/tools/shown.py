"""The definitions the chapters show are generated from ``helpers/``, never copied by hand.

A code cell that shows a helper's function or class carries the qualified names in its
metadata, ``"shown": ["helpers.model.transformer_block", ...]``. ``fill`` replaces each such
definition in the cell with the helper's source as it is now (decorators and docstring
included) and leaves the rest of the cell -- the lines that use it -- alone. ``make notebooks``
fills every chapter before executing it; ``python -m helpers.tools.shown`` only fills (the
outputs then come from ``make notebooks``), ``--check`` lists the cells that are out of date.
A definition in a cell with a helper's name but no tag is an error: tag it, or rename it.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
from functools import cache
from pathlib import Path

from ..files import REPO_ROOT

HELPERS = REPO_ROOT / "helpers"
KEY = "shown"


def definitions(tree: ast.Module) -> dict[str, tuple[int, int]]:
    """Top-level functions and classes of a module: name -> (first line, last line), 1-based,
    decorators included."""
    return {
        node.name: (min([node.lineno] + [d.lineno for d in node.decorator_list]), node.end_lineno)
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }


@cache
def module_source(module: str) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """The lines of helpers.<module> and where each definition sits in them."""
    path = Path(importlib.util.find_spec(f"helpers.{module}").origin)
    text = path.read_text(encoding="utf-8")
    return text.splitlines(keepends=True), definitions(ast.parse(text))


@cache
def library() -> dict[str, list[str]]:
    """name -> the qualified names of every helper definition with that name (the exercise
    checks, ``helpers.check``, are named after the exercises and are not shown)."""
    out: dict[str, list[str]] = {}
    for path in sorted(HELPERS.rglob("*.py")):
        module = ".".join(path.relative_to(HELPERS).with_suffix("").parts)
        if module.startswith(("tools", "check")) or module.endswith("__init__") or module == "__main__":
            continue
        for name in definitions(ast.parse(path.read_text(encoding="utf-8"))):
            out.setdefault(name, []).append(f"helpers.{module}.{name}")
    return out


def helper_source(qualified: str) -> str:
    """The source of helpers.<module>.<name>, as it stands in its file."""
    module, name = qualified.removeprefix("helpers.").rsplit(".", 1)
    lines, where = module_source(module)
    if name not in where:
        raise KeyError(f"{qualified} does not exist: fix the cell's {KEY!r} tag")
    first, last = where[name]
    return "".join(lines[first - 1 : last]).rstrip("\n")


def cell_definitions(source: str) -> dict[str, tuple[int, int]]:
    """The definitions in a cell's source; IPython's %magic and !shell lines count as lines."""
    masked = "\n".join("#" + line if line.startswith(("%", "!")) else line for line in source.split("\n"))
    return definitions(ast.parse(masked))


def fill_cell(cell, tag_untagged: bool = False) -> bool:
    """Put the helpers' current source into one code cell; True if its source changed."""
    source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
    found = cell_definitions(source)
    tagged = list(cell.metadata.get(KEY, []))
    by_name = {q.rsplit(".", 1)[1]: q for q in tagged}
    for name in found:
        if name in library() and name not in by_name:
            if not tag_untagged or len(library()[name]) != 1:
                raise ValueError(f"a cell defines {name}, a helper's name, without a {KEY!r} tag: {library()[name]}")
            by_name[name] = library()[name][0]
    missing = set(by_name) - set(found)
    if missing:
        raise ValueError(f"a cell is tagged with {sorted(missing)} but does not define them")
    lines = source.split("\n")
    for name, (first, last) in sorted(found.items(), key=lambda item: -item[1][0]):  # bottom up
        if name in by_name:
            lines[first - 1 : last] = helper_source(by_name[name]).split("\n")
    new = "\n".join(lines)
    if by_name:
        cell.metadata[KEY] = sorted(by_name.values(), key=lambda q: found[q.rsplit(".", 1)[1]])
    changed = new != source
    cell.source = new
    return changed


def fill(nb, tag_untagged: bool = False) -> list[int]:
    """Fill every code cell of a notebook; the indices of the cells whose source changed."""
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and fill_cell(c, tag_untagged)]


def main(argv: list[str] | None = None) -> int:
    import nbformat

    from .book import notebooks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only list the cells that are out of date")
    parser.add_argument("--tag", action="store_true", help="tag untagged definitions with a helper's name")
    args = parser.parse_args(argv)
    stale = []
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        changed = fill(nb, tag_untagged=args.tag)
        stale += [f"{path.name} cell {i}" for i in changed]
        if not args.check and nbformat.writes(nb) != before:
            nbformat.write(nb, path)
    if stale:
        verb = "out of date" if args.check else "filled from helpers/ (now run `make notebooks`)"
        print(f"{len(stale)} cell(s) {verb}: " + ", ".join(stale), file=sys.stderr if args.check else sys.stdout)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
