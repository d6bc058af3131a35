"""``make solutions``: run every exercise solution in notebooks/solutions/ through its self-check."""

from __future__ import annotations

import importlib.util
import sys

from ..files import REPO_ROOT

SOLUTIONS_DIR = REPO_ROOT / "notebooks" / "solutions"


def main() -> int:
    failed = []
    paths = sorted(SOLUTIONS_DIR.glob("[0-9][0-9]_*.py"))
    if not paths:
        print("no solutions here (notebooks/solutions/ is left out of a student copy)", file=sys.stderr)
        return 2
    for path in paths:
        print(f"{path.stem}:")
        spec = importlib.util.spec_from_file_location(f"solutions_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for checker, solution in module.EXERCISES:
            print("  ", end="")
            try:
                checker.__wrapped__(solution)  # raises if wrong or not written
                checker(solution)
            except (AssertionError, NotImplementedError) as err:
                print(f"✗ {checker.__name__}: {type(err).__name__} {err}")
                failed.append(f"{path.stem}: {solution.__name__}")
    if failed:
        print(f"{len(failed)} solution(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("every solution passes its check")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
