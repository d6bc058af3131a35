"""Llama 3.2 from scratch: the library the notebooks share.

One module per concept, in the book's order: config, checkpoint, tokenizer, rmsnorm,
linear, attention, rope, feed_forward, model, sampling, generation, kv_cache, compiled
(optional speed), corpus, train, evaluate, hf (Hugging Face layout). Around them:
files (safe writes), artifacts and stages (tensors passed between chapters), plots,
check (exercise self-checks). ``helpers.tools`` holds the tooling (make run, make bench,
make weights, make tiny-model, the command line), which the chapters do not teach.
"""

from .attention import attention, causal_mask, repeat_kv, scaled_dot_product
from .checkpoint import (
    CheckpointError,
    checkpoint_name,
    expected_shapes,
    load_checkpoint,
    parameter_count,
    resolve_checkpoint_dir,
    save_checkpoint,
)
from .config import ConfigError, ModelConfig, llama_3_2_1b_config
from .feed_forward import feed_forward
from .files import display_path
from .generation import generate, generate_uncached
from .kv_cache import KVCache, cache_bytes_per_token
from .linear import linear
from .model import embed, forward, hidden_states, lm_head, transformer_block
from .rmsnorm import at_least_float32, rms_norm
from .rope import apply_rotary_emb, precompute_freqs_cis, rope_frequencies, scale_frequencies
from .sampling import apply_temperature, greedy, probabilities, sample_next_token, top_k_filter, top_p_filter
from .tokenizer import Tokenizer, TokenizerError

__all__ = [
    "CheckpointError",
    "ConfigError",
    "KVCache",
    "ModelConfig",
    "Tokenizer",
    "TokenizerError",
    "apply_rotary_emb",
    "apply_temperature",
    "at_least_float32",
    "attention",
    "cache_bytes_per_token",
    "causal_mask",
    "checkpoint_name",
    "display_path",
    "embed",
    "expected_shapes",
    "feed_forward",
    "forward",
    "generate",
    "generate_uncached",
    "greedy",
    "hidden_states",
    "linear",
    "llama_3_2_1b_config",
    "lm_head",
    "load_checkpoint",
    "parameter_count",
    "precompute_freqs_cis",
    "probabilities",
    "repeat_kv",
    "resolve_checkpoint_dir",
    "rms_norm",
    "rope_frequencies",
    "sample_next_token",
    "save_checkpoint",
    "scale_frequencies",
    "scaled_dot_product",
    "top_k_filter",
    "top_p_filter",
    "transformer_block",
]
