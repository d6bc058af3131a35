"""Meta's layout <-> Hugging Face ``transformers`` layout of the same weights.

Two differences. Names: ``layers.0.attention.wq.weight`` is
``model.layers.0.self_attn.q_proj.weight`` and so on (KEY_MAP). And RoPE pairs:
Meta rotates interleaved pairs (2i, 2i+1) of each head; Hugging Face rotates
(i, i + head_dim/2) ("rotate half"). Permuting the rows of wq and wk inside
each head turns one layout into the other, so both give the same attention.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import torch

from .checkpoint import expected_shapes, load_checkpoint, resolve_checkpoint_dir
from .config import ModelConfig
from .files import new_directory
from .quantize import bitsandbytes_module
from .tokenizer import Tokenizer

KEY_MAP = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}


def permute_for_rotate_half(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder the rows of wq or wk within each head: interleaved pairs -> rotate-half pairs.

    Row 2k of a head moves to k and row 2k+1 to k + head_dim/2. (n_heads*hd, d) -> same shape.
    """
    rows, d = w.shape
    hd = rows // n_heads
    return w.view(n_heads, hd // 2, 2, d).transpose(1, 2).reshape(rows, d)


def unpermute_from_rotate_half(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of permute_for_rotate_half."""
    rows, d = w.shape
    hd = rows // n_heads
    return w.view(n_heads, 2, hd // 2, d).transpose(1, 2).reshape(rows, d)


def transformers_module():
    """``import transformers``, quietly: it imports tqdm.auto, which warns on stderr in a
    notebook without ipywidgets ("IProgress not found") -- noise, silenced where it starts."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        import transformers
    return transformers


def hf_key(meta_key: str) -> str:
    """Hugging Face name of a Meta checkpoint key."""
    if meta_key in KEY_MAP:
        return KEY_MAP[meta_key]
    _, layer, rest = meta_key.split(".", 2)
    return f"model.layers.{layer}.{KEY_MAP[rest]}"


def to_hf_state_dict(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Convert a Meta-format state dict to ``LlamaForCausalLM``'s names and q/k row order."""
    out = {}
    for key, value in sd.items():
        if key.endswith("attention.wq.weight"):
            value = permute_for_rotate_half(value, cfg.n_heads)
        elif key.endswith("attention.wk.weight"):
            value = permute_for_rotate_half(value, cfg.n_kv_heads)
        out[hf_key(key)] = value
    return out


def from_hf_state_dict(hf_sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The inverse of ``to_hf_state_dict``: ``LlamaForCausalLM``'s names and q/k row order -> Meta's.

    A tied model's file holds the embedding once; ``output.weight`` is then the same tensor.
    """
    names = {hf_key(key): key for key in expected_shapes(cfg)}
    out = {}
    for key, value in hf_sd.items():
        if key not in names:
            raise ValueError(f"{key} is not a weight of a Llama model of this config")
        meta = names[key]
        if meta.endswith("attention.wq.weight"):
            value = unpermute_from_rotate_half(value, cfg.n_heads)
        elif meta.endswith("attention.wk.weight"):
            value = unpermute_from_rotate_half(value, cfg.n_kv_heads)
        out[meta] = value
    out.setdefault("output.weight", out["tok_embeddings.weight"])
    return out


def hf_config(cfg: ModelConfig, dtype: torch.dtype = torch.float32):
    """A ``transformers.LlamaConfig`` describing the same model (tied embeddings)."""
    LlamaConfig = transformers_module().LlamaConfig

    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.use_scaled_rope:
        rope = {
            "rope_type": "llama3",
            "rope_theta": cfg.rope_theta,
            "factor": cfg.rope_scale_factor,
            "low_freq_factor": cfg.rope_low_freq_factor,
            "high_freq_factor": cfg.rope_high_freq_factor,
            "original_max_position_embeddings": cfg.rope_original_context,
        }
    return LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        intermediate_size=cfg.ffn_hidden_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_parameters=rope,
        tie_word_embeddings=True,
        # Llama 3's <|begin_of_text|> and <|end_of_text|>, where the vocabulary has them.
        bos_token_id=128000 if cfg.vocab_size > 128001 else None,
        eos_token_id=128001 if cfg.vocab_size > 128001 else None,
        dtype=dtype,
    )


def hf_model(sd: dict[str, torch.Tensor], cfg: ModelConfig, dtype: torch.dtype = torch.float32):
    """``LlamaForCausalLM`` holding these weights, built offline (no hub), in eval mode."""
    LlamaForCausalLM = transformers_module().LlamaForCausalLM

    hf_cfg = hf_config(cfg, dtype)
    with torch.device("meta"):
        model = LlamaForCausalLM(hf_cfg)
    weights = {k: v.to(dtype) for k, v in to_hf_state_dict(sd, cfg).items()}
    model.load_state_dict(weights, assign=True, strict=True)
    model.tie_weights()
    model.model.rotary_emb = type(model.model.rotary_emb)(config=hf_cfg)  # buffers were on meta
    return model.eval()


def hf_model_4bit(sd: dict[str, torch.Tensor], cfg: ModelConfig, fused_bf16: bool = False):
    """``LlamaForCausalLM`` with bitsandbytes' ``Linear4bit`` (NF4, blocks of 64) in place of the
    seven projections of every block, as ``BitsAndBytesConfig(load_in_4bit=True)`` builds it.

    The float32 model is written to a temporary directory and read back through
    ``from_pretrained(quantization_config=...)``, the path the blog in the book's sources
    used on a GPU; bitsandbytes 0.50 runs it on a CPU too. Offline; returns it in eval mode.
    On CPUs with AVX-512 BF16, bitsandbytes computes ``Linear4bit`` in bfloat16 with a fused
    kernel; unless ``fused_bf16``, that path is switched off so that the products run in
    float32 and can be compared with the book's to float32 precision.
    """
    bitsandbytes_module()  # imported quietly before transformers imports it
    transformers = transformers_module()
    transformers.utils.logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        hf_model(sd, cfg).save_pretrained(tmp)
        config = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        )
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp, quantization_config=config)
    if not fused_bf16:
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    return model.eval()


# Meta's generation_config.json for the base Llama-3.2-1B: sampling at temperature 0.6, top-p 0.9.
GENERATION_DEFAULTS = {"do_sample": True, "temperature": 0.6, "top_p": 0.9}


def hf_tokenizer(tok: Tokenizer):
    """A ``transformers`` fast tokenizer that encodes exactly like the book's tokenizer.

    The tiktoken file's ranks become a byte-level BPE vocabulary and merge list
    (``TikTokenConverter``), split by the same regular expression; the special tokens join
    the vocabulary at their own ids (128000.. for Llama 3); a post-processor prepends the BOS
    token when the model adds one, as Llama 3's own tokenizer.json does. ``split_special_tokens``:
    a special token's *text* in the input is encoded as ordinary text, as Meta's ``encode``
    does, never as the special id.
    """
    tf = transformers_module()
    from tokenizers import AddedToken
    from tokenizers.models import BPE
    from tokenizers.processors import TemplateProcessing
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter = TikTokenConverter(vocab_file=str(tok.path), pattern=tok.description.pattern)
    backend = converter.converted()
    vocab, merges = converter.extract_vocab_merges_from_model(str(tok.path))
    backend.model = BPE(vocab | tok.special_tokens, merges, fuse_unk=False, ignore_merges=True)
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in tok.special_tokens])
    bos = tok.description.bos
    if bos is not None:
        backend.post_processor = TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.bos_id)]
        )
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=tok.description.end_of_text, split_special_tokens=True
    )


def hub_config(cfg: ModelConfig, dtype: torch.dtype, bos_id: int | None, eos_id: int | None) -> dict:
    """config.json in the layout of ``meta-llama/Llama-3.2-1B`` on the Hugging Face Hub, key for key.

    That layout (written by transformers 4.45) keeps ``rope_theta`` at the top level and Llama 3's
    frequency scaling in ``rope_scaling`` with ``rope_type: llama3``; transformers 5 reads both
    into its ``rope_parameters``. transformers 4 and 5, llama.cpp's ``convert_hf_to_gguf.py`` and
    other readers of Hub checkpoints all understand it, where transformers 5's own
    ``save_pretrained`` writes only ``rope_parameters``, which the others do not read: they
    would run the model without the factor-32 scaling.
    """
    rope_scaling = None
    if cfg.use_scaled_rope:
        rope_scaling = {
            "factor": cfg.rope_scale_factor,
            "high_freq_factor": cfg.rope_high_freq_factor,
            "low_freq_factor": cfg.rope_low_freq_factor,
            "original_max_position_embeddings": cfg.rope_original_context,
            "rope_type": "llama3",
        }
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "hidden_size": cfg.dim,
        "initializer_range": 0.02,
        "intermediate_size": cfg.ffn_hidden_dim,
        "max_position_embeddings": cfg.max_seq_len,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": cfg.n_heads,
        "num_hidden_layers": cfg.n_layers,
        "num_key_value_heads": cfg.n_kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": cfg.norm_eps,
        "rope_scaling": rope_scaling,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": True,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "transformers_version": transformers_module().__version__,
        "use_cache": True,
        "vocab_size": cfg.vocab_size,
    }


def export_hf(ckpt_dir: str | Path | None, out: str | Path, force: bool = False) -> Path:
    """Write a Meta-format checkpoint as a directory ``AutoModelForCausalLM`` and ``AutoTokenizer``
    load: config.json, generation_config.json, model.safetensors (the stored dtype),
    tokenizer.json and tokenizer_config.json. config.json has the Hub's layout (``hub_config``)
    and tokenizer_config.json names ``PreTrainedTokenizerFast``, as Meta's repository does:
    transformers 5 alone knows the class name its ``save_pretrained`` writes there.

    ``files.new_directory`` does the file handling: it refuses a non-empty ``out`` (unless
    ``force``) and an ``out`` that is, holds or lies inside the checkpoint directory, before
    any work; the files are written to a temporary directory beside ``out`` and moved into
    place at the end, so a failure leaves ``out`` as it was.
    """
    ckpt_dir = resolve_checkpoint_dir(ckpt_dir)
    with new_directory(out, force, "--out", source=ckpt_dir) as tmp:
        cfg, sd = load_checkpoint(ckpt_dir)  # the stored dtype: bfloat16 for Meta's weights
        tok = Tokenizer.load(ckpt_dir)
        model = hf_model(sd, cfg, sd["tok_embeddings.weight"].dtype)
        model.generation_config = transformers_module().GenerationConfig(
            bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, **GENERATION_DEFAULTS
        )
        transformers_module().utils.logging.disable_progress_bar()
        model.save_pretrained(tmp)
        hf_tokenizer(tok).save_pretrained(tmp)
        dtype = sd["tok_embeddings.weight"].dtype
        (tmp / "config.json").write_text(json.dumps(hub_config(cfg, dtype, tok.bos_id, tok.eos_id), indent=2) + "\n")
        tokenizer_config = json.loads((tmp / "tokenizer_config.json").read_text())
        tokenizer_config |= {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": cfg.max_seq_len}
        (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")
    return Path(out)
