"""``make run`` and ``make notebooks``: execute the book's notebooks headless, in order.

- ``run``: executes notebooks/NN_*.ipynb on the default checkpoint into build/notebooks/
  (executed copies) and build/html/, then prints each notebook's time and the model's
  greedy continuation of the book's prompt. Exits non-zero naming a failing notebook.
- ``notebooks [08 ...]``: re-executes the committed notebooks in place (the one way their
  outputs are produced), all or the chapters named; the Makefile pins it to the embedded
  checkpoint (``make notebooks CHAPTERS="08 09"``).
- ``smoke --checkpoint DIR 01 04 ...``: executes those chapters on another checkpoint,
  outputs not compared, and fails naming the first chapter that raises (``make test``
  runs it on SmolLM2).

Both first put the helpers' current source into the cells that show it (helpers/tools/shown.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from ..checkpoint import TINY_DIR, load_checkpoint, resolve_checkpoint_dir
from ..files import REPO_ROOT, display_path

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BUILD_DIR = REPO_ROOT / "build"
# MathJax 2.7 from the jupyter-server-mathjax package, copied next to the HTML: no CDN, no network.
MATHJAX_URL = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"


def copy_mathjax(out_html: Path) -> Path:
    """MathJax's files into out_html/mathjax/ (once), so the pages render math offline."""
    import shutil

    import jupyter_server_mathjax

    target = out_html / "mathjax"
    if not (target / "MathJax.js").is_file():
        shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", target, dirs_exist_ok=True)
    return target


def notebooks() -> list[Path]:
    """The chapters, in book order (01_..., 02_..., ...)."""
    return sorted(p for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def execute(path: Path, timeout: int = 600):
    """Run every cell of one notebook with the working directory set to notebooks/."""
    import tempfile

    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    from .shown import fill

    nb = nbformat.read(path, as_version=4)
    fill(nb)  # the definitions it shows, as helpers/ has them now
    with tempfile.TemporaryDirectory() as sockets:
        # Local (ipc) sockets in a private directory: no TCP ports opened, no security warning.
        km = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets) / "kernel"))
        client = NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
        try:
            client.execute()
        finally:
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    return nb


def continuation(max_new_tokens: int = 24) -> str:
    """The default checkpoint's greedy continuation of the book's prompt."""
    import torch

    from ..book.stages import book_prompt
    from ..generation import generate
    from ..tokenizer import Tokenizer

    ckpt = resolve_checkpoint_dir()
    cfg, sd = load_checkpoint(ckpt, dtype=torch.float32)
    tok = Tokenizer.load(ckpt)
    prompt = book_prompt()
    new = generate(tok.encode(prompt), sd, cfg, max_new_tokens, stop_ids=tok.stop_ids)
    return prompt + tok.decode([t for t in new if t not in tok.stop_ids])


def nbval_suite_seconds() -> float:
    """Wall time of `pytest --nbval notebooks/` on the embedded checkpoint."""
    env = os.environ | {"LLAMA_CHECKPOINT": str(TINY_DIR), "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--nbval",
            "--nbval-current-env",
            "--nbval-sanitize-with",
            "tests/nbval_sanitize.cfg",
            "notebooks",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError("the nbval suite failed:\n" + result.stdout[-2000:])
    return seconds


def run_book(in_place: bool = False, chapters: list[str] | None = None) -> int:
    """Execute the chapters (all, or those numbered in ``chapters``) in book order."""
    import nbformat
    from nbconvert import HTMLExporter

    paths = [p for p in notebooks() if not chapters or p.name[:2] in chapters]
    missing = sorted(set(chapters or []) - {p.name[:2] for p in paths})
    if missing:
        print(f"no chapter numbered {missing}", file=sys.stderr)
        return 2
    ckpt = resolve_checkpoint_dir()
    print(f"checkpoint: {display_path(ckpt)}; {len(paths)} notebook(s)")
    out_nb, out_html = BUILD_DIR / "notebooks", BUILD_DIR / "html"
    if not in_place:
        out_nb.mkdir(parents=True, exist_ok=True)
        out_html.mkdir(parents=True, exist_ok=True)
        copy_mathjax(out_html)
    total = 0.0
    for path in paths:
        start = time.perf_counter()
        try:
            nb = execute(path)
        except KeyboardInterrupt:
            print(f"INTERRUPTED in {path.name} (Ctrl-C): the notebooks after it did not run", file=sys.stderr)
            return 130
        except Exception as err:  # noqa: BLE001 - report which notebook failed, then stop
            if "KeyboardInterrupt" in str(err) or type(err).__name__ == "DeadKernelError":
                print(f"INTERRUPTED in {path.name}: the kernel was stopped", file=sys.stderr)
                return 130
            first = str(err).strip().splitlines()
            print(f"FAILED {path.name}: {first[-1] if first else type(err).__name__}", file=sys.stderr)
            return 1
        seconds = time.perf_counter() - start
        total += seconds
        if in_place:
            nbformat.write(nb, path)
        else:
            nbformat.write(nb, out_nb / path.name)
            # no script from the network: MathJax is local, require.js (for widgets) is not needed
            html, _ = HTMLExporter(mathjax_url=MATHJAX_URL, require_js_url="").from_notebook_node(nb)
            (out_html / path.with_suffix(".html").name).write_text(html)
        print(f"  {path.name:<32} {seconds:6.1f} s")
    print(
        f"all notebooks: {total:.1f} s"
        + ("" if in_place else f"; executed copies and HTML in {display_path(BUILD_DIR)}/")
    )
    print(f"greedy continuation: {continuation()!r}")
    return 0


def smoke(ckpt_dir: str, chapters: list[str]) -> int:
    """Execute some chapters headless on another checkpoint, outputs not compared: exit 1
    naming the first chapter that raises. Their artifacts go to a temporary directory."""
    import tempfile

    os.environ["LLAMA_CHECKPOINT"] = str(Path(ckpt_dir).resolve())
    paths = [p for p in notebooks() if p.name[:2] in chapters]
    missing = sorted(set(chapters) - {p.name[:2] for p in paths})
    if missing:
        print(f"no chapter numbered {missing}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as artifacts:
        os.environ["BOOK_ARTIFACTS"] = artifacts
        for path in paths:
            start = time.perf_counter()
            try:
                execute(path)
            except Exception as err:  # noqa: BLE001 - report which notebook failed, then stop
                lines = [line for line in str(err).splitlines() if "Error" in line]
                print(f"FAILED {path.name} on {display_path(ckpt_dir)}: {lines[-1] if lines else err}", file=sys.stderr)
                return 1
            print(f"  {path.name:<32} {time.perf_counter() - start:6.1f} s on {display_path(ckpt_dir)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["run", "notebooks", "smoke"])
    parser.add_argument("--checkpoint", help="smoke: the checkpoint directory to run the chapters on")
    parser.add_argument("chapters", nargs="*", help="chapter numbers, e.g. 01 04 07 (smoke: needed; else: all)")
    args = parser.parse_intermixed_args(argv)  # the chapter numbers may follow --checkpoint DIR
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if args.mode == "smoke":
        if not args.checkpoint or not args.chapters:
            parser.error("smoke needs --checkpoint DIR and chapter numbers")
        return smoke(args.checkpoint, args.chapters)
    return run_book(in_place=args.mode == "notebooks", chapters=args.chapters)


if __name__ == "__main__":
    raise SystemExit(main())
