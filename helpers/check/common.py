"""What every chapter's checks share: running a check, comparing, the tolerance."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from ..config import ModelConfig

TOL = 1e-5


def exercise(check: Callable) -> Callable:
    """Run a check and report it in one line, so that every check of a cell runs and reports.

    The wrapped check returns (largest difference or None, number of cases) or raises
    AssertionError naming the failing case; it stays reachable as ``.__wrapped__`` (the tests
    call it directly). The wrapper prints one line and never raises:

    - ``✓ name: right on all N cases``;
    - ``… name: not written yet`` while the function still raises NotImplementedError;
    - ``✗ name: <the failing case and what differs>``, also when the function raised an
      exception (its type and message, and the case it was running: see ``call``).

    Returns None, so that a notebook cell ending with a check shows only the printed line.
    """

    @functools.wraps(check)
    def run(*functions) -> None:
        name = check.__name__
        _LAST_CASE.clear()
        try:
            worst, cases = check(*functions)
        except NotImplementedError:
            print(f"… {name}: not written yet — replace `raise NotImplementedError` with your code, then run the cell")
            return
        except AssertionError as err:
            print(f"✗ {name}: {_one_line(err)}")
            return
        except Exception as err:  # noqa: BLE001 - a returned value the check could not use: say so, in one line
            case = f"{_LAST_CASE[-1]}: " if _LAST_CASE else ""
            print(f"✗ {name}: {case}{type(err).__name__}: {_one_line(err)} (what your function returned?)")
            return
        detail = f" (max |difference| {worst:.1e})" if worst is not None else ""
        print(f"✓ {name}: right on all {cases} cases{detail}")

    return run


_LAST_CASE: list[str] = []  # the case a check last handed to the reader's function


def _one_line(err: BaseException) -> str:
    return " / ".join(line.strip() for line in str(err).strip().splitlines() if line.strip()) or "(no message)"


def call(case: str, fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)``: the reader's function on one case. An exception inside it becomes
    an AssertionError that names the case, the exception's type and its message (one line, no
    traceback); NotImplementedError passes through (the function is not written yet)."""
    _LAST_CASE.append(case)
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except AssertionError as err:  # a check that runs inside the function (a table that refuses lookups)
        message = _one_line(err)
        raise AssertionError(message if message.startswith(case) else f"{case}: {message}") from err
    except Exception as err:  # noqa: BLE001 - any error of the reader's code, reported with its case
        raise AssertionError(f"{case}: your function raised {type(err).__name__}: {_one_line(err)}") from err


def _number(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x == math.inf else "-inf" if x == -math.inf else f"{x:.6g}")


def compare(case: str, got, want, tol: float = TOL) -> float:
    """Largest |got - want|, or an AssertionError naming the case when it exceeds ``tol``. A NaN or
    an infinity where the other has none is reported as such (not as a difference)."""
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{case}: expected a tensor, got {type(got).__name__}")
    if got.shape != want.shape:
        raise AssertionError(f"{case}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    g, w = got.float(), want.float()
    same = (torch.isnan(g) & torch.isnan(w)) | (torch.isinf(g) & torch.isinf(w) & (g.sign() == w.sign()))
    odd = ~(torch.isfinite(g) & torch.isfinite(w)) & ~same
    if odd.any():
        where = tuple(int(i) for i in torch.nonzero(odd)[0])
        raise AssertionError(
            f"{case}: {int(odd.sum())} value(s) not finite where the expected one is (or the reverse), first at "
            f"index {where}: got {_number(float(g[where]))}, expected {_number(float(w[where]))}"
        )
    diff = torch.where(torch.isfinite(g) & torch.isfinite(w), (g - w).abs(), torch.zeros_like(g))
    worst = float(diff.max()) if diff.numel() else 0.0
    if worst > tol:
        where = tuple(int(i) for i in torch.nonzero(diff == worst)[0])
        raise AssertionError(
            f"{case}: differs by up to {worst:.3g} (tolerance {tol}), first at index {where}: "
            f"got {float(got[where]):.6g}, expected {float(want[where]):.6g}"
        )
    return worst


def no_nan_inside(case: str, fn: Callable, *args):
    """fn(*args), failing when an operation inside it makes a NaN from inputs without one: a cast
    to an integer type afterwards would hide it (NaN -> int is undefined, 0 on some processors)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
            outputs = [o for o in torch.utils._pytree.tree_leaves(out) if isinstance(o, torch.Tensor)]
            made = any(o.is_floating_point() and torch.isnan(o).any() for o in outputs)
            if made and not any(i.is_floating_point() and torch.isnan(i).any() for i in inputs):
                raise AssertionError(
                    f"{case}: {func.__name__.split('.')[0]} made a NaN (0 / 0 for an all-zero row?): "
                    "guard the division, e.g. clamp the scale away from 0"
                )
            return out

    with Watch():
        return call(case, fn, *args)


def equal(case: str, got, want) -> None:
    if got != want:
        raise AssertionError(f"{case}: got {got!r}, expected {want!r}")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# two small models with different shapes (GQA 2:1 with scaled RoPE; MQA), for the checks of chapters 06-09
SMALL = [
    ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, multiple_of=16, use_scaled_rope=True),
    ModelConfig(dim=48, n_layers=3, n_heads=6, n_kv_heads=1, vocab_size=60, multiple_of=16),
]
