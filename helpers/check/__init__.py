"""Self-checks for the exercises: call one with your own function.

    from helpers import check
    check.rms_norm(my_rms_norm)

Each check runs your function on several cases and compares with an independent
answer (the book's function, a formula, or a property the answer must have):

- right on every case: one line starting with ✓, with the largest difference seen;
- not written yet (your function still raises NotImplementedError): one line saying so;
- wrong: one line starting with ✗ that names the case that failed and what differs (an
  exception your function raised: its type and message, and the case it was running).

A check never raises, so every check of a cell runs and reports. (Each check's unwrapped
version, ``check.rms_norm.__wrapped__``, raises an AssertionError instead: the tests use it.)

The solutions a teacher can hand out later live in ``notebooks/solutions/``;
``make solutions`` runs each of them through these same checks.

One module per chapter (``ch10_quantization`` for chapter 10, beside
``notebooks/solutions/10_quantization.py``), named in the chapter's row of the table of
chapters (``notebooks/book.json``); this package exports every check by name.
"""

import importlib as _importlib

from ..chapters import chapters as _chapters


def _checks_of(module_name: str) -> dict:
    """The exercise checks a chapter's module defines (the functions ``@exercise`` wrapped)."""
    module = _importlib.import_module(f"{__name__}.{module_name}")
    return {n: f for n, f in vars(module).items() if hasattr(f, "__wrapped__") and f.__module__ == module.__name__}


# Every chapter's checks, found through the table of chapters (notebooks/book.json).
_ALL = {name: f for c in _chapters() for name, f in _checks_of(c.checks).items()}
globals().update(_ALL)
__all__ = list(_ALL)
del _chapters  # a cached function: only the checks here carry __wrapped__
