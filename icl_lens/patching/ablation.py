"""Knock out attention heads for the duration of a ``with`` block.

``ablate_heads`` replaces the output of chosen heads (their ``hook_z``, one head at a time,
before ``W_O``) on every forward pass run inside the block, then removes every hook it
added, even when the code in the block raises::

    with il.ablate_heads(model, heads=[(5, 1), (7, 3)], method="mean", reference=batch):
        logits = model(tokens)

Methods:

* ``"zero"``: the head's ``z`` becomes 0 (so its output is 0; a bias ``b_O`` belongs to the
  layer and is kept).
* ``"mean"``: ``z`` becomes its mean over every non-padding position of the ``reference``
  batch (one vector per head, the same at every position).
* ``"resample"``: ``z`` at row ``i``, position ``p`` becomes the head's ``z`` on another
  reference sequence at the same position ``p`` (rows are paired by a seeded cyclic
  permutation, so when the reference is the input batch itself no row keeps its own value).
  Inputs may not be longer than the reference.

``preserve_pattern=True`` is the pattern-preserving ablation of Olsson et al. (2022): each
forward pass first runs the model without ablation and records every attention pattern,
then runs it again with the heads ablated and all attention patterns forced to the
recorded ones. The ablated heads then still shape where later heads look (their
K/Q-composition is kept) and lose only what they write into later heads' values and the
logits. It costs two forward passes per call and keeps the patterns of every layer after
the first ablated one in memory (``batch * n_heads * pos**2`` floats per layer).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from icl_lens.core import hooks, validate
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.options import check_choice
from icl_lens.patching.options import AblationMethod

Head = tuple[int, int]


def normalize_heads(
    model: HookedModel, heads: Sequence[Sequence[int]], *, n_heads: int | None = None, allow_empty: bool = False
) -> list[Head]:
    """Validate ``(layer, head)`` pairs against the model (``n_heads`` per layer: the query
    heads by default); sorted, duplicates removed."""
    s = hooks.spec(model)
    n_heads = s.n_heads if n_heads is None else n_heads
    return sorted(set(validate.head_list(heads, s.n_layers, n_heads, allow_empty=allow_empty)))


def _reference_tokens(reference: Any) -> tuple[Tensor, Tensor | None]:
    tokens = getattr(reference, "tokens", None)
    if tokens is not None:  # a PromptBatch (or anything with tokens and attention_mask)
        return tokens, getattr(reference, "attention_mask", None)
    if isinstance(reference, Tensor):
        if reference.ndim == 1:
            reference = reference[None]
        if reference.ndim != 2 or reference.dtype not in (torch.int64, torch.int32):
            raise ConfigError(f"reference tokens must be an integer tensor [batch, pos], got {tuple(reference.shape)}")
        return reference.long(), None
    raise ConfigError(f"reference must be a PromptBatch or a token tensor [batch, pos], got {type(reference).__name__}")


def _reference_z(
    model: HookedModel,
    heads: Sequence[Head],
    tokens: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None = None,
) -> dict[Head, Float[Tensor, "batch pos d_head"]]:
    """Each head's ``z`` on ``tokens`` (one forward pass, caching only the layers needed)."""
    layers = sorted({layer for layer, _ in heads})
    with torch.no_grad():
        _, cache = hooks.run_with_cache(model, tokens, [hooks.z(l) for l in layers], attention_mask=attention_mask)
    return {(l, h): cache[hooks.z(l)][:, :, h] for l, h in heads}


def _cyclic_pairing(n: int, seed: int) -> Tensor:
    """A random permutation of ``range(n)`` made of a single cycle: no fixed point for n > 1."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    partner = torch.empty(n, dtype=torch.long)
    partner[order] = order.roll(-1)
    return partner


@contextlib.contextmanager
def ablate_heads(
    model: HookedModel,
    heads: Sequence[Sequence[int]],
    method: AblationMethod = "zero",
    reference: Any = None,
    preserve_pattern: bool = False,
    seed: int = 0,
) -> Iterator[HookedModel]:
    """Ablate attention heads inside a ``with`` block; yields the model.

    Args:
        model: a TransformerBridge (any HookedModel; see :mod:`icl_lens.core.hooks`).
        heads: ``(layer, head)`` pairs; query heads under grouped-query attention. An
            empty list ablates nothing (a baseline run); a bare int is refused.
        method: ``"zero"``, ``"mean"`` or ``"resample"`` (see the module docstring).
        reference: tokens ``[batch, pos]`` or a ``PromptBatch`` providing the activations
            for ``"mean"`` and ``"resample"`` (its ``attention_mask`` excludes padding from
            the mean). Ignored by ``"zero"``.
        preserve_pattern: force every attention pattern to its value without ablation
            (Olsson et al.'s pattern-preserving ablation; two forward passes per call).
        seed: pairs input rows with reference rows for ``"resample"``.

    Every hook (and, with ``preserve_pattern``, the forward wrapper) is removed when the
    block exits, including on an exception.
    """
    check_choice(method, AblationMethod, "method")
    head_list = normalize_heads(model, heads, allow_empty=True)  # no heads: nothing ablated (a baseline)
    seed = validate.seed(seed)
    if method != "zero" and reference is None:
        raise ConfigError(
            f"method={method!r} needs reference= (a PromptBatch or token tensor whose activations replace the heads')."
        )
    if not head_list:
        yield model
        return

    replacement: dict[Head, Tensor] = {}
    pairing: Tensor | None = None
    if method in ("mean", "resample"):
        ref_tokens, ref_mask = _reference_tokens(reference)
        acts = _reference_z(model, head_list, ref_tokens, ref_mask)
        if method == "mean":
            keep = torch.ones(ref_tokens.shape, dtype=torch.bool) if ref_mask is None else ref_mask.bool().cpu()
            for key, a in acts.items():
                replacement[key] = a[keep.to(a.device)].mean(0)
        else:
            replacement = acts
            pairing = _cyclic_pairing(int(ref_tokens.shape[0]), seed)

    by_layer: dict[int, list[int]] = {}
    for layer, head in head_list:
        by_layer.setdefault(layer, []).append(head)
    state = {"clean_run": False}
    recorded_patterns: dict[int, Tensor] = {}

    def z_hook(layer: int) -> hooks.HookFn:
        layer_heads = by_layer[layer]

        def ablate(z: Tensor, hook: Any) -> Tensor:
            if state["clean_run"]:
                return z
            z = z.clone()
            for head in layer_heads:
                z[:, :, head] = _replacement_for(z, layer, head)
            return z

        return ablate

    def _replacement_for(z: Tensor, layer: int, head: int) -> Tensor:
        if method == "zero":
            return torch.zeros((), dtype=z.dtype, device=z.device)
        value = replacement[(layer, head)].to(z.device, z.dtype)
        if method == "mean":
            return value
        assert pairing is not None
        batch, pos = z.shape[0], z.shape[1]
        if pos > value.shape[1]:
            raise ConfigError(
                f"resample ablation: the input has {pos} positions but the reference only "
                f"{value.shape[1]}; pass a reference at least as long as the inputs."
            )
        rows = pairing[torch.arange(batch) % pairing.shape[0]].to(z.device)
        return value[rows, :pos]

    def pattern_hook(layer: int) -> hooks.HookFn:
        def force(pattern: Tensor, hook: Any) -> Tensor | None:
            if state["clean_run"]:
                recorded_patterns[layer] = pattern.detach()
                return None
            return recorded_patterns[layer].to(pattern.dtype)

        return force

    fwd_hooks: list[tuple[str, hooks.HookFn]] = [(hooks.z(l), z_hook(l)) for l in sorted(by_layer)]
    if preserve_pattern:
        first = min(by_layer)
        n_layers = hooks.spec(model).n_layers
        fwd_hooks += [(hooks.pattern(l), pattern_hook(l)) for l in range(first + 1, n_layers)]

    wrapped = False
    try:
        if preserve_pattern:
            _wrap_forward(model, state, recorded_patterns)
            wrapped = True
        with hooks.attached(model, fwd_hooks):
            yield model
    finally:
        if wrapped:
            _unwrap_forward(model)
        recorded_patterns.clear()


def _wrap_forward(model: HookedModel, state: dict[str, bool], recorded: dict[int, Tensor]) -> None:
    """Make every call of ``model`` (``model(...)`` and ``model.forward(...)``, which
    ``run_with_hooks`` uses) run once without ablation to record the patterns first."""
    if "forward" in vars(model):
        raise ConfigError("pattern-preserving ablations cannot be nested on the same model.")
    original = model.forward

    def forward_twice(*args: Any, **kwargs: Any) -> Any:
        if state["clean_run"]:
            return original(*args, **kwargs)
        state["clean_run"] = True
        try:
            with torch.no_grad():
                original(*args, **kwargs)
        finally:
            state["clean_run"] = False
        try:
            return original(*args, **kwargs)
        finally:
            recorded.clear()

    model.forward = forward_twice


def _unwrap_forward(model: HookedModel) -> None:
    if "forward" in vars(model):
        del model.forward


def forward_is_wrapped(model: HookedModel) -> bool:
    """True while a pattern-preserving ablation wraps ``model.forward`` (for leak tests)."""
    return "forward" in vars(model)
