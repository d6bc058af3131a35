"""What every chapter's checks share: running a check, comparing, the tolerance."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from ..config import ModelConfig

TOL = 1e-5


def exercise(check: Callable) -> Callable:
    """Run a check; turn "not written yet" into a note and success into a ✓ line.

    The wrapped check returns (largest difference or None, number of cases) or raises
    AssertionError; it stays reachable as ``.__wrapped__`` (the tests call it directly).
    Returns None, so that a notebook cell ending with a check shows only the printed line.
    """

    @functools.wraps(check)
    def run(*functions) -> None:
        name = check.__name__
        try:
            worst, cases = check(*functions)
        except NotImplementedError:
            print(f"… {name}: not written yet — replace `raise NotImplementedError` with your code, then run the cell")
            return
        detail = f" (max |difference| {worst:.1e})" if worst is not None else ""
        print(f"✓ {name}: right on all {cases} cases{detail}")

    return run


def compare(case: str, got, want, tol: float = TOL) -> float:
    """Largest |got - want|, or an AssertionError naming the case when it exceeds ``tol``."""
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{case}: expected a tensor, got {type(got).__name__}")
    if got.shape != want.shape:
        raise AssertionError(f"{case}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    both_inf = torch.isinf(got) & torch.isinf(want) & (got.sign() == want.sign())
    diff = torch.where(both_inf, torch.zeros_like(want, dtype=torch.float32), (got.float() - want.float()).abs())
    worst = float(diff.nan_to_num(float("inf")).max()) if diff.numel() else 0.0
    if worst > tol:
        where = tuple(int(i) for i in torch.nonzero(diff.nan_to_num(float("inf")) == worst)[0])
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
        return fn(*args)


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
