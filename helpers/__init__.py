"""Llama 3.2 from scratch: the library the notebooks share.

One module per concept, in the book's order: config, checkpoint, tokenizer, rmsnorm, numerics,
linear, attention, rope, feed_forward, model, sampling, generation, kv_cache, compiled
(optional speed), corpus, train, evaluate, hf (Hugging Face layout), gguf, chat, scoring and
tasks (measuring a model). Around them:
files (safe writes), artifacts and stages (tensors passed between chapters), plots,
check (exercise self-checks). ``helpers.tools`` holds the tooling (make run, make bench,
make weights, make tiny-model, the command line), which the chapters do not teach.

Importing the package itself is cheap: each name below is imported from its module the first
time it is asked for (PEP 562), so that ``python -m helpers`` starts before torch is loaded and
can answer a Ctrl-C during start-up with one line.
"""

from __future__ import annotations

import importlib
import sys
import types

_WHERE = {  # each name the package exports, and the module that defines it
    "CheckpointError": "checkpoint",
    "ConfigError": "config",
    "KVCache": "kv_cache",
    "ModelConfig": "config",
    "Tokenizer": "tokenizer",
    "TokenizerError": "tokenizer",
    "apply_rotary_emb": "rope",
    "apply_temperature": "sampling",
    "at_least_float32": "rmsnorm",
    "attention": "attention",
    "cache_bytes_per_token": "kv_cache",
    "causal_mask": "attention",
    "checkpoint_name": "checkpoint",
    "display_path": "files",
    "embed": "model",
    "expected_shapes": "checkpoint",
    "feed_forward": "feed_forward",
    "forward": "model",
    "generate": "generation",
    "generate_uncached": "generation",
    "greedy": "sampling",
    "forward_hidden": "model",
    "hidden_states": "model",
    "linear": "linear",
    "llama_3_2_1b_config": "config",
    "lm_head": "model",
    "load_checkpoint": "checkpoint",
    "parameter_count": "checkpoint",
    "precompute_freqs_cis": "rope",
    "probabilities": "sampling",
    "repeat_kv": "attention",
    "resolve_checkpoint_dir": "checkpoint",
    "rms_norm": "rmsnorm",
    "rope_frequencies": "rope",
    "sample_next_token": "sampling",
    "save_checkpoint": "checkpoint",
    "scale_frequencies": "rope",
    "scaled_dot_product": "attention",
    "top_k_filter": "sampling",
    "top_p_filter": "sampling",
    "transformer_block": "model",
}
__all__ = sorted(_WHERE)


class _Package(types.ModuleType):
    """The package, whose exported names resolve to their definitions on first use. A name that
    is also a module's (``attention``, ``linear``, ``feed_forward``) means the function, as it did
    when the package imported everything eagerly; the modules stay importable by their path."""

    def __getattribute__(self, name: str):
        module = _WHERE.get(name)
        if module is not None:
            return getattr(importlib.import_module(f"{__name__}.{module}"), name)
        return super().__getattribute__(name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(__all__))


sys.modules[__name__].__class__ = _Package
