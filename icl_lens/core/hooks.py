"""The model contract: the one place that knows hook names, head shapes and per-head W_O.

Every analysis reads a model only through this module (and :mod:`icl_lens.patching`).
A "model" is anything that speaks the TransformerLens vocabulary: a 4.x
``TransformerBridge`` (compatibility mode on or off), or any other object with the same hooks.
What is required:

* hook points named ``blocks.{l}.hook_resid_pre/mid/post``, ``blocks.{l}.hook_attn_out``,
  ``blocks.{l}.attn.hook_q/k/v/z/pattern``, ``hook_embed``;
* ``run_with_hooks``, ``run_with_cache(names_filter=...)``, the ``hooks()`` context manager,
  ``forward(tokens, attention_mask=...)``;
* ``cfg`` with ``n_layers``, ``n_heads``, ``d_head``, ``d_model``, ``d_vocab`` and, for
  grouped-query attention, ``n_key_value_heads``;
* ``blocks[l].attn.W_O`` of shape ``[n_heads, d_head, d_model]`` and ``W_U``;
* ``tokenizer`` (a HuggingFace tokenizer) for the string-based APIs.

Grouped-query attention is the normal case: ``hook_q``/``hook_z``/``hook_pattern`` have
``n_heads`` heads, ``hook_k``/``hook_v`` have ``n_kv_heads`` (query head ``h`` reads
key/value head ``h // (n_heads // n_kv_heads)``).

Hook functions are always closures bound to one hook name: in the bridge's default mode
``hook.name`` is the native name (``blocks.5.attn.o.hook_in``), not the alias.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor

from icl_lens.core.errors import ModelContractError, PromptError
from icl_lens.core.options import check_choice

HookFn = Callable[[Tensor, Any], Tensor | None]
FwdHooks = Sequence[tuple[str, HookFn]]


@runtime_checkable
class HookedModel(Protocol):
    """What icl_lens needs from a model: the TransformerLens hook contract.

    A ``TransformerBridge`` (TransformerLens 4.x, compatibility mode on or off) satisfies
    it, and so does anything else with a TransformerLens ``cfg``, hook points reached by
    ``hooks(fwd_hooks=..., bwd_hooks=...)``, and a forward ``model(tokens,
    attention_mask=...)`` returning logits. The string APIs also read ``tokenizer`` (a
    HuggingFace tokenizer); weight-based analyses read ``blocks[l].attn.W_O``, ``W_U``
    and ``W_E``. Every public function takes its model as a ``HookedModel``.
    """

    cfg: Any

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def hooks(self, *args: Any, **kwargs: Any) -> AbstractContextManager[Any]: ...


# ---------------------------------------------------------------------------------------
# hook names
# ---------------------------------------------------------------------------------------
def resid_pre(layer: int) -> str:
    """Residual stream entering block ``layer``."""
    return f"blocks.{layer}.hook_resid_pre"


def resid_mid(layer: int) -> str:
    """Residual stream between attention and MLP of block ``layer``."""
    return f"blocks.{layer}.hook_resid_mid"


def resid_post(layer: int) -> str:
    """Residual stream leaving block ``layer``."""
    return f"blocks.{layer}.hook_resid_post"


ResidHook = Literal["resid_pre", "resid_mid", "resid_post"]
"""A residual stream of a block: entering it, between its attention and MLP, or leaving it."""


def resid(hook: ResidHook, layer: int) -> str:
    """Hook name of the residual stream ``hook`` of block ``layer``."""
    check_choice(hook, ResidHook, "hook")
    return f"blocks.{layer}.hook_{hook}"


def attn_out(layer: int) -> str:
    """Summed output of the attention layer ``layer`` (``[batch, pos, d_model]``)."""
    return f"blocks.{layer}.hook_attn_out"


def mlp_out(layer: int) -> str:
    """Output of the MLP of block ``layer``, added to the residual stream (``[batch, pos, d_model]``)."""
    return f"blocks.{layer}.hook_mlp_out"


BlockHook = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"]
"""A ``[batch, pos, d_model]`` activation of a block: one of its residual streams, or what
its attention or its MLP adds to the residual stream."""


def block_hook(hook: BlockHook, layer: int) -> str:
    """Hook name of the ``d_model``-wide activation ``hook`` of block ``layer``."""
    check_choice(hook, BlockHook, "hook")
    # every one of them is `blocks.{layer}.hook_{hook}` in the TransformerLens vocabulary
    return f"blocks.{layer}.hook_{hook}"


HeadHook = Literal["z", "q", "k", "v"]
"""A per-head activation of the attention layer: a head's output before ``W_O`` (``z``), its
query, or its key or value (``n_kv_heads`` heads under grouped-query attention). ``q`` and
``k`` are taken before the rotary embedding."""


def head_hook(hook: HeadHook, layer: int) -> str:
    """Hook name of the per-head activation ``hook`` of block ``layer``."""
    check_choice(hook, HeadHook, "hook")
    return f"blocks.{layer}.attn.hook_{hook}"


def z(layer: int) -> str:
    """Per-head attention output before W_O (``[batch, pos, n_heads, d_head]``)."""
    return f"blocks.{layer}.attn.hook_z"


def pattern(layer: int) -> str:
    """Attention probabilities (``[batch, n_heads, query_pos, key_pos]``)."""
    return f"blocks.{layer}.attn.hook_pattern"


def q(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_q"


def k(layer: int) -> str:
    """Keys; ``n_kv_heads`` heads under grouped-query attention."""
    return f"blocks.{layer}.attn.hook_k"


def v(layer: int) -> str:
    """Values; ``n_kv_heads`` heads under grouped-query attention."""
    return f"blocks.{layer}.attn.hook_v"


# ---------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """Sizes of a model, read once from its ``cfg``."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_vocab: int
    n_ctx: int
    attn_only: bool
    name: str

    @property
    def n_total_heads(self) -> int:
        return self.n_layers * self.n_heads

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    def kv_head(self, head: int) -> int:
        """Key/value head read by query head ``head``."""
        return head // self.group_size

    def heads_of(self, hook: HeadHook) -> int:
        """Heads of the per-head activation ``hook``: key/value heads for ``k`` and ``v``."""
        return self.n_kv_heads if hook in ("k", "v") else self.n_heads


def spec(model: HookedModel) -> ModelSpec:
    """Read a :class:`ModelSpec` from any model that has a TransformerLens ``cfg``."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "n_layers"):
        raise ModelContractError(
            f"{type(model).__name__} has no TransformerLens `cfg`. Pass a TransformerBridge "
            "(il.load_model / TransformerBridge.boot_transformers)."
        )
    n_heads = int(cfg.n_heads)
    n_kv = getattr(cfg, "n_key_value_heads", None) or n_heads
    return ModelSpec(
        n_layers=int(cfg.n_layers),
        n_heads=n_heads,
        n_kv_heads=int(n_kv),
        d_head=int(cfg.d_head),
        d_model=int(cfg.d_model),
        d_vocab=int(cfg.d_vocab),
        n_ctx=int(getattr(cfg, "n_ctx", 0) or 0),
        attn_only=bool(getattr(cfg, "attn_only", False)),
        name=str(getattr(cfg, "model_name", type(model).__name__)),
    )


def dtype_of(model: HookedModel) -> torch.dtype:
    """Floating-point type of the model's weights (float32 when it has none)."""
    try:
        return next(model.parameters()).dtype
    except (StopIteration, AttributeError):
        return torch.float32


def device_of(model: HookedModel) -> torch.device:
    """Device of the model's embedding (where input tokens must go)."""
    cfg_device = getattr(getattr(model, "cfg", None), "device", None)
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device(cfg_device or "cpu")


# ---------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------
def W_O(model: HookedModel, layer: int) -> Float[Tensor, "n_heads d_head d_model"]:
    """Per-head output matrix of ``layer``: a head's output is ``z[h] @ W_O[h]``."""
    w = model.blocks[layer].attn.W_O
    s = spec(model)
    if tuple(w.shape) != (s.n_heads, s.d_head, s.d_model):
        raise ModelContractError(
            f"blocks[{layer}].attn.W_O has shape {tuple(w.shape)}, expected ({s.n_heads}, {s.d_head}, {s.d_model})."
        )
    return w.detach()


def b_O(model: HookedModel, layer: int) -> Float[Tensor, " d_model"]:
    """Output bias of the attention layer; zeros on bias-free models (e.g. Llama family).

    The bias belongs to the layer, not to any head: per-head outputs exclude it.
    """
    s = spec(model)
    try:
        b = model.blocks[layer].attn.b_O
    except (AttributeError, RuntimeError, NotImplementedError):
        b = None
    if b is None:
        return torch.zeros(s.d_model, device=device_of(model))
    return b.detach()


def W_U(model: HookedModel) -> Float[Tensor, "d_model d_vocab"]:
    return model.W_U.detach()


def W_E(model: HookedModel) -> Float[Tensor, "d_vocab d_model"]:
    return model.W_E.detach()


# ---------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------
def count_hooks(model: HookedModel) -> int:
    """Number of hook functions currently attached to the model's hook points.

    Used by tests (and users) to check that no intervention leaked a hook.
    """
    total = 0
    for hp in _hook_points(model):
        for attr in ("fwd_hooks", "bwd_hooks"):
            total += len(getattr(hp, attr, ()) or ())
        total += len(getattr(hp, "_forward_hooks", {}) or {})
        total += len(getattr(hp, "_backward_hooks", {}) or {})
    return total


def _hook_points(model: HookedModel) -> list[Any]:
    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is None:
        return []
    seen: dict[int, Any] = {}
    for hp in hook_dict.values():
        seen[id(hp)] = hp
    return list(seen.values())


@contextlib.contextmanager
def attached(model: HookedModel, fwd_hooks: FwdHooks = (), bwd_hooks: FwdHooks = ()) -> Iterator[Any]:
    """Attach hooks for the duration of a ``with`` block; removed even if the body raises."""
    if not fwd_hooks and not bwd_hooks:
        yield model
        return
    try:
        ctx = model.hooks(fwd_hooks=list(fwd_hooks), bwd_hooks=list(bwd_hooks))
        ctx.__enter__()
    except KeyError as e:
        raise ModelContractError(
            f"{e.args[0] if e.args else e}: hooks never fired (no such hook point); use the "
            "TransformerLens vocabulary, e.g. blocks.0.attn.hook_z, via icl_lens.core.hooks."
        ) from e
    try:
        yield model
    finally:
        ctx.__exit__(None, None, None)


def forward(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    fwd_hooks: FwdHooks = (),
    **kwargs: Any,
) -> Float[Tensor, "batch pos d_vocab"]:
    """One forward pass returning logits, with hooks attached only for this call.

    Raises:
        PromptError: ``tokens`` is not an integer tensor, or holds ids the model has no
            embedding for (a batch built with another model's tokenizer).
    """
    if isinstance(tokens, Tensor) and tokens.is_floating_point():
        raise PromptError(f"tokens must be integer ids, got a {tokens.dtype} tensor")
    if isinstance(tokens, Tensor) and tokens.numel():
        d_vocab = spec(model).d_vocab
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= d_vocab:
            raise PromptError(
                f"the tokens hold ids from {low} to {high}, but this model has {d_vocab} token embeddings "
                f"({spec(model).name}): they were built with another model's tokenizer. Build the batch with "
                "this model (il.build_prompts(model, ...))."
            )
    device = device_of(model)
    tokens = tokens.to(device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
        kwargs["attention_mask"] = attention_mask
    with attached(model, fwd_hooks):
        return model(tokens, **kwargs)


def run_with_cache(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    names: Sequence[str],
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    fwd_hooks: FwdHooks = (),
    **kwargs: Any,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Forward pass caching only ``names`` (detached), optionally with extra hooks.

    Implemented with our own caching hooks so that it behaves identically on a bridge and
    on any HookedModel, and so the cache never holds more than asked for.
    """
    cache: dict[str, Tensor] = {}

    def _saver(name: str) -> HookFn:
        def save(act: Tensor, hook: Any) -> None:
            cache[name] = act.detach()

        return save

    hooks = list(fwd_hooks) + [(n, _saver(n)) for n in names]
    logits = forward(model, tokens, attention_mask, hooks, **kwargs)
    missing = [n for n in names if n not in cache]
    if missing:
        raise ModelContractError(
            f"hooks {missing} never fired on {type(model).__name__}; check the names "
            "(TransformerLens vocabulary, e.g. blocks.0.attn.hook_z)."
        )
    return logits, cache


def gather_positions(
    acts: Shaped[Tensor, "batch pos ..."], positions: Int[Tensor, " batch"]
) -> Shaped[Tensor, "batch ..."]:
    """Pick one position per row: ``acts[i, positions[i]]``."""
    idx = positions.to(acts.device).long()
    return acts[torch.arange(acts.shape[0], device=acts.device), idx]


model_spec = spec
