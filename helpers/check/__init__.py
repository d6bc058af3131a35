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
``notebooks/solutions/10_quantization.py``); this package exports every check by name.
"""

from .ch01_tokenizer import bpe, bpe_merges, digit_chunks
from .ch02_embedding import embedding, nearest, table_bytes
from .ch03_rmsnorm import eps_after_scaling, norm_parameters, rms_norm
from .ch04_attention_gqa import attention_parameters, causal_attention, per_head_attention
from .ch05_rope import rope, rope_scaling, turn_angles
from .ch06_one_layer import block, block_parameters, feed_forward
from .ch07_full_stack import consecutive_cosines, lens_rank, skip_block
from .ch08_lm_head_sampling import probability_at_temperature, top_k, top_p
from .ch09_kv_cache import cache_bytes, prefill_in_chunks, tokens_that_fit
from .ch10_quantization import block_errors, int8_rows, nf4_block
from .ch11_mixture_of_experts import experts_touched, load_balance, moe_route
from .ch12_training import adamw_step, cross_entropy, lr_schedule
from .ch13_transformers import hf_names, llama_config_fields, rotate_half_rows
from .ch14_real_model import chatml, params_json, q4_1_blocks, q8_0_blocks

__all__ = [
    "bpe",
    "bpe_merges",
    "digit_chunks",
    "embedding",
    "nearest",
    "table_bytes",
    "rms_norm",
    "eps_after_scaling",
    "norm_parameters",
    "causal_attention",
    "attention_parameters",
    "per_head_attention",
    "rope",
    "rope_scaling",
    "turn_angles",
    "feed_forward",
    "block",
    "block_parameters",
    "skip_block",
    "consecutive_cosines",
    "lens_rank",
    "top_k",
    "top_p",
    "probability_at_temperature",
    "prefill_in_chunks",
    "cache_bytes",
    "tokens_that_fit",
    "int8_rows",
    "nf4_block",
    "block_errors",
    "moe_route",
    "load_balance",
    "experts_touched",
    "cross_entropy",
    "adamw_step",
    "lr_schedule",
    "hf_names",
    "rotate_half_rows",
    "llama_config_fields",
    "q8_0_blocks",
    "q4_1_blocks",
    "chatml",
    "params_json",
]
