"""Exact activation-patching sweeps over attention heads and the residual stream.

Each patched variant (one head, or one layer's residual stream, at some positions) is
evaluated with a metric per prompt. Two exact paths compute the same numbers:

* ``"plain"``: one full forward per variant (:mod:`icl_lens.patching.plain`);
* ``"fast"``: the prompt runs once and only what the patch can reach is recomputed: the
  answer position from the block where the patch applies (:mod:`icl_lens.patching.engine`,
  head outputs and residual streams at the answer position), or the columns from the
  patched one on (:mod:`icl_lens.patching.position_engine`, every other case).

``method="auto"`` takes the fast engine where it applies and the plain one elsewhere,
chunk by chunk of prompts (:mod:`icl_lens.patching.runner`); the result records which
ran. Denoising and noising are the same call with the roles swapped:
``head_sweep(model, target=corrupted, source=clean)`` patches clean activations into the
corrupted run (denoising); ``target=clean, source=corrupted`` is noising.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import BlockHook, HeadHook, HookedModel
from icl_lens.patching.ablation import normalize_heads
from icl_lens.patching.activations import auto_batch_size, row_chunks, take_rows
from icl_lens.patching.engine import LastPositionEngine
from icl_lens.patching.metrics import Metric, evaluate_metric, metric_for_rows
from icl_lens.patching.options import Method, MetricName, Positions, ResidPositions
from icl_lens.patching.plain import Setter, plain_chunk, setter
from icl_lens.patching.position_engine import (
    ALL_COLUMNS,
    ANSWER_COLUMN,
    PositionEngine,
    PositionPatches,
    patched_logits,
)
from icl_lens.patching.results import HeadPatchingResult, ResidPatchingResult
from icl_lens.patching.runner import ChunkRunner, Patches, patched_answer_logits, sweep_runner
from icl_lens.patching.sources import Source, SweepInputs, sweep_inputs
from icl_lens.prompting.prompts import PromptBatch


@dataclasses.dataclass(frozen=True)
class _Variant:
    """One patched copy of the target run."""

    hook: str  # the hook patched (plain path)
    layer: int
    head: int | None  # None: a d_model-wide patch
    column: int | None  # a fixed column (positions="each"); None: last_pos or all columns
    start: int  # fast engine: the block this variant starts entering

    @property
    def cell(self) -> tuple[int, ...]:
        """Where the variant's values sit in the result grid (before the prompt axis)."""
        return (
            self.layer,
            *(() if self.head is None else (self.head,)),
            *(() if self.column is None else (self.column,)),
        )


def head_sweep(
    model: HookedModel,
    target: PromptBatch,
    source: Source,
    *,
    metric: MetricName | Metric = "prob",
    positions: Positions = "last",
    heads: Sequence[tuple[int, int]] | None = None,
    hook: HeadHook = "z",
    batch_size: int | None = None,
    method: Method = "auto",
    show_progress: bool | None = None,
) -> HeadPatchingResult:
    """Patch one head's activation (``hook_z`` by default) alone from ``source`` into ``target``.

    Args:
        target: the prompts that are run (e.g. corrupted prompts, for denoising).
        source: where the patched values come from: a :class:`PromptBatch` paired row by
            row with ``target`` (its activations are cached; same token shape for
            ``positions="each"``/``"all"``), a tensor ``[n_layers, heads, d_head]`` (the
            same vector for every prompt, e.g. a mean over prompts: function-vector AIE)
            or ``[batch, n_layers, heads, d_head]`` (or per position,
            ``[batch, pos, ...]``), or a cache mapping the hook names (``hooks.z(l)``, ...)
            to ``[batch, pos, heads, d_head]``.
        metric: a callable ``(logits [batch, d_vocab], batch) -> [batch]`` or a name:
            ``"prob"``, ``"logprob"``, ``"accuracy"``, ``"logit_diff"``, ``"kl"``.
        positions: ``"last"`` (each prompt's ``last_pos``), ``"each"`` (every column,
            one at a time) or ``"all"`` (every column at once).
        heads: ``(layer, head)`` pairs to sweep (default: all).
        hook: ``"z"`` (a head's output before ``W_O``), ``"q"`` (its query), ``"k"`` or
            ``"v"`` (a key or value head: ``n_kv_heads`` of them under grouped-query
            attention, and ``heads`` then counts key/value heads). Queries and keys are
            patched before the rotary embedding, as the hooks hold them.
        batch_size: prompts per chunk (default: as many as fit ~1k tokens).
        method: ``"auto"``, ``"fast"`` or ``"plain"``; see :mod:`icl_lens.patching.runner`.
    """
    s = hooks.spec(model)
    runner = sweep_runner(model, method, positions=positions, hook=hook)
    n_heads = s.heads_of(hook)
    head_list = (
        [(l, h) for l in range(s.n_layers) for h in range(n_heads)]
        if heads is None
        else normalize_heads(model, heads, n_heads=n_heads)
    )
    if heads is not None and len(head_list) != len(heads):
        raise ConfigError("heads has duplicates")
    inputs = sweep_inputs(
        model, target, source, metric=metric, positions=positions, hook=hook, show_progress=show_progress
    )
    columns: Sequence[int | None] = range(target.tokens.shape[1]) if positions == "each" else [None]
    variants = [_Variant(hooks.head_hook(hook, l), l, h, t, l) for l, h in head_list for t in columns]
    grid_shape = (s.n_layers, n_heads) + ((target.tokens.shape[1],) if positions == "each" else ())
    return _sweep(model, inputs, variants, grid_shape, runner, batch_size, show_progress)  # type: ignore[return-value]


def resid_sweep(
    model: HookedModel,
    target: PromptBatch,
    source: PromptBatch | Tensor,
    *,
    metric: MetricName | Metric = "prob",
    positions: ResidPositions = "last",
    layers: Sequence[int] | None = None,
    columns: Sequence[int] | None = None,
    hook: BlockHook = "resid_pre",
    batch_size: int | None = None,
    method: Method = "auto",
    show_progress: bool | None = None,
) -> ResidPatchingResult:
    """Patch one layer's residual stream (or what its attention or MLP adds to it) from ``source``.

    ``source`` is a :class:`PromptBatch` paired with ``target``, or a tensor
    ``[n_layers, d_model]`` / ``[batch, n_layers, d_model]`` (or per position for
    ``positions="each"``: ``[batch, pos, n_layers, d_model]``). ``positions`` is ``"last"``
    (each prompt's ``last_pos``) or ``"each"`` (every column, one at a time: the layer x
    position map of causal tracing). ``hook`` is ``"resid_pre"``, ``"resid_mid"``,
    ``"resid_post"``, ``"attn_out"`` (the attention layer's output) or ``"mlp_out"``.
    ``columns`` limits ``positions="each"`` to those columns (e.g. the subject's tokens);
    cells not computed are NaN. Other arguments as in :func:`head_sweep`.
    """
    s = hooks.spec(model)
    runner = sweep_runner(model, method, positions=positions, hook=hook)
    layer_list = list(range(s.n_layers)) if layers is None else [int(l) for l in layers]
    if any(not 0 <= l < s.n_layers for l in layer_list) or len(set(layer_list)) != len(layer_list):
        raise ConfigError(f"layers must be distinct layer indices in [0, {s.n_layers})")
    if hook in ("resid_mid", "mlp_out") and s.attn_only:
        raise ConfigError(f"hook={hook!r} needs a model with MLPs; this one is attention-only")
    cols = _column_list(columns, positions, target.tokens.shape[1])
    inputs = sweep_inputs(
        model, target, source, metric=metric, positions=positions, hook=hook, show_progress=show_progress
    )
    return resid_cells(model, inputs, layer_list, cols, runner, batch_size, show_progress)


def resid_cells(
    model: HookedModel,
    inputs: SweepInputs,
    layers: Sequence[int],
    columns: Sequence[int | None],
    runner: ChunkRunner[Any],
    batch_size: int | None,
    show_progress: bool | None,
) -> ResidPatchingResult:
    """:func:`resid_sweep` over ``layers`` x ``columns`` of prepared inputs (whose source has run)."""
    offset = 1 if inputs.hook == "resid_post" else 0
    n_columns = inputs.target.tokens.shape[1]
    variants = [_Variant(hooks.block_hook(inputs.hook, l), l, None, t, l + offset) for l in layers for t in columns]  # type: ignore[arg-type]
    grid_shape = (hooks.spec(model).n_layers,) + ((n_columns,) if inputs.positions == "each" else ())
    return _sweep(model, inputs, variants, grid_shape, runner, batch_size, show_progress)  # type: ignore[return-value]


def _column_list(columns: Sequence[int] | None, positions: str, n_columns: int) -> Sequence[int | None]:
    """The columns a sweep patches one at a time (``[None]``: no per-column axis)."""
    if columns is None:
        return range(n_columns) if positions == "each" else [None]
    if positions != "each":
        raise ConfigError(f"columns= selects columns of positions='each', not positions={positions!r}")
    chosen = [int(c) for c in columns]
    if not chosen or len(set(chosen)) != len(chosen) or any(not 0 <= c < n_columns for c in chosen):
        raise ConfigError(f"columns must be distinct column indices in [0, {n_columns}), got {list(columns)}")
    return chosen


def _sweep(
    model: HookedModel,
    inputs: SweepInputs,
    variants: Sequence[_Variant],
    grid_shape: tuple[int, ...],
    runner: ChunkRunner[Any],
    batch_size: int | None,
    show_progress: bool | None,
) -> HeadPatchingResult | ResidPatchingResult:
    """Every variant's metric per prompt, chunk by chunk of prompts, into a result."""
    target = inputs.target
    n = len(target)
    patched = torch.full((len(variants), n), float("nan"))
    baseline = torch.full((n,), float("nan"))
    for rows in row_chunks(n, auto_batch_size(target, batch_size)):
        baseline[rows], patched[:, rows] = _chunk(model, inputs, variants, runner, rows, show_progress)
    grid = torch.full((*grid_shape, n), float("nan"))
    for i, v in enumerate(variants):
        grid[v.cell] = patched[i]
    return inputs.result(model, method=runner.used, patched=grid, baseline=baseline, effect=(grid - baseline).mean(-1))


def _chunk(
    model: HookedModel,
    inputs: SweepInputs,
    variants: Sequence[_Variant],
    runner: ChunkRunner[Any],
    rows: Tensor,
    show_progress: bool | None,
) -> tuple[Tensor, Tensor]:
    """Baseline ``[batch]`` and patched ``[variant, batch]`` metric values of one chunk of prompts."""
    sub = take_rows(inputs.target, rows)
    metric = metric_for_rows(inputs.metric, rows, len(inputs.target))
    values = inputs.rows(rows)

    def fast(engine: LastPositionEngine | PositionEngine) -> tuple[Tensor, Tensor]:
        if isinstance(engine, PositionEngine):
            return _position_chunk(engine, sub, metric, _position_patches(inputs, variants, values), show_progress)
        return _fast_chunk(engine, sub, metric, _patches(variants, values), show_progress)

    def plain() -> tuple[Tensor, Tensor]:
        setters = [(v.hook, _setter(v, values, sub, inputs.positions)) for v in variants]
        return plain_chunk(model, sub, metric, setters, show_progress)

    return runner.run(fast, plain)


def _setter(v: _Variant, values: Tensor, sub: PromptBatch, positions: str) -> Setter:
    """The plain path's patch for variant ``v``; ``values`` is ``[batch, (1|pos,) n_layers, *unit]``."""
    unit = (v.layer,) if v.head is None else (v.layer, v.head)
    if positions == "last":
        return setter(values[(slice(None), *unit)], head=v.head, at=sub.last_pos)
    if positions == "each":
        column = v.column if values.shape[1] > 1 else 0
        return setter(values[(slice(None), column, *unit)], head=v.head, at=v.column)
    return setter(values[(slice(None), slice(None), *unit)], head=v.head, at=None)


def _patches(variants: Sequence[_Variant], values: Tensor) -> Patches:
    """The fast engine's patches (answer position): head outputs, or residual streams."""
    layers = torch.tensor([v.layer for v in variants], dtype=torch.long)
    start = torch.tensor([v.start for v in variants], dtype=torch.long)
    if variants and variants[0].head is not None:
        heads = torch.tensor([v.head for v in variants], dtype=torch.long)
        return Patches(start=start, head=heads, values=values[:, layers, heads])
    return Patches(start=start, head=torch.full((len(variants),), -1, dtype=torch.long), init=values[:, layers])


def _fast_chunk(
    engine: LastPositionEngine, sub: PromptBatch, metric: Metric, patches: Patches, show_progress: bool | None
) -> tuple[Tensor, Tensor]:
    """Baseline ``[batch]`` and patched ``[variant, batch]`` metric values of one chunk, fast engine."""
    state = engine.prefix_state(sub.tokens, sub.attention_mask, sub.last_pos)
    out = torch.full((len(patches.start), len(sub)), float("nan"))
    for index, logits in patched_answer_logits(engine, state, patches, show_progress=show_progress):
        for j, k in enumerate(index.tolist()):
            out[k] = evaluate_metric(metric, logits[:, j], sub)
    return evaluate_metric(metric, state.logits, sub), out


def _position_patches(inputs: SweepInputs, variants: Sequence[_Variant], values: Tensor) -> PositionPatches:
    """The position engine's patches; ``values`` is ``[batch, (1|pos,) n_layers, *unit]``."""
    every = ALL_COLUMNS if inputs.positions == "all" else ANSWER_COLUMN
    return PositionPatches(
        site=inputs.hook,
        layer=torch.tensor([v.layer for v in variants], dtype=torch.long),
        head=torch.tensor([-1 if v.head is None else v.head for v in variants], dtype=torch.long),
        column=torch.tensor([every if v.column is None else v.column for v in variants], dtype=torch.long),
        source=values[:, None] if inputs.positions == "last" else values,
    )


def _position_chunk(
    engine: PositionEngine, sub: PromptBatch, metric: Metric, patches: PositionPatches, show_progress: bool | None
) -> tuple[Tensor, Tensor]:
    """Baseline ``[batch]`` and patched ``[variant, batch]`` metric values of one chunk, position engine."""
    state = engine.prompt_state(sub.tokens, sub.attention_mask, sub.last_pos, patches.site)
    out = torch.full((len(patches.layer), len(sub)), float("nan"))
    for index, logits in patched_logits(engine, state, patches, show_progress=show_progress):
        for j, k in enumerate(index.tolist()):
            out[k] = evaluate_metric(metric, logits[:, j], sub)
    return evaluate_metric(metric, state.logits, sub), out
