"""Chapter 02's exercise checks: the embedding."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .common import _gen, call, compare, equal, exercise


class _NoLookup(torch.Tensor):
    """A table that refuses to be indexed: an embedding computed from it must be a product."""

    LOOKUPS = {torch.Tensor.__getitem__, torch.index_select, torch.Tensor.index_select, F.embedding, torch.take}

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in cls.LOOKUPS:
            raise AssertionError(
                "the rows were looked up by index: build the one-hot matrix (F.one_hot) and multiply it by the table"
            )
        return super().__torch_function__(func, types, args, kwargs or {})


@exercise
def embedding(fn: Callable) -> tuple[float | None, int]:
    """fn(tokens, table) -> one_hot(tokens) @ table: (N,) -> (N, d), without indexing the table."""
    gen, worst = _gen(1), 0.0
    cases = [
        (5, 10, 4, torch.float32),
        (1, 3, 7, torch.float32),
        (12, 50, 16, torch.float32),
        (6, 20, 8, torch.bfloat16),
    ]
    for n, v, d, dtype in cases:
        table = torch.randn(v, d, generator=gen).to(dtype)
        tokens = torch.randint(0, v, (n,), generator=gen)
        case = f"{n} tokens, table ({v}, {d}) in {str(dtype).removeprefix('torch.')}"
        got = call(case, fn, tokens, table.as_subclass(_NoLookup))
        got = got.as_subclass(torch.Tensor) if isinstance(got, torch.Tensor) else got
        worst = max(worst, compare(case, got, table[tokens]))
        equal(f"{case}: dtype of the rows", got.dtype, dtype)
    return worst, len(cases)


@exercise
def nearest(fn: Callable) -> tuple[float | None, int]:
    """fn(table, token_id, k) -> the k token ids whose rows are most similar (cosine) to row token_id,
    most similar first, leaving out all-zero rows (never-trained tokens)."""
    gen = _gen(7)
    for case in range(3):
        table = torch.randn(40, 8, generator=gen)
        table[torch.randperm(40, generator=gen)[:15]] = 0.0
        query = int(torch.nonzero(table.abs().sum(-1) > 0)[case])
        unit = table / table.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        cos = (unit @ unit[query]).masked_fill(table.abs().sum(-1) == 0, -2.0)
        want = torch.topk(cos, 5).indices.tolist()
        name = f"case {case} (token {query}, 5 nearest)"
        equal(name, [int(i) for i in call(name, fn, table, query, 5)], want)
    # few rows point the query's way: all-zero rows (cosine 0 if kept) would outrank the negative ones
    table = torch.zeros(8, 4)
    table[0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    table[1] = torch.tensor([0.9, 0.1, 0.0, 0.0])
    table[2:5] = -torch.rand(3, 4, generator=gen) - 0.1  # negative cosines with row 0
    cos = F.cosine_similarity(table, table[0:1], dim=-1).masked_fill(table.abs().sum(-1) == 0, -2.0)
    want = torch.topk(cos, 4).indices.tolist()
    name = "case 3 (token 0, 4 nearest: zero rows must not appear)"
    equal(name, [int(i) for i in call(name, fn, table, 0, 4)], want)
    return None, 4


@exercise
def table_bytes(fn: Callable) -> tuple[float | None, int]:
    """fn(vocab_size, dim, bits) -> bytes of a (vocab_size, dim) table at ``bits`` bits per number."""
    cases = [(128256, 2048, 16), (128256, 2048, 4), (128256, 128, 32), (10, 3, 8)]
    for v, d, bits in cases:
        case = f"table ({v}, {d}) at {bits} bits"
        equal(case, call(case, fn, v, d, bits), v * d * bits // 8)
    return None, len(cases)
