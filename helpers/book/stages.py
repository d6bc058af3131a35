"""What each chapter hands to the next, and the book's one prompt.

Chapters pass tensors through ``artifacts/`` (chapter 03 saves the normalized input,
chapter 04 loads it). ``load_stage`` loads such a tensor; when it is missing -- a chapter
opened on its own -- or was made from another checkpoint or prompt, it recomputes it
with the same ``helpers`` functions the earlier chapters build, saves it, and says so in
one line. So any chapter runs with "Run All" on a fresh clone.

The prompt is one setting for the whole book: ``notebooks/book.json`` (``"prompt"``),
or the environment variable ``BOOK_PROMPT``, which wins. Checks that hold only for the
default prompt (its token ids, " Paris") say so and are skipped for another.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..artifacts import ArtifactError, artifact_path, load_artifact, save_artifact
from ..attention import attention
from ..checkpoint import load_checkpoint
from ..files import REPO_ROOT, display_path
from ..generation import generate_uncached
from ..linear import linear
from ..model import embed, forward, forward_hidden, transformer_block
from ..rmsnorm import at_least_float32, rms_norm
from ..rope import apply_rotary_emb, precompute_freqs_cis
from ..tokenizer import Tokenizer, llama3_description

DEFAULT_PROMPT = "The capital of France is"
SETTINGS_FILE = REPO_ROOT / "notebooks" / "book.json"
PROMPT_VARIABLE = "BOOK_PROMPT"
GENERATED_TOKENS = 40  # chapter 08's greedy continuation
# The chapters print and plot every token of the prompt (a heatmap of N x N scores, a lens of
# L + 1 rows of N): 200 characters keep N at most a few hundred tokens and the memory bounded.
MAX_PROMPT_CHARACTERS = 200


def book_prompt(settings: str | Path = SETTINGS_FILE) -> str:
    """The prompt every chapter follows: $BOOK_PROMPT, else notebooks/book.json, else the default."""
    prompt = os.environ.get(PROMPT_VARIABLE)
    if prompt is None:
        try:
            prompt = json.loads(Path(settings).read_text()).get("prompt", DEFAULT_PROMPT)
        except FileNotFoundError:
            prompt = DEFAULT_PROMPT
        except (ValueError, AttributeError) as err:
            raise ValueError(f'{display_path(settings)} must be a JSON object like {{"prompt": "..."}}') from err
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(
            f"the book's prompt must be non-empty text (check {display_path(settings)} or ${PROMPT_VARIABLE})"
        )
    if len(prompt) > MAX_PROMPT_CHARACTERS:
        raise ValueError(
            f"the book's prompt has {len(prompt):,} characters, more than the {MAX_PROMPT_CHARACTERS} the chapters "
            f"print and plot token by token: shorten it (check {display_path(settings)} or ${PROMPT_VARIABLE})"
        )
    return prompt


def default_prompt_only(prompt: str, claim: str) -> bool:
    """True on the default prompt; otherwise print that ``claim`` is not checked, and return False.

    Use: ``if default_prompt_only(PROMPT, "the ids are the write-up's"): assert ...``
    """
    if prompt == DEFAULT_PROMPT:
        return True
    print(f"(not checked: {claim} — true of the default prompt {DEFAULT_PROMPT!r}, not of {prompt!r})")
    return False


def llama3_tokenizer_only(tok: Tokenizer, claim: str) -> bool:
    """True when ``tok`` is Llama 3's tokenizer; otherwise print that ``claim`` is not checked
    (e.g. on SmolLM2, chapter 14), and return False."""
    if vars(tok.description) == vars(llama3_description(tok.n_base)):  # by value: chapter 01 redefines the class
        return True
    print(f"(not checked: {claim} — true of Llama 3's tokenizer, not of this checkpoint's)")
    return False


@functools.lru_cache(maxsize=2)
def _model(ckpt_dir: str, dtype: torch.dtype):
    cfg, sd = load_checkpoint(ckpt_dir, dtype=dtype)
    return cfg, sd, Tokenizer.load(ckpt_dir)


def _tokens(ckpt_dir, prompt, dtype, root):
    _, _, tok = _model(str(ckpt_dir), dtype)
    return {"tokens": torch.tensor(tok.encode(prompt))}


def _embeddings(ckpt_dir, prompt, dtype, root):
    _, sd, _ = _model(str(ckpt_dir), dtype)
    return {"x": embed(load_stage("01_tokens", ckpt_dir, prompt, dtype, root)["tokens"], sd)}


def _rmsnorm(ckpt_dir, prompt, dtype, root):
    cfg, sd, _ = _model(str(ckpt_dir), dtype)
    x = load_stage("02_embeddings", ckpt_dir, prompt, dtype, root)["x"]
    return {"x_norm": rms_norm(x, sd["layers.0.attention_norm.weight"], cfg.norm_eps)}


def _qkv(ckpt_dir, prompt, dtype, root):
    cfg, sd, _ = _model(str(ckpt_dir), dtype)
    x_norm = load_stage("03_rmsnorm", ckpt_dir, prompt, dtype, root)["x_norm"]
    n, p = x_norm.shape[0], "layers.0.attention."
    return {
        "xq": linear(x_norm, sd[p + "wq.weight"]).view(n, cfg.n_heads, cfg.head_dim),
        "xk": linear(x_norm, sd[p + "wk.weight"]).view(n, cfg.n_kv_heads, cfg.head_dim),
        "xv": linear(x_norm, sd[p + "wv.weight"]).view(n, cfg.n_kv_heads, cfg.head_dim),
    }


def _rope(ckpt_dir, prompt, dtype, root):
    cfg, sd, _ = _model(str(ckpt_dir), dtype)
    qkv = load_stage("04_qkv", ckpt_dir, prompt, dtype, root)
    x_norm = load_stage("03_rmsnorm", ckpt_dir, prompt, dtype, root)["x_norm"]
    freqs_cis = precompute_freqs_cis(cfg, x_norm.shape[0])
    xq, xk = apply_rotary_emb(qkv["xq"], qkv["xk"], freqs_cis)
    return {"xq": xq, "xk": xk, "attn_out": attention(x_norm, sd, 0, cfg, freqs_cis)}


def _one_layer(ckpt_dir, prompt, dtype, root):
    cfg, sd, _ = _model(str(ckpt_dir), dtype)
    x = load_stage("02_embeddings", ckpt_dir, prompt, dtype, root)["x"]
    return {"x1": transformer_block(x, sd, 0, cfg, precompute_freqs_cis(cfg, x.shape[0]))}


def _full_stack(ckpt_dir, prompt, dtype, root):
    cfg, sd, _ = _model(str(ckpt_dir), dtype)
    return {"hidden": forward_hidden(load_stage("01_tokens", ckpt_dir, prompt, dtype, root)["tokens"], sd, cfg)}


def _lm_head(ckpt_dir, prompt, dtype, root):
    cfg, sd, tok = _model(str(ckpt_dir), dtype)
    tokens = load_stage("01_tokens", ckpt_dir, prompt, dtype, root)["tokens"]
    generated = generate_uncached(tokens.tolist(), sd, cfg, GENERATED_TOKENS, stop_ids=tok.stop_ids)
    return {"logits": forward(tokens, sd, cfg), "generated": torch.tensor(generated)}


# stage -> how chapter NN computes it, with the helpers (the chapter checks its own cells against them)
RECIPES: dict[str, Callable[..., dict[str, torch.Tensor]]] = {
    "01_tokens": _tokens,
    "02_embeddings": _embeddings,
    "03_rmsnorm": _rmsnorm,
    "04_qkv": _qkv,
    "05_rope": _rope,
    "06_one_layer": _one_layer,
    "07_full_stack": _full_stack,
    "08_lm_head_sampling": _lm_head,
}


_rebuilt: list[str] | None = None  # stages rebuilt inside the outermost load_stage call


def expected_tensors(name: str, cfg, n: int, dtype: torch.dtype) -> dict[str, tuple[torch.dtype, tuple | None]]:
    """What stage ``name`` holds for a prompt of ``n`` tokens: each tensor's dtype and shape
    (None: any length, for the generated ids)."""
    d, h, g, hd = cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    q, kv = (dtype, (n, h, hd)), (dtype, (n, g, hd))
    return {
        "01_tokens": {"tokens": (torch.long, (n,))},
        "02_embeddings": {"x": (dtype, (n, d))},
        "03_rmsnorm": {"x_norm": (dtype, (n, d))},
        "04_qkv": {"xq": q, "xk": kv, "xv": kv},
        "05_rope": {"xq": q, "xk": kv, "attn_out": (dtype, (n, d))},
        "06_one_layer": {"x1": (dtype, (n, d))},
        "07_full_stack": {"hidden": (dtype, (n, d))},
        "08_lm_head_sampling": {
            "logits": (at_least_float32(torch.empty(0, dtype=dtype)).dtype, (n, cfg.vocab_size)),
            "generated": (torch.long, None),
        },
    }[name]


class StructureError(ValueError):
    """Tensors that do not have the names, dtypes or shapes a stage has."""


def check_structure(name: str, tensors: dict, ckpt_dir: str | Path, prompt: str, dtype: torch.dtype) -> None:
    """Refuse an artifact whose hash checks out but whose contents cannot be the stage's (a forged
    or hand-made file): other keys, dtypes or shapes than the config and the prompt give, token
    ids other than the prompt's, generated ids outside the vocabulary."""
    cfg, _, tok = _model(str(ckpt_dir), dtype)
    ids = tok.encode(prompt)
    expected = expected_tensors(name, cfg, len(ids), dtype)
    if sorted(tensors) != sorted(expected):
        raise StructureError(f"holds {sorted(tensors)} where stage {name} holds {sorted(expected)}")
    for key, (want_dtype, want_shape) in expected.items():
        t = tensors[key]
        shape_ok = t.ndim == 1 if want_shape is None else tuple(t.shape) == want_shape
        if t.dtype != want_dtype or not shape_ok:
            raise StructureError(
                f"has {key} of {t.dtype} {tuple(t.shape)} where stage {name} has {want_dtype} "
                f"{want_shape or '(any length,)'} for this prompt"
            )
    if "tokens" in tensors and tensors["tokens"].tolist() != ids:
        raise StructureError("holds token ids that are not the prompt's")
    if "generated" in tensors and not all(0 <= i < cfg.vocab_size for i in tensors["generated"].tolist()):
        raise StructureError("holds generated ids outside the vocabulary")


def load_stage(
    name: str, ckpt_dir: str | Path, prompt: str, dtype: torch.dtype, root: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """The tensors chapter NN saved; recomputed (and saved) from helpers if missing or stale.

    A rebuild prints one line, naming the earlier stages it had to rebuild on the way.
    """
    global _rebuilt
    shown = display_path(artifact_path(name, ckpt_dir, root))
    try:
        tensors = load_artifact(name, ckpt_dir, prompt, dtype, root)
        if name in RECIPES:
            try:
                check_structure(name, tensors, ckpt_dir, prompt, dtype)
            except StructureError as err:
                raise ArtifactError(shown, str(err), f"re-run notebook {name[:2]}") from err
        return tensors
    except ArtifactError as err:
        if name not in RECIPES:
            raise
        reason = err.reason
        outermost = _rebuilt is None
        if outermost:
            _rebuilt = []
        try:
            with torch.inference_mode():
                tensors = RECIPES[name](Path(ckpt_dir), prompt, dtype, root)
            save_artifact(name, tensors, ckpt_dir, prompt, dtype, root)
            if outermost:
                also = f" (and {', '.join(_rebuilt)} before it)" if _rebuilt else ""
                print(f"{shown} {reason}: rebuilt with helpers as chapter {name[:2]} computes it{also}")
            else:
                _rebuilt.append(name)
        finally:
            if outermost:
                _rebuilt = None
        return tensors
