"""Mixture of experts (chapter 12): a router sends each token to k of E SwiGLU experts.

The dense feed-forward of a block is replaced by E copies of its shape ("experts") and
a router, a (E, d) matrix whose logits x R^T say which experts a token goes to. Only
the top k run, so parameters grow with E while the work per token grows with k.
Two routers, as the two model families build them:

- ``"softmax"`` (Mixtral): p = softmax(x R^T) over the E experts, keep the k largest and
  renormalise them to sum to 1; the output is sum_i p_i FFN_i(x).
- ``"sigmoid"`` (Llama 4): keep the k largest logits l_i, gate each by g_i = sigmoid(l_i)
  and scale the expert's *input*: sum_i FFN_i(g_i x); a shared expert that every token
  goes through is added: FFN_shared(x) + sum_i FFN_i(g_i x).

An MoE layer's tensors (prefix ``layers.{i}.feed_forward.``), experts stacked in the
``nn.Linear`` orientation of the dense block, so that expert e is
``feed_forward(x, w1[e], w2[e], w3[e])``:

    router.weight (E, d)   experts.w1, experts.w3 (E, F, d)   experts.w2 (E, d, F)
    shared.w1.weight (F, d)   shared.w2.weight (d, F)   shared.w3.weight (F, d)   [shared expert]

``moe_block(moe)`` is chapter 07's block with this layer in place of the dense feed-forward;
the model runs it when it is passed as ``block`` (``moe_forward(moe)`` is ``forward`` so, the
``step`` of chapter 09's ``generate``). The chapters before this one never see it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial

import torch

from .attention import attention
from .checkpoint import expected_shapes
from .config import ModelConfig
from .feed_forward import feed_forward
from .linear import linear
from .model import forward
from .rmsnorm import rms_norm

ROUTERS = ("softmax", "sigmoid")
EXPERT_KEYS = ("experts.w1", "experts.w2", "experts.w3")


@dataclasses.dataclass(frozen=True)
class MoEConfig:
    """A mixture-of-experts feed-forward (the write-up's notation extended: E experts, top k)."""

    n_experts: int  # E
    top_k: int  # k experts per token
    hidden_dim: int  # F, each expert's SwiGLU hidden size
    router: str = "softmax"  # "softmax" (Mixtral) or "sigmoid" (Llama 4)
    shared_expert: bool = False  # one more expert that every token goes through (Llama 4)

    def __post_init__(self) -> None:
        for name in ("n_experts", "top_k", "hidden_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, found {value!r}")
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k ({self.top_k}) cannot exceed n_experts ({self.n_experts})")
        if self.router not in ROUTERS:
            raise ValueError(f"router must be one of {ROUTERS}, found {self.router!r}")


def llama4_expert_hidden_dim(cfg: ModelConfig, capacity_factor: float = 1.0) -> int:
    """Each expert's hidden size as Meta's Llama 4 reference sizes it (``auto_scale_F``).

    The dense size formula (4d, times 2/3, times ffn_dim_multiplier) divided by
    capacity_factor + 1 before rounding up to ``multiple_of``: with one routed and one
    shared expert per token, the active feed-forward is as big as the dense one.
    8192 for Llama 4 Scout (d = 5120, multiplier 1.2, multiple_of 2048).
    """
    hidden = int(2 * (4 * cfg.dim) / 3)
    if cfg.ffn_dim_multiplier is not None:
        hidden = int(cfg.ffn_dim_multiplier * hidden)
    hidden = int(hidden / (capacity_factor + 1))
    return hidden + (-hidden % cfg.multiple_of)


def moe_shapes(cfg: ModelConfig, moe: MoEConfig | None) -> dict[str, tuple[int, ...]]:
    """Every tensor of the model and its shape, the feed-forwards replaced by MoE layers.

    With ``moe=None``, the dense model's ``checkpoint.expected_shapes``.
    """
    shapes = expected_shapes(cfg)
    if moe is None:
        return shapes
    d, f, e = cfg.dim, moe.hidden_dim, moe.n_experts
    out: dict[str, tuple[int, ...]] = {}
    for key, shape in shapes.items():
        if ".feed_forward.w" not in key:
            out[key] = shape
        elif key.endswith("w1.weight"):  # one dense key becomes the layer's MoE tensors
            p = key.removesuffix("w1.weight")
            out[p + "router.weight"] = (e, d)
            out[p + "experts.w1"] = (e, f, d)
            out[p + "experts.w2"] = (e, d, f)
            out[p + "experts.w3"] = (e, f, d)
            if moe.shared_expert:
                out[p + "shared.w1.weight"] = (f, d)
                out[p + "shared.w2.weight"] = (d, f)
                out[p + "shared.w3.weight"] = (f, d)
    return out


def parameter_counts(cfg: ModelConfig, moe: MoEConfig | None, include_output: bool = False) -> dict[str, int]:
    """Total and active (used for one token) parameters, from tensors on the ``meta`` device.

    Active counts k of the E routed experts; everything else runs for every token.
    ``include_output``: count an untied LM head (Llama 4) besides the embedding.
    """
    total = active = 0
    for key, shape in moe_shapes(cfg, moe).items():
        if key == "output.weight" and not include_output:
            continue
        n = torch.empty(shape, device="meta").numel()
        total += n
        active += n * moe.top_k // moe.n_experts if ".experts." in key else n
    return {"total": total, "active": active}


def route(logits: torch.Tensor, k: int, router: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Which k experts each token goes to and with what weight.

    logits: (N, E) -> weights (N, k) in the logits' dtype, experts (N, k) int64.
    softmax: the top k of softmax(logits), renormalised to sum to 1 (computed in float32).
    sigmoid: sigmoid of the top k logits, each in (0, 1), not normalised.
    """
    if router == "softmax":
        probs = torch.softmax(logits.float(), dim=-1)
        top, experts = torch.topk(probs, k, dim=-1)
        weights = top / top.sum(dim=-1, keepdim=True)
    elif router == "sigmoid":
        top, experts = torch.topk(logits, k, dim=-1)
        weights = torch.sigmoid(top.float())
    else:
        raise ValueError(f"router must be one of {ROUTERS}, found {router!r}")
    return weights.to(logits.dtype), experts


def experts_loop(
    x: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    w3: torch.Tensor,
    weights: torch.Tensor,
    experts: torch.Tensor,
    scale_input: bool = False,
) -> torch.Tensor:
    """The routed experts, one at a time: each runs on the tokens sent to it.

    x: (N, d); w1, w3: (E, F, d); w2: (E, d, F); weights, experts: (N, k) -> (N, d).
    ``scale_input``: the weight multiplies the expert's input (Llama 4), not its output (Mixtral).
    """
    y = torch.zeros_like(x)
    for e in range(w1.shape[0]):
        token, slot = torch.where(experts == e)
        if token.numel() == 0:
            continue
        g = weights[token, slot, None]
        if scale_input:
            out = feed_forward(x[token] * g, w1[e], w2[e], w3[e])
        else:
            out = g * feed_forward(x[token], w1[e], w2[e], w3[e])
        y = y.index_add(0, token, out)
    return y


def experts_batched(
    x: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    w3: torch.Tensor,
    weights: torch.Tensor,
    experts: torch.Tensor,
    scale_input: bool = False,
) -> torch.Tensor:
    """The routed experts all at once: the same result as ``experts_loop``.

    Each (token, expert) pair is sorted by expert and placed in an (E, C, d) buffer,
    C = the most tokens any expert got (empty slots stay zero and give zero); the
    experts run as one batched SwiGLU over the stack; each result is weighted and
    added back to its token.
    """
    n_experts = w1.shape[0]
    n, k = experts.shape
    flat = experts.reshape(-1)  # pair j = (token j // k, slot j % k)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=n_experts)
    first = torch.cumsum(counts, 0) - counts  # where each expert's run starts in ``order``
    expert = flat[order]
    row = torch.arange(n * k, device=x.device) - first[expert]  # place within the expert's run
    token = order // k
    g = weights.reshape(-1)[order, None]
    routed = x[token] * g if scale_input else x[token]
    buffer = x.new_zeros(n_experts, int(counts.max()), x.shape[-1]).index_put((expert, row), routed)
    out = feed_forward(buffer, w1, w2, w3)[expert, row]  # (E, C, d) batched, then back to pairs
    if not scale_input:
        out = g * out
    return torch.zeros_like(x).index_add(0, token, out)


def moe_feed_forward(
    x: torch.Tensor,
    sd: dict[str, torch.Tensor],
    prefix: str,
    moe: MoEConfig,
    batched: bool = True,
    router_logits: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """One MoE layer: route each token, run its k experts, combine; add the shared expert.

    x: (..., d) -> (..., d); ``prefix`` is ``layers.{i}.feed_forward.``. The router logits
    (N, E) are appended to ``router_logits`` when one is given: for the load-balancing loss
    and the routing figures.
    """
    rows = x.reshape(-1, x.shape[-1])
    logits = linear(rows, sd[prefix + "router.weight"])
    if router_logits is not None:
        router_logits.append(logits)
    weights, experts = route(logits, moe.top_k, moe.router)
    run = experts_batched if batched else experts_loop
    w1, w2, w3 = (sd[prefix + key] for key in EXPERT_KEYS)
    y = run(rows, w1, w2, w3, weights, experts, scale_input=moe.router == "sigmoid")
    if moe.shared_expert:
        s = prefix + "shared."
        y = y + feed_forward(rows, sd[s + "w1.weight"], sd[s + "w2.weight"], sd[s + "w3.weight"])
    return y.reshape(x.shape)


def moe_block(moe: MoEConfig, router_logits: list[torch.Tensor] | None = None) -> Callable[..., torch.Tensor]:
    """``transformer_block`` with a mixture of experts for its feed-forward: pass it as ``block``.
    With a list, every layer's router logits are appended to it, in order."""

    def block(x, sd, layer, cfg, freqs_cis, kv_cache=None, start_pos=0) -> torch.Tensor:
        p = f"layers.{layer}."
        attention_in = rms_norm(x, sd[p + "attention_norm.weight"], cfg.norm_eps)
        h = x + attention(attention_in, sd, layer, cfg, freqs_cis, kv_cache, start_pos)
        ffn_in = rms_norm(h, sd[p + "ffn_norm.weight"], cfg.norm_eps)
        return h + moe_feed_forward(ffn_in, sd, p + "feed_forward.", moe, router_logits=router_logits)

    return block


def moe_forward(moe: MoEConfig) -> Callable[..., torch.Tensor]:
    """``forward`` with every block a ``moe_block``: same arguments (a ``step`` for ``generate``)."""
    return partial(forward, block=moe_block(moe))


def load_balancing_loss(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The auxiliary loss of Switch Transformer and Mixtral for one layer: E * sum_e f_e P_e.

    f_e: the fraction of tokens whose top k includes expert e (they sum to k);
    P_e: the mean router probability softmax(logits)_e. k when every expert gets the same
    share, up to E when the router sends everything to the same experts. Only P_e carries
    a gradient: it pulls probability away from the experts that get too many tokens.
    Switch Transformer adds it for each layer (training averages the layers); transformers'
    ``load_balancing_loss_func`` pools the tokens of all layers into one f and one P.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    n_experts = probs.shape[-1]
    chosen = torch.topk(probs, k, dim=-1).indices.reshape(-1)
    f = torch.bincount(chosen, minlength=n_experts).float() / probs.shape[0]
    return n_experts * (f * probs.mean(dim=0)).sum()


def expert_load(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The fraction of tokens that go to each expert (N, E) -> (E,): sums to k."""
    chosen = torch.topk(logits, k, dim=-1).indices.reshape(-1)
    return torch.bincount(chosen, minlength=logits.shape[-1]).float() / logits.shape[0]


class MoEStateDict(dict):
    """A state dict whose feed-forwards are MoE layers: asked for a dense feed-forward's weight
    (run by the dense ``transformer_block``), it says which block to use instead of a bare KeyError."""

    def __missing__(self, key: str):
        if ".feed_forward.w" in key:
            raise KeyError(
                f"{key}: this model's feed-forwards are mixtures of experts, not dense; run it with "
                "block=moe_block(moe) (or step=moe_forward(moe) for generate)"
            )
        raise KeyError(key)


def upcycle(
    sd: dict[str, torch.Tensor], cfg: ModelConfig, moe: MoEConfig, seed: int = 0, router_std: float = 0.02
) -> MoEStateDict:
    """A dense model's feed-forwards turned into MoE layers that compute the same thing at first
    (sparse upcycling, Komatsuzaki et al. 2022).

    softmax router: every expert a copy of the dense feed-forward; whatever the router
    picks, the weights sum to 1, so the output is the dense output. sigmoid router with a
    shared expert: the shared expert is the dense feed-forward and the routed experts are
    copies whose output matrix w2 starts at zero. The router starts random (``router_std``):
    the experts only drift apart once training sends them different tokens.
    """
    if moe.hidden_dim != cfg.ffn_hidden_dim:
        raise ValueError(
            f"upcycling copies the dense feed-forward: hidden_dim must be {cfg.ffn_hidden_dim}, found {moe.hidden_dim}"
        )
    if moe.router == "sigmoid" and not moe.shared_expert:
        raise ValueError(
            "sigmoid gates do not sum to 1, so copies of the dense feed-forward would change the model: "
            "use router='softmax', or shared_expert=True"
        )
    gen = torch.Generator().manual_seed(seed)
    out = MoEStateDict({k: v for k, v in sd.items() if ".feed_forward.w" not in k})
    for layer in range(cfg.n_layers):
        p = f"layers.{layer}.feed_forward."
        dense = {name: sd[p + name + ".weight"] for name in ("w1", "w2", "w3")}
        ref = dense["w1"]
        router = torch.randn(moe.n_experts, cfg.dim, generator=gen) * router_std
        out[p + "router.weight"] = router.to(ref.dtype)
        for name, w in dense.items():
            stack = w.unsqueeze(0).repeat(moe.n_experts, 1, 1)
            if moe.shared_expert and name == "w2":
                stack = torch.zeros_like(stack)
            out[p + "experts." + name] = stack
            if moe.shared_expert:
                out[p + "shared." + name + ".weight"] = w.clone()
    return out
