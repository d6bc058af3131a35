"""Chapter 13: the same model in transformers."""

import torch

from helpers import check

NAMES = {
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


def my_hf_key(meta_key: str) -> str:
    top = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    if meta_key in top:
        return top[meta_key]
    if meta_key == "output.weight":
        return "lm_head.weight"
    _, layer, rest = meta_key.split(".", 2)
    return f"model.layers.{layer}.{NAMES[rest.removesuffix('.weight')]}.weight"


def my_permute_for_rotate_half(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    rows, d = w.shape
    hd = rows // n_heads
    order = []
    for h in range(n_heads):  # first the even rows of the head (pair starts), then the odd ones
        order += [h * hd + 2 * i for i in range(hd // 2)] + [h * hd + 2 * i + 1 for i in range(hd // 2)]
    return w[order]


def my_llama_config_fields(params: dict) -> dict:
    dim = params["dim"]
    hidden = int(2 * 4 * dim / 3)
    if params.get("ffn_dim_multiplier") is not None:
        hidden = int(params["ffn_dim_multiplier"] * hidden)
    m = params["multiple_of"]
    return {
        "hidden_size": dim,
        "intermediate_size": m * ((hidden + m - 1) // m),
        "num_hidden_layers": params["n_layers"],
        "num_attention_heads": params["n_heads"],
        "num_key_value_heads": params.get("n_kv_heads", params["n_heads"]),  # absent: no GQA
        "head_dim": dim // params["n_heads"],
        "rms_norm_eps": params["norm_eps"],
        "vocab_size": params["vocab_size"],
        "rope_theta": params["rope_theta"],
    }


EXERCISES = [
    (check.hf_names, my_hf_key),
    (check.rotate_half_rows, my_permute_for_rotate_half),
    (check.llama_config_fields, my_llama_config_fields),
]
