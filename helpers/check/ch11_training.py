"""Chapter 11's exercise checks: training."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .common import _gen, call, compare, exercise


@exercise
def cross_entropy(fn: Callable) -> tuple[float | None, int]:
    """fn(logits (N, V), targets (N,)) -> the mean of -log softmax(logits)[target], a scalar."""
    gen = _gen(17)
    cases = {
        "4 rows, 10 classes": (torch.randn(4, 10, generator=gen), torch.tensor([0, 3, 9, 3])),
        "one row": (torch.randn(1, 5, generator=gen), torch.tensor([2])),
        "large logits (needs the max subtracted)": (torch.randn(3, 6, generator=gen) * 500, torch.tensor([1, 0, 5])),
        "a sure, right prediction": (torch.tensor([[30.0, 0.0, 0.0]]), torch.tensor([0])),
    }
    worst = 0.0
    for case, (logits, targets) in cases.items():
        got = torch.as_tensor(call(case, fn, logits.clone(), targets.clone())).float().reshape(())
        worst = max(worst, compare(case, got, F.cross_entropy(logits, targets), tol=1e-4))
    return worst, len(cases)


@exercise
def adamw_step(fn: Callable) -> tuple[float | None, int]:
    """fn(theta, grad, m, v, step, lr, betas, eps, weight_decay) -> (theta, m, v) after one AdamW
    update (step counts from 1), compared with torch.optim.AdamW over several steps."""
    gen = _gen(18)
    cases = {
        "no weight decay": dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
        "weight decay 0.1": dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1),
        "large eps": dict(lr=3e-3, betas=(0.8, 0.9), eps=1e-1, weight_decay=0.01),
    }
    worst = 0.0
    for case, hp in cases.items():
        start = torch.randn(3, 4, generator=gen, dtype=torch.float64)
        ref = start.clone().requires_grad_()
        opt = torch.optim.AdamW([ref], **hp)
        theta, m, v = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
        for step in range(1, 5):
            grad = torch.randn(3, 4, generator=gen, dtype=torch.float64)
            ref.grad = grad.clone()
            opt.step()
            out = call(f"{case}, step {step}", fn, theta, grad.clone(), m, v, step, **hp)
            theta, m, v = (torch.as_tensor(t) for t in out)
            worst = max(worst, compare(f"{case}, step {step}", theta, ref.detach(), tol=1e-9))
    return worst, len(cases)


@exercise
def lr_schedule(fn: Callable) -> tuple[float | None, int]:
    """fn(step, steps, peak, warmup) -> the learning rate: linear warm-up, then cosine to 10% of peak."""
    from ..train import learning_rate

    worst = 0.0
    cases = [(100, 1.0, 10), (1500, 3e-3, 75), (7, 0.5, 1)]
    for steps, peak, warmup in cases:
        for step in sorted({0, warmup - 1, warmup, steps // 2, steps - 1}):
            case = f"steps={steps}, warmup={warmup}, step {step}"
            got = torch.tensor(float(call(case, fn, step, steps, peak, warmup)), dtype=torch.float64)
            want = torch.tensor(learning_rate(step, steps, peak, warmup), dtype=torch.float64)
            worst = max(worst, compare(case, got, want, tol=1e-9 * peak))
    return worst, len(cases)
