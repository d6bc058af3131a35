"""The model's hyper-parameters, read from Meta's ``params.json``.

``params.json`` holds only what Meta's reference needs to build the model; the
head size, the FFN hidden size and the RoPE frequency-scaling constants are
derived here, exactly as ``llama_models.llama3.model`` derives them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Llama 3.2's RoPE scaling (Hugging Face config of Llama-3.2-1B, rope_type "llama3").
# Meta's llama-models 0.3.0 reference hard-codes factor 8, the Llama 3.1 value
# (meta-llama/llama-models issue #166); params.json only says use_scaled_rope.
LLAMA_3_2_ROPE_FACTOR = 32.0
LLAMA_3_1_ROPE_FACTOR = 8.0

# params.json of meta-llama/Llama-3.2-1B (original/), for shape checks without weights.
LLAMA_3_2_1B_PARAMS = {
    "dim": 2048,
    "n_layers": 16,
    "n_heads": 32,
    "n_kv_heads": 8,
    "vocab_size": 128256,
    "ffn_dim_multiplier": 1.5,
    "multiple_of": 256,
    "norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "use_scaled_rope": True,
}


class ConfigError(ValueError):
    """params.json is missing, unreadable or describes an impossible model."""


@dataclass(frozen=True)
class ModelConfig:
    """Llama 3 hyper-parameters (the write-up's notation in brackets)."""

    dim: int  # model width [d]
    n_layers: int  # transformer blocks [L]
    n_heads: int  # query heads
    n_kv_heads: int  # key/value heads (GQA: n_heads is a multiple of it)
    vocab_size: int  # [V]
    multiple_of: int = 256  # FFN hidden size is rounded up to a multiple of this
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5  # RMSNorm epsilon, inside the square root
    rope_theta: float = 500000.0  # RoPE base
    use_scaled_rope: bool = False  # Llama 3 frequency scaling on/off
    # Llama 3 RoPE scaling constants; only used when use_scaled_rope is true.
    rope_scale_factor: float = LLAMA_3_2_ROPE_FACTOR
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_context: int = 8192
    max_seq_len: int = 131072  # longest context the notebooks and CLI accept
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, found {value!r}")
        if self.dim % self.n_heads:
            raise ConfigError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim ({self.head_dim}) must be even for RoPE")
        if not self.norm_eps > 0:
            raise ConfigError(f"norm_eps must be positive, found {self.norm_eps!r}")
        if self.rope_scale_factor <= 0:
            raise ConfigError(f"rope_scale_factor must be positive, found {self.rope_scale_factor!r}")

    @property
    def head_dim(self) -> int:
        """Size of one attention head: d / n_heads (64 for Llama 3.2-1B)."""
        return self.dim // self.n_heads

    @property
    def n_rep(self) -> int:
        """How many query heads share one key/value head (4 for Llama 3.2-1B)."""
        return self.n_heads // self.n_kv_heads

    @property
    def ffn_hidden_dim(self) -> int:
        """SwiGLU hidden size by Meta's formula (8192 for Llama 3.2-1B).

        Start from 4d, keep 2/3 of it (SwiGLU has three matrices instead of two),
        scale by ffn_dim_multiplier, round up to a multiple of multiple_of.
        """
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    def to_params(self) -> dict:
        """The dict that params.json holds (Meta's keys only)."""
        keys = LLAMA_3_2_1B_PARAMS.keys()
        return {k: v for k, v in asdict(self).items() if k in keys}

    @classmethod
    def from_params(cls, params: dict, rope_scale_factor: float | None = None) -> ModelConfig:
        """Build from a params.json dict; unknown keys are kept in ``extra``."""
        known = {
            "dim",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "vocab_size",
            "multiple_of",
            "ffn_dim_multiplier",
            "norm_eps",
            "rope_theta",
            "use_scaled_rope",
        }
        missing = [k for k in ("dim", "n_layers", "n_heads", "vocab_size") if k not in params]
        if missing:
            raise ConfigError(f"params.json lacks required key(s) {missing}")
        args = {k: v for k, v in params.items() if k in known}
        args.setdefault("n_kv_heads", params["n_heads"])
        if args.get("n_kv_heads") is None:
            args["n_kv_heads"] = params["n_heads"]
        if rope_scale_factor is not None:
            args["rope_scale_factor"] = float(rope_scale_factor)
        try:
            return cls(**args, extra={k: v for k, v in params.items() if k not in known})
        except TypeError as err:  # e.g. a string where a number belongs
            raise ConfigError(f"params.json has a value of the wrong type: {err}") from err

    @classmethod
    def from_json(cls, path: str | Path, rope_scale_factor: float | None = None) -> ModelConfig:
        """Read ``params.json`` (a file, or the checkpoint directory holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / "params.json"
        if not path.is_file():
            raise ConfigError(
                f"{path.name} not found in {path.parent.name}/: a Meta-format checkpoint directory "
                "holds params.json, consolidated.00.pth and (optionally) tokenizer.model"
            )
        try:
            params = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path.name} is not valid JSON: {err}") from err
        if not isinstance(params, dict):
            raise ConfigError(f"{path.name} must hold a JSON object")
        return cls.from_params(params, rope_scale_factor)


def llama_3_2_1b_config(rope_scale_factor: float | None = None) -> ModelConfig:
    """The real Llama-3.2-1B configuration (no weights needed)."""
    return ModelConfig.from_params(LLAMA_3_2_1B_PARAMS, rope_scale_factor)
