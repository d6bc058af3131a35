"""Find, load, validate and save checkpoints in Meta's original format.

A checkpoint is a directory holding ``params.json``, ``consolidated.00.pth`` and,
optionally, ``tokenizer.model`` -- exactly what
``huggingface-cli download meta-llama/Llama-3.2-1B --include "original/*"`` fetches.
The weights file is a pickle, so it is opened with ``weights_only=True``: only
plain tensors are accepted, nothing in the file is executed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
from pathlib import Path

import torch

from .config import MAX_PARAMS_BYTES, ModelConfig
from .files import REPO_ROOT, atomic_write, atomic_write_text, display_path, read_bounded

MODELS_DIR = REPO_ROOT / "models"
REAL_1B_DIR = MODELS_DIR / "Llama-3.2-1B" / "original"
TINY_DIR = MODELS_DIR / "tiny-llama-3.2" / "original"
WEIGHTS_FILE = "consolidated.00.pth"
TOKENIZER_FILE = "tokenizer.model"
ENV_VAR = "LLAMA_CHECKPOINT"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete, or does not match params.json."""


def resolve_checkpoint_dir(explicit: str | Path | None = None) -> Path:
    """Which checkpoint directory to use.

    Order: ``explicit`` (e.g. a command-line flag), then ``$LLAMA_CHECKPOINT``, then
    ``models/Llama-3.2-1B/original/`` if ``make weights`` filled it, then the embedded
    ``models/tiny-llama-3.2/original/``.
    """
    for source, value in (("--checkpoint", explicit), (ENV_VAR, os.environ.get(ENV_VAR))):
        if value:
            path = Path(value).expanduser()
            try:
                found = (path / "params.json").is_file()
            except OSError:  # e.g. a symbolic-link loop
                found = False
            if not found:
                raise CheckpointError(
                    f"{source} points to {value}, which holds no params.json: "
                    "give a Meta-format directory such as models/Llama-3.2-1B/original"
                )
            return path
    if (REAL_1B_DIR / "params.json").is_file() and (REAL_1B_DIR / WEIGHTS_FILE).is_file():
        return REAL_1B_DIR
    if (TINY_DIR / "params.json").is_file():
        return TINY_DIR
    raise CheckpointError(
        "no checkpoint found: the embedded models/tiny-llama-3.2/original/ is missing "
        "(restore it with `git checkout models/` or rebuild it with `make tiny-model`)"
    )


def checkpoint_name(ckpt_dir: str | Path) -> str:
    """A short name for a checkpoint directory: 'tiny-llama-3.2' for .../tiny-llama-3.2/original."""
    path = Path(os.path.abspath(ckpt_dir))
    return path.parent.name if path.name == "original" else path.name


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Meta-format Llama 3 checkpoint and its shape.

    ``output.weight`` is listed too; a checkpoint may omit it when the LM head is
    tied to the embedding (Llama 3.2-1B ties them).
    """
    d, hd, f = cfg.dim, cfg.head_dim, cfg.ffn_hidden_dim
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (cfg.vocab_size, d)}
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        shapes[p + "attention.wq.weight"] = (cfg.n_heads * hd, d)
        shapes[p + "attention.wk.weight"] = (cfg.n_kv_heads * hd, d)
        shapes[p + "attention.wv.weight"] = (cfg.n_kv_heads * hd, d)
        shapes[p + "attention.wo.weight"] = (d, cfg.n_heads * hd)
        shapes[p + "feed_forward.w1.weight"] = (f, d)
        shapes[p + "feed_forward.w2.weight"] = (d, f)
        shapes[p + "feed_forward.w3.weight"] = (f, d)
        shapes[p + "attention_norm.weight"] = (d,)
        shapes[p + "ffn_norm.weight"] = (d,)
    shapes["norm.weight"] = (d,)
    shapes["output.weight"] = (cfg.vocab_size, d)
    return shapes


def parameter_count(cfg: ModelConfig, include_output: bool = False) -> int:
    """Number of parameters, counted from every tensor's shape; the tied output matrix only if asked.

    The same number as ``cfg.n_parameters`` (a closed formula): a test keeps the two equal.
    """
    total = 0
    for key, shape in expected_shapes(cfg).items():
        if key == "output.weight" and not include_output:
            continue
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


WEIGHT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # what every kernel the book uses accepts


def check_shapes(shapes: dict[str, tuple[int, ...]], cfg: ModelConfig, source: str = WEIGHTS_FILE) -> None:
    """Check a checkpoint's keys and their shapes (key -> shape) against the config, before any
    tensor is read: every key the config expects (``output.weight`` may be absent: tied), none other.

    Raises CheckpointError naming the file, the key, the expected and the found shape.
    """
    expected = expected_shapes(cfg)
    for key in shapes:
        if key not in expected:
            raise CheckpointError(
                f"{source}: unexpected key {key!r}; params.json describes {cfg.n_layers} layers "
                "(is params.json from the same model as the weights?)"
            )
    for key, shape in expected.items():
        if key not in shapes:
            if key == "output.weight":
                continue
            raise CheckpointError(
                f"{source}: missing key {key!r} (expected shape {shape}); the file is incomplete "
                "or belongs to a different model than params.json"
            )
        found = tuple(shapes[key])
        if found != shape:
            raise CheckpointError(
                f"{source}: {key} has shape {found}, expected {shape} from params.json "
                "(is params.json from the same model as the weights?)"
            )


def validate_state_dict(sd: dict, cfg: ModelConfig, source: str = WEIGHTS_FILE) -> dict[str, torch.Tensor]:
    """Check every key and shape against the config (``check_shapes``), and every value: a dense
    tensor of a dtype the kernels take, finite; return the state dict with output tied.

    Raises CheckpointError naming the file, the key, the expected and the found shape.
    """
    if not isinstance(sd, dict):
        raise CheckpointError(f"{source}: expected a dict of tensors, found {type(sd).__name__}")
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: {key} is a {type(value).__name__}, not a tensor")
        if value.layout != torch.strided:
            raise CheckpointError(f"{source}: {key} is a {value.layout} tensor; the book reads dense tensors only")
        if value.dtype not in WEIGHT_DTYPES:
            raise CheckpointError(
                f"{source}: {key} has dtype {value.dtype}; the book reads {', '.join(map(str, WEIGHT_DTYPES))}"
            )
    check_shapes({key: tuple(value.shape) for key, value in sd.items()}, cfg, source)
    for key, value in sd.items():  # after the shapes: a wrong-sized file is reported as such first
        # A NaN or inf makes the sum non-finite; summing streams the tensor ~20x faster than
        # isfinite(), which then runs only to confirm (a sum of huge finite values can overflow).
        if not bool(value.sum().isfinite()) and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                f"{source}: {key} holds {bad:,} NaN or infinite value(s); the weights are damaged: "
                "download or re-create the checkpoint"
            )
    out = dict(sd)
    out.setdefault("output.weight", out["tok_embeddings.weight"])
    return out


def load_state_dict(path: str | Path) -> dict:
    """``torch.load`` with ``weights_only=True`` (no code runs) and ``mmap=True`` (no copy into RAM)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{display_path(path)} not found: download Meta's weights with "
            "`make weights`, or point LLAMA_CHECKPOINT at a directory that has them"
        )
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"{display_path(path)} is empty (0 bytes): the download or copy was interrupted; fetch it again"
        )
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            # A legacy (non-zip) torch.save file cannot be memory-mapped; read it whole.
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{display_path(path)} holds something other than plain tensors, so it was not loaded "
            f"(weights_only=True refuses to run code from a pickle): {_first_line(err)}"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError, IndexError) as err:
        raise CheckpointError(
            f"{display_path(path)} could not be read ({_first_line(err)}); the file may be truncated: download it again"
        ) from err


def _first_line(err: Exception) -> str:
    """The first line of an exception's message, or its type when the message is empty."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def load_checkpoint(
    ckpt_dir: str | Path | None = None,
    dtype: torch.dtype | None = None,
    rope_scale_factor: float | None = None,
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read params.json and consolidated.00.pth from a Meta-format directory.

    Returns the config and the validated state dict (``output.weight`` present,
    tied to the embedding when the file omits it). ``dtype`` casts the weights
    (e.g. ``torch.float32`` for exact comparisons); by default they stay as stored.
    """
    ckpt_dir = resolve_checkpoint_dir(ckpt_dir)
    cfg = ModelConfig.from_json(ckpt_dir / "params.json", rope_scale_factor=rope_scale_factor)
    sd = validate_state_dict(load_state_dict(ckpt_dir / WEIGHTS_FILE), cfg, display_path(ckpt_dir / WEIGHTS_FILE))
    if dtype is not None:
        sd = cast_state_dict(sd, dtype)
    return cfg, sd


def map_tensors(sd: dict, fn) -> dict:
    """``fn`` applied to every tensor of a state dict, once per tensor: tied entries stay one tensor."""
    done: dict[int, object] = {}
    out = {}
    for key, value in sd.items():
        if id(value) not in done:
            done[id(value)] = fn(value)
        out[key] = done[id(value)]
    return out


def cast_state_dict(sd: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The same weights in another dtype; tied tensors stay tied (one copy)."""
    return map_tensors(sd, lambda t: t.to(dtype))


def save_checkpoint(
    ckpt_dir: str | Path, cfg: ModelConfig, sd: dict[str, torch.Tensor], dtype: torch.dtype | None = None
) -> Path:
    """Write params.json and consolidated.00.pth (Meta's format); each file lands atomically."""
    import json

    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    sd = validate_state_dict(sd, cfg, source="state dict to save")
    # Tied tensors (output.weight is tok_embeddings.weight) are stored once.
    tensors = map_tensors(sd, lambda t: t.detach().to(dtype or t.dtype).contiguous().clone())
    atomic_write(ckpt_dir / WEIGHTS_FILE, lambda f: torch.save(tensors, f), "checkpoint file")
    text = json.dumps(cfg.to_params(), indent=2) + "\n"
    atomic_write_text(ckpt_dir / "params.json", text, "checkpoint file")
    return ckpt_dir


def random_state_dict(cfg: ModelConfig, seed: int = 0, std: float = 0.02) -> dict[str, torch.Tensor]:
    """Random float32 weights of the right shapes (norm weights near 1), for tests and benchmarks."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in expected_shapes(cfg).items():
        if key == "output.weight":
            continue
        if len(shape) == 1:
            sd[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            sd[key] = std * torch.randn(shape, generator=gen)
    sd["output.weight"] = sd["tok_embeddings.weight"]
    return sd


def packaged_tokenizer_path() -> Path:
    """The Llama 3 ``tokenizer.model`` shipped inside Meta's ``llama-models`` package."""
    spec = importlib.util.find_spec("llama_models")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "no tokenizer.model in the checkpoint directory and the llama-models package is not "
            "installed: run `make test` or `pip install -r requirements.txt` to get it"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "llama3" / TOKENIZER_FILE


def tokenizer_path(ckpt_dir: str | Path | None = None) -> Path:
    """The checkpoint's own tokenizer.model if it has one, else the packaged Llama 3 file."""
    if ckpt_dir is not None and (Path(ckpt_dir) / TOKENIZER_FILE).is_file():
        return Path(ckpt_dir) / TOKENIZER_FILE
    return packaged_tokenizer_path()


def params_vocab_size(ckpt_dir: str | Path | None) -> int | None:
    """vocab_size from a checkpoint's params.json, or None (no directory, no file, unreadable:
    loading the checkpoint reports those)."""
    if ckpt_dir is None:
        return None
    try:
        text = read_bounded(Path(ckpt_dir) / "params.json", MAX_PARAMS_BYTES, "params.json", "read by the loader")
        value = json.loads(text).get("vocab_size")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
