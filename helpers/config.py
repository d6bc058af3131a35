"""The model's hyper-parameters, read from Meta's ``params.json``.

``params.json`` holds only what Meta's reference needs to build the model; the
head size, the FFN hidden size and the RoPE frequency-scaling constants are
derived here, exactly as ``llama_models.llama3.model`` derives them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .files import FileTooLarge, display_path, read_bounded

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


# The keys of Meta's params.json, in the order Meta writes them; the one list of them.
PARAMS_KEYS = tuple(LLAMA_3_2_1B_PARAMS)
# Sizes beyond any Llama (the largest, 405B, has 126 layers and 4e11 parameters): a config
# asking for more is a typo, refused before anything is built from it.
MAX_LAYERS = 1024
MAX_PARAMETERS = 10**12
MAX_PARAMS_BYTES = 1 << 20  # a params.json is a few hundred bytes; a file of a megabyte is something else

_INTS = (
    "dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "vocab_size",
    "multiple_of",
    "max_seq_len",
    "rope_original_context",
)
_POSITIVE_FLOATS = ("norm_eps", "rope_theta", "rope_scale_factor", "rope_low_freq_factor", "rope_high_freq_factor")


@dataclass(frozen=True)
class ModelConfig:
    """Llama 3 hyper-parameters (the write-up's notation in brackets)."""

    dim: int  # model width [d]
    n_layers: int  # transformer blocks [L]
    n_heads: int  # query heads [H]
    n_kv_heads: int  # key/value heads [G] (GQA: n_heads is a multiple of it)
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
        for name in _INTS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, found {value!r}")
        for name in _POSITIVE_FLOATS:
            _check_positive_number(name, getattr(self, name))
        if self.ffn_dim_multiplier is not None:
            _check_positive_number("ffn_dim_multiplier", self.ffn_dim_multiplier)
        if not isinstance(self.use_scaled_rope, bool):
            raise ConfigError(f"use_scaled_rope must be true or false (a JSON boolean), found {self.use_scaled_rope!r}")
        if self.rope_high_freq_factor <= self.rope_low_freq_factor:
            raise ConfigError(
                f"rope_high_freq_factor ({self.rope_high_freq_factor}) must be larger than "
                f"rope_low_freq_factor ({self.rope_low_freq_factor})"
            )
        if self.n_layers > MAX_LAYERS:
            raise ConfigError(f"n_layers = {self.n_layers} is more than {MAX_LAYERS}: is params.json right?")
        if self.dim % self.n_heads:
            raise ConfigError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim ({self.head_dim}) must be even for RoPE")
        if self.ffn_hidden_dim < 1:
            raise ConfigError(
                f"ffn_dim_multiplier = {self.ffn_dim_multiplier} makes the feed-forward's hidden size "
                f"{self.ffn_hidden_dim}: it must be at least 1"
            )
        if self.n_parameters > MAX_PARAMETERS:
            raise ConfigError(
                f"params.json describes {self.n_parameters:.3g} parameters, more than {MAX_PARAMETERS:.0e}: "
                "is params.json right?"
            )

    @property
    def head_dim(self) -> int:
        """Size of one attention head: d / H (64 for Llama 3.2-1B)."""
        return self.dim // self.n_heads

    @property
    def n_rep(self) -> int:
        """How many query heads share one key/value head, H / G (4 for Llama 3.2-1B)."""
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

    @property
    def n_parameters(self) -> int:
        """Parameters of the model, the tied output matrix counted once (1,235,814,400 for 3.2-1B).

        Computed from the sizes alone, so that an absurd config is refused before
        anything is allocated or listed; ``checkpoint.parameter_count`` counts the
        same from every tensor's shape.
        """
        d, hd, f = self.dim, self.head_dim, self.ffn_hidden_dim
        attention = d * (self.n_heads + 2 * self.n_kv_heads) * hd + self.n_heads * hd * d
        block = attention + 3 * d * f + 2 * d
        return self.vocab_size * d + self.n_layers * block + d

    def to_params(self) -> dict:
        """The dict that params.json holds: Meta's keys, and max_seq_len for a context shorter than Llama 3's."""
        params = {k: v for k, v in asdict(self).items() if k in PARAMS_KEYS}
        if self.max_seq_len != ModelConfig.max_seq_len:  # a model with a shorter context than Llama 3's
            params["max_seq_len"] = self.max_seq_len
        return params

    @classmethod
    def from_params(cls, params: dict, rope_scale_factor: float | None = None) -> ModelConfig:
        """Build from a params.json dict; unknown keys are kept in ``extra``."""
        missing = [k for k in ("dim", "n_layers", "n_heads", "vocab_size") if k not in params]
        if missing:
            raise ConfigError(f"params.json lacks required key(s) {missing}")
        args = {k: v for k, v in params.items() if k in PARAMS_KEYS}
        if args.get("n_kv_heads") is None:  # absent or null: one key/value head per query head (MHA)
            args["n_kv_heads"] = params["n_heads"]
        if rope_scale_factor is not None:
            args["rope_scale_factor"] = rope_scale_factor
        known = (*PARAMS_KEYS, "max_seq_len")  # Meta's ModelArgs reads max_seq_len too
        if "max_seq_len" in params:
            args["max_seq_len"] = params["max_seq_len"]
        return cls(**args, extra={k: v for k, v in params.items() if k not in known})

    @classmethod
    def from_json(cls, path: str | Path, rope_scale_factor: float | None = None) -> ModelConfig:
        """Read ``params.json`` (a file, or the checkpoint directory holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / "params.json"
        if not path.is_file():
            raise ConfigError(
                f"{display_path(path)} not found: a Meta-format checkpoint directory "
                "holds params.json, consolidated.00.pth and (optionally) tokenizer.model"
            )
        try:
            data = read_bounded(path, MAX_PARAMS_BYTES, display_path(path), "a params.json is a few hundred bytes")
        except FileTooLarge as err:
            raise ConfigError(str(err)) from err
        try:
            params = json.loads(data.decode("utf-8"))
        except RecursionError as err:
            raise ConfigError(f"{display_path(path)} is nested too deeply to be a params.json") from err
        except (ValueError, UnicodeDecodeError) as err:  # bad JSON, or a number of thousands of digits
            raise ConfigError(f"{display_path(path)} is not a valid params.json: {err}") from err
        if not isinstance(params, dict):
            raise ConfigError(f"{display_path(path)} must hold a JSON object")
        try:
            return cls.from_params(params, rope_scale_factor)
        except ConfigError as err:
            raise ConfigError(f"{display_path(path)}: {err}") from err


def _check_positive_number(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, found {value!r}")


def llama_3_2_1b_config(rope_scale_factor: float | None = None) -> ModelConfig:
    """The real Llama-3.2-1B configuration (no weights needed)."""
    return ModelConfig.from_params(LLAMA_3_2_1B_PARAMS, rope_scale_factor)
