"""Exact activation-patching sweeps over attention heads and the residual stream.

Each patched variant (one head, or one layer's residual stream, at some positions) is
evaluated with a metric per prompt. Two exact engines compute the same numbers:

* ``"plain"``: one full forward per variant (variants are stacked along the batch axis,
  several per forward pass, which changes nothing in the arithmetic of each);
* ``"fast"`` (``positions="last"`` only): the prompt runs once and only the answer
  position is recomputed, from the block where the patch applies (see
  :mod:`icl_lens.patching.engine`).

``method="auto"`` takes the fast engine where it applies and the plain one elsewhere; the
result records which one ran. Denoising and noising are the same call with the roles
swapped: ``head_sweep(model, target=corrupted, source=clean)`` patches clean activations
into the corrupted run (denoising); ``target=clean, source=corrupted`` is noising.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError, ModelContractError
from icl_lens.core.models import model_name
from icl_lens.core.progress import progress
from icl_lens.patching.activations import (
    head_activations_and_logits,
    resid_activations_and_logits,
    row_chunks,
    take_rows,
)
from icl_lens.patching.engine import (
    CONTROL_TOLERANCE,
    LastPositionRunner,
    Variants,
    control_error,
    last_position_runner,
)
from icl_lens.patching.metrics import Metric, evaluate_metric, metric_for_rows, metric_name, resolve_metric
from icl_lens.patching.results import HeadPatchingResult, ResidPatchingResult
from icl_lens.prompting.prompts import PromptBatch

TOKENS_PER_FORWARD = 1024
"""Token budget of one full forward (its ``[batch, pos, d_vocab]`` logits dominate memory)."""
FAST_ROWS = 2048
"""Answer-position rows (prompts x variants) recomputed together by the fast engine."""

_RESID_HOOKS = {"resid_pre": hooks.resid_pre, "resid_mid": hooks.resid_mid, "resid_post": hooks.resid_post}


@dataclasses.dataclass(frozen=True)
class _Variant:
    """One patched copy of the target run."""

    hook: str  # the hook patched (plain engine)
    layer: int
    head: int | None  # None: a residual-stream patch
    column: int | None  # a fixed column (positions="each"); None: last_pos or all columns
    start: int  # fast engine: the block this variant starts entering


Setter = Callable[[Tensor], Tensor]


class _ControlMismatch(Exception):
    pass


def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{what} must be one of {allowed}, got {value!r}")
    return value


def auto_batch_size(batch: PromptBatch, batch_size: int | None) -> int:
    """Prompts per chunk: ``batch_size``, or as many as fit :data:`TOKENS_PER_FORWARD`."""
    if batch_size is not None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        return int(batch_size)
    return max(1, TOKENS_PER_FORWARD // max(1, batch.tokens.shape[1]))


# ---------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------
def _source_from_batch(model: Any, source: PromptBatch, target: PromptBatch, full: bool, kind: str, **kw: Any):
    if len(source) != len(target):
        raise ConfigError(f"source has {len(source)} prompts and target {len(target)}; they are paired row by row.")
    if full and source.tokens.shape != target.tokens.shape:
        raise ConfigError(
            "positions='each'/'all' patch column by column, so source and target need the same token "
            f"shape; got {tuple(source.tokens.shape)} and {tuple(target.tokens.shape)}."
        )
    fn = head_activations_and_logits if kind == "head" else resid_activations_and_logits
    acts, logits = fn(
        model, source, positions="all" if full else "last", batch_size=auto_batch_size(source, None), **kw
    )
    return acts, logits


def _head_source(
    model: Any, source: Any, target: PromptBatch, positions: str, show_progress: bool | None
) -> tuple[Tensor, Tensor | None, str]:
    """Source head outputs as ``[1|batch, (1|pos,) n_layers, n_heads, d_head]`` (+ logits)."""
    s = hooks.spec(model)
    full = positions != "last"
    unit = (s.n_layers, s.n_heads, s.d_head)
    if isinstance(source, PromptBatch):
        acts, logits = _source_from_batch(model, source, target, full, "head", show_progress=show_progress)
        return acts, logits, f"batch:{source.kind}"
    if isinstance(source, Mapping):
        per_layer = [torch.as_tensor(source[hooks.z(l)]).detach().cpu() for l in range(s.n_layers)]
        acts = torch.stack(per_layer, dim=2)  # [batch, pos, n_layers, n_heads, d_head]
        if acts.shape[:2] != target.tokens.shape:
            raise ConfigError(
                f"cached hook_z has shape {tuple(acts.shape[:2])}, the target {tuple(target.tokens.shape)}"
            )
        return (acts if full else hooks.gather_positions(acts, target.last_pos)), None, "cache"
    if not isinstance(source, Tensor):
        raise ConfigError("source must be a PromptBatch, a cache of hook_z activations, or a tensor of head outputs")
    return _tensor_source(source, unit, target, full, "one vector per head")


def _resid_source(
    model: Any, source: Any, target: PromptBatch, positions: str, hook: str, show_progress: bool | None
) -> tuple[Tensor, Tensor | None, str]:
    """Source residuals as ``[1|batch, (1|pos,) n_layers, d_model]`` (+ logits)."""
    s = hooks.spec(model)
    full = positions != "last"
    unit = (s.n_layers, s.d_model)
    if isinstance(source, PromptBatch):
        acts, logits = _source_from_batch(model, source, target, full, "resid", hook=hook, show_progress=show_progress)
        return acts, logits, f"batch:{source.kind}"
    if not isinstance(source, Tensor):
        raise ConfigError("source must be a PromptBatch or a tensor of residual-stream vectors")
    return _tensor_source(source, unit, target, full, "one vector per layer")


def _tensor_source(
    source: Tensor, unit: tuple[int, ...], target: PromptBatch, full: bool, what: str
) -> tuple[Tensor, None, str]:
    """A user's tensor source: one ``unit`` for all prompts, one per prompt, or one per position."""
    src = source.detach().cpu()
    n = len(unit)
    if tuple(src.shape) == unit:
        return (src.view(1, 1, *unit) if full else src.view(1, *unit)), None, "vector"
    if src.ndim == n + 1 and tuple(src.shape[1:]) == unit and src.shape[0] == len(target):
        return (src[:, None] if full else src), None, "per-prompt"
    if full and src.ndim == n + 2 and tuple(src.shape[2:]) == unit and tuple(src.shape[:2]) == tuple(target.tokens.shape):
        return src, None, "per-position"
    raise ConfigError(
        f"source tensor of shape {tuple(src.shape)} does not fit: expected {unit} ({what}), "
        f"({len(target)}, *{unit}) (per prompt)"
        + (f" or ({len(target)}, {target.tokens.shape[1]}, *{unit}) (per position)" if full else "")
    )


def _source_rows(src: Tensor, rows: Tensor) -> Tensor:
    """The source rows of a chunk (a broadcast source is expanded, not copied)."""
    return src.expand(len(rows), *src.shape[1:]) if src.shape[0] == 1 else src[rows]


# ---------------------------------------------------------------------------------------
# the two engines
# ---------------------------------------------------------------------------------------
def _plain_chunk(
    model: Any,
    sub: PromptBatch,
    metric: Metric,
    setters: Sequence[tuple[str, Setter]],
    show_progress: bool | None,
) -> tuple[Tensor, Tensor]:
    """Baseline and patched metric values of one chunk of prompts, full forwards."""
    n_prompts, n_cols = sub.tokens.shape
    with torch.no_grad():
        logits = hooks.forward(model, sub.tokens, sub.attention_mask)
        baseline = evaluate_metric(metric, hooks.gather_positions(logits, sub.last_pos), sub)
    del logits
    out = torch.full((len(setters), n_prompts), float("nan"))
    per_forward = max(1, TOKENS_PER_FORWARD // (n_prompts * n_cols))
    groups = [list(range(i, min(i + per_forward, len(setters)))) for i in range(0, len(setters), per_forward)]
    for group in progress(groups, desc="patching (plain)", enabled=show_progress):
        copies = len(group)
        by_hook: dict[str, list[tuple[int, Setter]]] = defaultdict(list)
        for slot, i in enumerate(group):
            by_hook[setters[i][0]].append((slot, setters[i][1]))

        def make_hook(items: list[tuple[int, Setter]], copies: int = copies) -> hooks.HookFn:
            def patch(act: Tensor, hook: Any) -> Tensor:
                act = act.clone()
                view = act.view(copies, n_prompts, *act.shape[1:])
                for slot, setter in items:
                    view[slot] = setter(view[slot])
                return act

            return patch

        fwd = [(name, make_hook(items)) for name, items in by_hook.items()]
        with torch.no_grad():
            logits = hooks.forward(model, sub.tokens.repeat(copies, 1), sub.attention_mask.repeat(copies, 1), fwd)
            last = hooks.gather_positions(logits, sub.last_pos.repeat(copies)).view(copies, n_prompts, -1)
        del logits
        for slot, i in enumerate(group):
            out[i] = evaluate_metric(metric, last[slot], sub)
    return baseline, out


@dataclasses.dataclass
class _FastSpec:
    """Per-variant inputs of the fast engine for one chunk of prompts (variant order)."""

    start: Tensor  # [variant]
    head: Tensor  # [variant], -1 for residual patches
    values: Tensor | None  # [batch, variant, d_head]
    init: Tensor | None  # [batch, variant, d_model]


def _fast_chunk(
    runner: LastPositionRunner,
    sub: PromptBatch,
    metric: Metric,
    spec: _FastSpec,
    show_progress: bool | None,
) -> tuple[Tensor, Tensor]:
    """Baseline and patched metric values of one chunk of prompts, fast engine."""
    state = runner.prefix_state(sub.tokens, sub.attention_mask, sub.last_pos)
    baseline = evaluate_metric(metric, state.logits, sub)
    n_prompts = len(sub)
    device = state.resid_pre.device
    # Variant 0 is an unpatched control row; the others are sorted by their start block.
    order = torch.argsort(spec.start, stable=True)
    start = torch.cat([torch.zeros(1, dtype=torch.long), spec.start[order]])
    head = torch.cat([torch.full((1,), -1, dtype=torch.long), spec.head[order]])
    values = init = None
    if spec.values is not None:
        values = torch.cat([spec.values.new_zeros(n_prompts, 1, spec.values.shape[-1]), spec.values[:, order]], 1)
        values = values.to(device)
    if spec.init is not None:
        init = torch.cat([state.resid_pre[:, :1].cpu().to(spec.init.dtype), spec.init[:, order]], 1).to(device)
    out = torch.full((len(order), n_prompts), float("nan"))
    per_pass = max(1, FAST_ROWS // n_prompts)
    spans = [(lo, min(lo + per_pass, len(start))) for lo in range(0, len(start), per_pass)]
    for lo, hi in progress(spans, desc="patching (fast)", enabled=show_progress):
        variants = Variants(
            start_layer=start[lo:hi],
            patch_head=head[lo:hi],
            patch_values=None if values is None else values[:, lo:hi],
            init=None if init is None else init[:, lo:hi],
        )
        for where, logits in runner.run(state, variants):
            for j in range(where.start, where.stop):
                k, row_logits = lo + j, logits[:, j - where.start]
                if k == 0:
                    err = control_error(state, row_logits)
                    if err > CONTROL_TOLERANCE:
                        raise _ControlMismatch(f"{err:.2e}")
                    continue
                out[order[k - 1]] = evaluate_metric(metric, row_logits, sub)
    return baseline, out


def _run(
    model: Any,
    target: PromptBatch,
    variants: Sequence[_Variant],
    metric: Metric,
    *,
    method: str,
    fast_ok: bool,
    make_setter: Callable[[_Variant, Tensor, PromptBatch], Setter],
    make_fast: Callable[[Sequence[_Variant], Tensor], _FastSpec] | None,
    batch_size: int | None,
    show_progress: bool | None,
) -> tuple[Tensor, Tensor, str]:
    """Patched ``[variant, batch]`` and baseline ``[batch]`` metric values, and the engine used."""
    if len(target) == 0:
        raise ConfigError("the target batch is empty")
    runner = None
    if method != "plain" and fast_ok and make_fast is not None:
        runner = last_position_runner(model)
    if method == "fast" and runner is None:
        raise ConfigError(
            "method='fast' does not apply here: it needs positions='last', a hook-free model and a supported "
            "architecture (TransformerBridge with native or HF rotary attention); use method='auto' or 'plain'."
        )
    n = len(target)
    patched = torch.full((len(variants), n), float("nan"))
    baseline = torch.full((n,), float("nan"))
    for rows in row_chunks(n, auto_batch_size(target, batch_size)):
        sub = take_rows(target, rows)
        chunk_metric = metric_for_rows(metric, rows, n)
        if runner is not None:
            assert make_fast is not None
            try:
                base, vals = _fast_chunk(runner, sub, chunk_metric, make_fast(variants, rows), show_progress)
            except _ControlMismatch as e:
                if method == "fast":
                    raise ModelContractError(
                        f"the fast engine does not reproduce this model's forward pass (control row differs by "
                        f"{e}); use method='plain'."
                    ) from None
                warnings.warn(
                    f"fast patching engine disagrees with this model's forward ({e}); using the plain engine",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return _run(
                    model,
                    target,
                    variants,
                    metric,
                    method="plain",
                    fast_ok=False,
                    make_setter=make_setter,
                    make_fast=None,
                    batch_size=batch_size,
                    show_progress=show_progress,
                )
        else:
            setters = [(v.hook, make_setter(v, rows, sub)) for v in variants]
            base, vals = _plain_chunk(model, sub, chunk_metric, setters, show_progress)
        baseline[rows] = base
        patched[:, rows] = vals
    return patched, baseline, "fast" if runner is not None else "plain"


# ---------------------------------------------------------------------------------------
# head sweeps
# ---------------------------------------------------------------------------------------
def _head_list(heads: Sequence[tuple[int, int]] | None, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    if heads is None:
        return [(l, h) for l in range(n_layers) for h in range(n_heads)]
    out = []
    for item in heads:
        l, h = (int(x) for x in item)
        if not (0 <= l < n_layers and 0 <= h < n_heads):
            raise ConfigError(f"head {(l, h)} out of range: the model has {n_layers} layers x {n_heads} heads")
        out.append((l, h))
    if len(set(out)) != len(out):
        raise ConfigError("heads has duplicates")
    return out


def head_sweep(
    model: Any,
    target: PromptBatch,
    source: PromptBatch | Tensor | Mapping[str, Tensor],
    *,
    metric: str | Metric = "prob",
    positions: str = "last",
    heads: Sequence[tuple[int, int]] | None = None,
    batch_size: int | None = None,
    method: str = "auto",
    show_progress: bool | None = None,
) -> HeadPatchingResult:
    """Patch each head's output (``hook_z``) alone from ``source`` into ``target``.

    Args:
        target: the prompts that are run (e.g. corrupted prompts, for denoising).
        source: where the patched values come from: a :class:`PromptBatch` paired row by
            row with ``target`` (its ``hook_z`` is cached; same token shape for
            ``positions="each"``/``"all"``), a tensor ``[n_layers, n_heads, d_head]`` (the
            same vector for every prompt, e.g. a mean over prompts: function-vector AIE)
            or ``[batch, n_layers, n_heads, d_head]`` (or per position,
            ``[batch, pos, ...]``), or a cache mapping ``hooks.z(l)`` to ``[batch, pos,
            n_heads, d_head]``.
        metric: a callable ``(logits [batch, d_vocab], batch) -> [batch]`` or a name:
            ``"prob"``, ``"logprob"``, ``"accuracy"``, ``"logit_diff"``, ``"kl"``.
        positions: ``"last"`` (each prompt's ``last_pos``), ``"each"`` (every column,
            one at a time) or ``"all"`` (every column at once).
        heads: ``(layer, head)`` pairs to sweep (default: all).
        batch_size: prompts per chunk (default: as many as fit ~1k tokens).
        method: ``"auto"``, ``"fast"`` (last position only) or ``"plain"``.
    """
    s = hooks.spec(model)
    _choice(positions, ("last", "each", "all"), "positions")
    _choice(method, ("auto", "fast", "plain"), "method")
    if method == "fast" and positions != "last":
        raise ConfigError("method='fast' patches the answer position only; use positions='last' or method='plain'")
    head_list = _head_list(heads, s.n_layers, s.n_heads)
    src, src_logits, src_desc = _head_source(model, source, target, positions, show_progress)
    src_logprobs = None if src_logits is None else torch.log_softmax(src_logits, -1)
    metric_fn = resolve_metric(metric, target, source, src_logprobs)
    n_cols = target.tokens.shape[1]
    if positions == "each":
        variants = [_Variant(hooks.z(l), l, h, t, l) for l, h in head_list for t in range(n_cols)]
    else:
        variants = [_Variant(hooks.z(l), l, h, None, l) for l, h in head_list]

    def make_setter(v: _Variant, rows: Tensor, sub: PromptBatch) -> Setter:
        vals = _source_rows(src, rows)
        assert v.head is not None
        if positions == "last":
            unit = vals[:, v.layer, v.head]
            return lambda z: _set_last(z, sub.last_pos, unit, v.head)
        if positions == "each":
            column = vals[:, v.column if vals.shape[1] > 1 else 0, v.layer, v.head]
            return lambda z: _set_column(z, v.column, column, v.head)
        everywhere = vals[:, :, v.layer, v.head]
        return lambda z: _set_all(z, everywhere, v.head)

    def make_fast(vs: Sequence[_Variant], rows: Tensor) -> _FastSpec:
        vals = _source_rows(src, rows)
        layers = torch.tensor([v.layer for v in vs])
        head_idx = torch.tensor([v.head for v in vs])
        return _FastSpec(start=layers.clone(), head=head_idx, values=vals[:, layers, head_idx], init=None)

    patched, baseline, used = _run(
        model,
        target,
        variants,
        metric_fn,
        method=method,
        fast_ok=positions == "last",
        make_setter=make_setter,
        make_fast=make_fast,
        batch_size=batch_size,
        show_progress=show_progress,
    )
    shape = (s.n_layers, s.n_heads) + ((n_cols,) if positions == "each" else ()) + (len(target),)
    grid = torch.full(shape, float("nan"))
    for i, v in enumerate(variants):
        key = (v.layer, v.head) if v.column is None else (v.layer, v.head, v.column)
        grid[key] = patched[i]
    reference = None if src_logits is None else evaluate_metric(metric_fn, src_logits, target)
    return HeadPatchingResult(
        model=model_name(model),
        metric=metric_name(metric),
        positions=positions,
        method=used,
        source=src_desc,
        patched=grid,
        baseline=baseline,
        reference=reference,
        effect=(grid - baseline).mean(-1),
    )


def _set_last(act: Tensor, last_pos: Tensor, values: Tensor, head: int | None) -> Tensor:
    rows = torch.arange(act.shape[0], device=act.device)
    pos = last_pos.to(act.device)
    if head is None:
        act[rows, pos] = values.to(act)
    else:
        act[rows, pos, head] = values.to(act)
    return act


def _set_column(act: Tensor, column: int | None, values: Tensor, head: int | None) -> Tensor:
    if head is None:
        act[:, column] = values.to(act)
    else:
        act[:, column, head] = values.to(act)
    return act


def _set_all(act: Tensor, values: Tensor, head: int | None) -> Tensor:
    if head is None:
        act[:, :] = values.to(act)
    else:
        act[:, :, head] = values.to(act)
    return act


# ---------------------------------------------------------------------------------------
# residual-stream sweeps
# ---------------------------------------------------------------------------------------
def resid_sweep(
    model: Any,
    target: PromptBatch,
    source: PromptBatch | Tensor,
    *,
    metric: str | Metric = "prob",
    positions: str = "last",
    layers: Sequence[int] | None = None,
    hook: str = "resid_pre",
    batch_size: int | None = None,
    method: str = "auto",
    show_progress: bool | None = None,
) -> ResidPatchingResult:
    """Patch one layer's residual stream (``hook``) from ``source`` into ``target``.

    ``source`` is a :class:`PromptBatch` paired with ``target``, or a tensor
    ``[n_layers, d_model]`` / ``[batch, n_layers, d_model]`` (or per position for
    ``positions="each"``: ``[batch, pos, n_layers, d_model]``). ``positions`` is ``"last"``
    (each prompt's ``last_pos``) or ``"each"`` (every column, one at a time). ``hook`` is
    ``"resid_pre"``, ``"resid_mid"`` or ``"resid_post"``. Other arguments as in
    :func:`head_sweep`.
    """
    s = hooks.spec(model)
    _choice(positions, ("last", "each"), "positions")
    _choice(method, ("auto", "fast", "plain"), "method")
    _choice(hook, tuple(_RESID_HOOKS), "hook")
    if method == "fast" and (positions != "last" or hook == "resid_mid"):
        raise ConfigError("method='fast' needs positions='last' and hook 'resid_pre' or 'resid_post'")
    layer_list = list(range(s.n_layers)) if layers is None else [int(l) for l in layers]
    if any(not 0 <= l < s.n_layers for l in layer_list) or len(set(layer_list)) != len(layer_list):
        raise ConfigError(f"layers must be distinct layer indices in [0, {s.n_layers})")
    src, src_logits, src_desc = _resid_source(model, source, target, positions, hook, show_progress)
    src_logprobs = None if src_logits is None else torch.log_softmax(src_logits, -1)
    metric_fn = resolve_metric(metric, target, source, src_logprobs)
    n_cols = target.tokens.shape[1]
    offset = 1 if hook == "resid_post" else 0
    name = _RESID_HOOKS[hook]
    if positions == "each":
        variants = [_Variant(name(l), l, None, t, l + offset) for l in layer_list for t in range(n_cols)]
    else:
        variants = [_Variant(name(l), l, None, None, l + offset) for l in layer_list]

    def make_setter(v: _Variant, rows: Tensor, sub: PromptBatch) -> Setter:
        vals = _source_rows(src, rows)
        if positions == "last":
            unit = vals[:, v.layer]
            return lambda r: _set_last(r, sub.last_pos, unit, None)
        column = vals[:, v.column if vals.shape[1] > 1 else 0, v.layer]
        return lambda r: _set_column(r, v.column, column, None)

    def make_fast(vs: Sequence[_Variant], rows: Tensor) -> _FastSpec:
        vals = _source_rows(src, rows)
        layer_idx = torch.tensor([v.layer for v in vs])
        return _FastSpec(
            start=torch.tensor([v.start for v in vs]),
            head=torch.full((len(vs),), -1, dtype=torch.long),
            values=None,
            init=vals[:, layer_idx],
        )

    patched, baseline, used = _run(
        model,
        target,
        variants,
        metric_fn,
        method=method,
        fast_ok=positions == "last" and hook != "resid_mid",
        make_setter=make_setter,
        make_fast=make_fast,
        batch_size=batch_size,
        show_progress=show_progress,
    )
    shape = (s.n_layers,) + ((n_cols,) if positions == "each" else ()) + (len(target),)
    grid = torch.full(shape, float("nan"))
    for i, v in enumerate(variants):
        grid[(v.layer,) if v.column is None else (v.layer, v.column)] = patched[i]
    reference = None if src_logits is None else evaluate_metric(metric_fn, src_logits, target)
    return ResidPatchingResult(
        model=model_name(model),
        metric=metric_name(metric),
        positions=positions,
        method=used,
        source=src_desc,
        hook=hook,
        patched=grid,
        baseline=baseline,
        reference=reference,
        effect=(grid - baseline).mean(-1),
    )
