"""Interventions: context managers that change activations and always clean up.

Each one attaches hooks on entry and removes them on exit, also when the body raises::

    with patch_activation(model, hooks.z(9), clean_z, heads=[3], positions=batch.last_pos):
        logits = model(batch.tokens, attention_mask=batch.attention_mask)

They work on a TransformerBridge (compatibility mode on or off) and on anything else that
speaks the TransformerLens hook contract (the ``HookedModel`` protocol), with grouped-
query attention (``heads`` then indexes the hook's own head axis: query heads for
``hook_q``/``hook_z``, key/value heads for ``hook_k``/``hook_v``) and padded batches.

Positions: ``None`` (every position), ``"last"`` (the final column: the answer position of
left-padded prompts, and the only column of a one-token step with a key/value cache), an
``int`` column, or a ``[batch]`` long tensor with one column per row (``batch.last_pos``).

Head ablation (zero / mean / resample) is :func:`icl_lens.patching.ablation.ablate_heads`,
re-exported by :mod:`icl_lens.patching`.
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
from icl_lens.core.hooks import HookedModel, ResidHook

PositionSelector = None | str | int | Int[Tensor, " batch"]
"""Where an intervention acts: every position, ``"last"``, a column, or one column per row."""
Heads = None | int | Sequence[int]

_HEAD_FIRST_SUFFIXES = ("hook_pattern", "hook_attn_scores")


def _axes(hook_name: str, ndim: int) -> tuple[int, int | None]:
    """(position axis, head axis) of a hook's activation."""
    if hook_name.endswith(_HEAD_FIRST_SUFFIXES):
        return 2, 1  # [batch, head, query_pos, key_pos]
    if ndim == 4:
        return 1, 2  # [batch, pos, head, d_head]
    return 1, None  # [batch, pos, d_model]


def activation_index(
    shape: torch.Size, hook_name: str, positions: PositionSelector, heads: Heads, device: torch.device
) -> tuple[Any, ...]:
    """The index into an activation of ``shape`` selecting ``positions`` and ``heads``."""
    ndim = len(shape)
    pos_axis, head_axis = _axes(hook_name, ndim)
    index: list[Any] = [slice(None)] * ndim
    per_row = isinstance(positions, Tensor) and positions.ndim == 1
    if positions is None:
        pass
    elif isinstance(positions, str):
        if positions != "last":
            raise ConfigError(f"positions must be None, 'last', an int or a [batch] tensor, got {positions!r}")
        index[pos_axis] = shape[pos_axis] - 1
    elif isinstance(positions, int) or (isinstance(positions, Tensor) and positions.ndim == 0):
        p = int(positions)
        if not -shape[pos_axis] <= p < shape[pos_axis]:
            raise ConfigError(f"position {p} is outside the activation's {shape[pos_axis]} positions")
        index[pos_axis] = p
    elif per_row:
        assert isinstance(positions, Tensor)
        if positions.shape[0] != shape[0]:
            raise ConfigError(
                f"positions has {positions.shape[0]} entries but the activation has batch {shape[0]}; "
                "give one position per row (e.g. batch.last_pos)."
            )
        index[0] = torch.arange(shape[0], device=device)
        index[pos_axis] = positions.to(device).long()
    else:
        raise ConfigError(f"positions must be None, 'last', an int or a [batch] tensor, got {positions!r}")

    if heads is not None:
        if head_axis is None:
            raise ConfigError(
                f"{hook_name} has no head axis (shape {tuple(shape)}); `heads` applies to "
                "[batch, pos, head, d_head] hooks and to attention patterns."
            )
        if isinstance(heads, int):
            if not 0 <= heads < shape[head_axis]:
                raise ConfigError(f"head {heads} out of range: {hook_name} has {shape[head_axis]} heads")
            index[head_axis] = heads
        else:
            head_list = [int(h) for h in heads]
            if any(not 0 <= h < shape[head_axis] for h in head_list):
                raise ConfigError(f"heads {head_list} out of range: {hook_name} has {shape[head_axis]} heads")
            head_index = torch.tensor(head_list, device=device, dtype=torch.long)
            if per_row:
                # Row/position indices and head indices broadcast to [batch, n_heads].
                index[0] = index[0][:, None]
                index[pos_axis] = index[pos_axis][:, None]
                head_index = head_index[None, :]
            index[head_axis] = head_index
    return tuple(index)


def _fit(values: Tensor, act: Tensor, index: tuple[Any, ...], target_shape: torch.Size, what: str) -> Tensor:
    """``values`` shaped for ``act[index]``: the full activation shape is indexed alike."""
    values = values.to(device=act.device, dtype=act.dtype)
    if values.shape == act.shape and target_shape != act.shape:
        return values[index]
    if values.ndim == 2 and len(target_shape) == 3 and values.shape[0] == target_shape[0]:
        values = values[:, None]  # one vector per prompt, every selected position
    try:
        return torch.broadcast_to(values, target_shape)
    except RuntimeError as e:
        raise ConfigError(
            f"{what}: values of shape {tuple(values.shape)} do not fit the selected activation "
            f"slice of shape {tuple(target_shape)} (activation {tuple(act.shape)})."
        ) from e


@contextlib.contextmanager
def patch_activation(
    model: HookedModel,
    hook_name: str,
    values: Float[Tensor, " ..."],
    *,
    heads: Heads = None,
    positions: PositionSelector = None,
) -> Iterator[HookedModel]:
    """Replace the activation of ``hook_name`` with ``values`` while the block runs.

    Args:
        hook_name: any TransformerLens hook name (use :mod:`icl_lens.core.hooks` to build it).
        values: broadcastable to the selected slice, or of the activation's full shape
            (then the same slice of ``values`` is used, e.g. another run's cache).
        heads: head index or list, on the head axis of ``[batch, pos, head, d_head]``
            hooks (axis 1 of ``hook_pattern``/``hook_attn_scores``).
        positions: see the module docstring.
    """
    with _edit(model, hook_name, values, heads=heads, positions=positions, scale=None, what="patch_activation"):
        yield model


@contextlib.contextmanager
def add_to_resid(
    model: HookedModel,
    layer: int,
    vector: Float[Tensor, "... d_model"],
    *,
    positions: PositionSelector,
    hook: ResidHook = "resid_post",
    scale: float = 1.0,
) -> Iterator[HookedModel]:
    """Add ``scale * vector`` (``[d_model]`` or ``[batch, d_model]``) to the residual stream.

    ``hook`` picks where: ``"resid_post"`` (leaving block ``layer``, the default),
    ``"resid_pre"`` (entering it) or ``"resid_mid"``.
    """
    name = _resid_hook_name(model, layer, hook)
    validate.vector(vector, hooks.spec(model).d_model, "vector")
    with _edit(model, name, vector, heads=None, positions=positions, scale=scale, what="add_to_resid"):
        yield model


def replace_resid(
    model: HookedModel,
    layer: int,
    values: Float[Tensor, "... d_model"],
    *,
    positions: PositionSelector,
    hook: ResidHook = "resid_post",
) -> contextlib.AbstractContextManager[HookedModel]:
    """Replace the residual stream at ``positions`` with ``[d_model]`` or ``[batch, d_model]`` values."""
    validate.vector(values, hooks.spec(model).d_model, "values")
    return patch_activation(model, _resid_hook_name(model, layer, hook), values, positions=positions)


def _resid_hook_name(model: HookedModel, layer: int, hook: ResidHook) -> str:
    n_layers = hooks.spec(model).n_layers
    layer = validate.integer(layer, "layer")
    if not 0 <= layer < n_layers:
        raise ConfigError(f"layer {layer} out of range: the model has {n_layers} layers")
    return hooks.resid(hook, layer)


@contextlib.contextmanager
def _edit(
    model: HookedModel,
    name: str,
    values: Tensor,
    *,
    heads: Heads,
    positions: PositionSelector,
    scale: float | None,
    what: str,
) -> Iterator[HookedModel]:
    """Replace (``scale=None``) or add ``scale *`` ``values`` at the selected slice of ``name``."""
    values = torch.as_tensor(values)

    def edit(act: Tensor, hook: Any) -> Tensor:
        index = activation_index(act.shape, name, positions, heads, act.device)
        out = act.clone()
        fitted = _fit(values, act, index, out[index].shape, f"{what}({name})")
        out[index] = fitted if scale is None else out[index] + scale * fitted
        return out

    with hooks.attached(model, [(name, edit)]):
        yield model
