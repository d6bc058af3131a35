"""Optional speed: chapter 09's decode step through ``torch.compile``.

Nothing here is new maths. ``compiled_step`` hands ``model.forward`` -- embed, the L
``transformer_block``s, the final norm and the LM head of the last row, the functions
the chapters define -- to ``torch.compile``, which traces them into one graph and
generates fused kernels for it. ``generate(..., compile=True)`` uses it for every
one-token step after the prompt; tests/test_generation.py checks that it produces the
same tokens and logits as the eager step.

Why it is faster on a CPU: a decode step is a chain of matrix-vector products, and
ATen's kernels for a one-row product read the weights at well below the machine's
streaming bandwidth (``make bench`` measures both). We ask Inductor to rewrite each
one-row product as a multiply-and-sum reduction (its ``decompose_mm_pass``), which it
compiles into a loop that streams the weight matrix once, accumulating in float32.
On a GPU the products stay cuBLAS calls and the gain comes from fusing the small
element-wise operations between them.

Compiling takes tens of seconds the first time; Inductor caches the result on disk.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch

from .model import forward

_compiled: Callable | None = None

# Inductor decomposes an (M, K) x (K, N) product on the CPU when M <= 1 and K, N <= this
# limit (2048 by default, read once when its module is imported). Decode steps have
# M = 1; the limit is raised so that the FFN and the LM head (K or N up to 128,256) qualify.
_MAX_DECOMPOSED_DIM = 1 << 20


@contextlib.contextmanager
def _decompose_one_row_products() -> Iterator[None]:
    import torch._inductor.config as inductor_config
    from torch._inductor.fx_passes import decompose_mem_bound_mm as pass_module

    saved = pass_module.cpu_max_other_dimension_decomposition
    pass_module.cpu_max_other_dimension_decomposition = _MAX_DECOMPOSED_DIM
    try:
        with inductor_config.patch(post_grad_fusion_options={"decompose_mm_pass": {}}):
            yield
    finally:
        pass_module.cpu_max_other_dimension_decomposition = saved


def _tensors(sd: dict) -> Iterator[torch.Tensor]:
    """Every tensor of a state dict, also those inside quantized weights (chapter 10)."""
    for value in sd.values():
        if isinstance(value, torch.Tensor):
            yield value
        else:
            yield from (t for t in vars(value).values() if isinstance(t, torch.Tensor))


def compiled_step(sd: dict[str, torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``model.forward`` compiled for one-token steps with these weights; same arguments as it.

    The weights' shapes are marked static (fixed in the generated code); positions and
    the lengths of the cache and the RoPE table stay symbolic, so that one compilation
    serves every step and every generation length.
    """
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(forward, dynamic=True)
    for t in _tensors(sd):
        torch._dynamo.mark_static(t)

    def step(tokens: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if tokens.shape[-1] != 1:
            raise ValueError(f"the compiled step takes one new token at a time (got {tokens.shape[-1]})")
        try:
            with _decompose_one_row_products(), warnings.catch_warnings():
                # RoPE's complex product runs as ATen kernels inside the graph; Inductor says so once
                warnings.filterwarnings("ignore", "Torchinductor does not support code generation for complex")
                return _compiled(tokens, *args, **kwargs)
        except torch._dynamo.exc.BackendCompilerFailed as err:
            raise RuntimeError(
                f"torch.compile could not build the decode step ({type(err.inner_exception).__name__}); "
                "on a CPU it needs a working C++ compiler (g++): install one, or call generate "
                "without compile=True"
            ) from err

    return step
