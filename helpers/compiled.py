"""Optional speed: chapter 09's decode step through ``torch.compile``.

Nothing here is new maths. ``compiled_step`` hands ``model.forward`` -- embed, the L
``transformer_block``s, the final norm and the LM head of the last row, the functions
the chapters define -- to ``torch.compile``, which traces them into one graph and
generates fused kernels for it. ``generate_compiled`` is chapter 09's ``generate`` with it
as the step for every token after the prompt; tests/test_generation.py checks that it
produces the same tokens and logits as the eager step.

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
from collections.abc import Callable, Iterator, Sequence

import torch

from .config import ModelConfig
from .generation import generate
from .kernels import for_cpu_kernels
from .kv_cache import StaticKVCache
from .model import embed, forward, lm_head, run_blocks
from .sampling import GREEDY, Sampling

_compiled: Callable | None = None

# Inductor decomposes an (M, K) x (K, N) product on the CPU when M <= 1 and K, N <= this
# limit (2048 by default, read once when its module is imported). Decode steps have
# M = 1; the limit is raised so that the FFN and the LM head (K or N up to 128,256) qualify.
_MAX_DECOMPOSED_DIM = 1 << 20


@contextlib.contextmanager
def decompose_one_row_products() -> Iterator[None]:
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
            yield from value.tensors()


def generate_compiled(
    prompt_ids: Sequence[int],
    sd: dict,
    cfg: ModelConfig,
    max_new_tokens: int,
    sampling: Sampling = GREEDY,
    stop_ids: Sequence[int] = (),
) -> list[int]:
    """``generation.generate`` (same arguments, same tokens) with every one-token step compiled.

    int8 and int4 weights are put in the CPU kernels' layout once, here, and the prompt runs
    on that layout too (dequantizing every matrix for the prefill would cost seconds at 1B).
    """
    weights = for_cpu_kernels(sd)
    compiled = compiled_step(weights)

    def step(tokens: torch.Tensor, *args, **kwargs) -> torch.Tensor:  # the prompt eager, each new token compiled
        return (compiled if tokens.shape[-1] == 1 else forward)(tokens, *args, **kwargs)

    return generate(prompt_ids, weights, cfg, max_new_tokens, sampling, stop_ids, step=step)


def compiled_step(sd: dict[str, torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``model.forward`` compiled for one-token steps with these weights; same arguments as it.

    On a CPU the weights' shapes are marked static (fixed in the generated code); positions
    and the lengths of the cache and the RoPE table stay symbolic, so that one compilation
    serves every step and every generation length. Quantized weights should already be in the
    kernels' layout (``for_cpu_kernels``, as ``generate_compiled`` does): int8 and int4 then run
    on PyTorch's weight-only kernels. On a GPU the step is ``static_step`` under CUDA graphs.
    """
    if sd["tok_embeddings.weight"].device.type == "cuda":  # a tensor in every state dict, quantized or not
        # autotuned one-row products: faster than cuBLAS's at batch size one in make bench's runs
        # on an H100; the first compile takes about a minute longer
        return cuda_graph_step(mode="max-autotune-no-cudagraphs")
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(forward, dynamic=True)
    for t in _tensors(sd):
        torch._dynamo.mark_static(t)

    def step(tokens: torch.Tensor, sd_: dict, *args, **kwargs) -> torch.Tensor:
        if tokens.shape[-1] != 1:
            raise ValueError(f"the compiled step takes one new token at a time (got {tokens.shape[-1]})")
        if sd_ is not sd:
            raise ValueError("this compiled step was built for other weights: call compiled_step(sd) for these")
        try:
            with decompose_one_row_products(), warnings.catch_warnings():
                # RoPE's complex product runs as ATen kernels inside the graph; Inductor says so once
                warnings.filterwarnings("ignore", "Torchinductor does not support code generation for complex")
                # a tensor of its own: a slice of a longer one (storage offset > 0) made Inductor's
                # generated embedding read the wrong element and abort the process
                return _compiled(tokens.clone(), sd, *args, **kwargs)
        except torch._dynamo.exc.BackendCompilerFailed as err:
            raise RuntimeError(
                f"torch.compile could not build the decode step ({type(err.inner_exception).__name__}); "
                "on a CPU it needs a working C++ compiler (g++): install one, or use generate "
                "instead of generate_compiled (the command line without --compile)"
            ) from err

    return step


def static_step(
    tokens: torch.Tensor,
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    freqs_cis: torch.Tensor,
    cache: StaticKVCache,
    start_pos: torch.Tensor,
) -> torch.Tensor:
    """One decode step whose shapes never change: logits (..., 1, V) of the newest token.

    ``start_pos`` is a tensor, attention runs over the whole pre-allocated cache with a
    mask (StaticKVCache), so every step launches the same kernels on the same buffers —
    what a CUDA graph needs to replay them. The same loop over the blocks as ``forward`` (``run_blocks``).
    """
    positions = start_pos + torch.arange(tokens.shape[-1], device=tokens.device)
    h = run_blocks(embed(tokens, sd), sd, cfg, freqs_cis[positions], cache, start_pos)
    return lm_head(h[..., -1:, :], sd, cfg)


def cuda_graph_step(graphs: bool = True, mode: str | None = None) -> Callable[..., torch.Tensor]:
    """``static_step``, compiled, captured once as a CUDA graph and replayed at every step; with
    generate's step arguments.

    Inductor fuses the step's small kernels; the graph records them all, so a step costs one
    launch instead of hundreds. The graph reads the weights, the RoPE table and the cache where
    they are and writes the new keys and values in place; each call copies the token and the
    position into the graph's input buffers and replays it. (``graphs=False``: the compiled
    step alone, which runs on a CPU too; the tests use it there.)
    """
    compiled = torch.compile(static_step, fullgraph=True, dynamic=False, mode=mode)
    state: dict = {}

    def step(tokens, sd, cfg, freqs_cis, cache, start_pos: int, last_only: bool = True) -> torch.Tensor:
        if tokens.shape[-1] != 1 or not last_only:
            raise ValueError("the static step takes one new token at a time and returns its logits only")
        if state.get("cache") is not cache:
            state.update(cache=cache, view=StaticKVCache(cache), tokens=tokens.clone())
            state["position"] = torch.full((), start_pos, dtype=torch.long, device=tokens.device)
            if graphs:
                args = (state["tokens"], sd, cfg, freqs_cis, state["view"], state["position"])
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(
                    side
                ):  # compile and warm up: writes this step's keys and values, as the step does
                    for _ in range(2):
                        compiled(*args)
                torch.cuda.current_stream().wait_stream(side)
                state["graph"] = torch.cuda.CUDAGraph()
                with torch.cuda.graph(state["graph"]):
                    state["logits"] = compiled(*args)
        state["tokens"].copy_(tokens)
        state["position"].fill_(start_pos)
        if not graphs:
            return compiled(state["tokens"], sd, cfg, freqs_cis, state["view"], state["position"])
        state["graph"].replay()
        return state["logits"]

    return step
