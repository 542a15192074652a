"""What a sweep patches in, and the result it fills: the source, the metric, the result class.

A user gives a sweep its source in one of several forms: a :class:`PromptBatch` paired row
by row with the target (its activations are cached), a cache mapping ``hook_z`` names to
activations, or a tensor (one vector for every prompt, one per prompt, or one per
position). :class:`SweepInputs` turns any of them into per-prompt values with one layout,
``[1|batch, (1|pos,) n_layers, *unit]`` (``unit`` is ``(n_heads, d_head)`` for heads,
``(d_model,)`` for a residual stream), resolves the metric against it, and builds the
result. Exact sweeps and attribution patching share it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HeadHook, HookedModel
from icl_lens.core.models import model_name
from icl_lens.core.options import choices
from icl_lens.patching.activations import activations_and_logits, auto_batch_size
from icl_lens.patching.metrics import Metric, evaluate_metric, metric_name, resolve_metric
from icl_lens.patching.options import MetricName, PatchSite
from icl_lens.patching.results import HeadPatchingResult, ResidPatchingResult
from icl_lens.prompting.prompts import PromptBatch

Source = PromptBatch | Tensor | Mapping[str, Tensor]


@dataclasses.dataclass(frozen=True)
class SweepInputs:
    """A sweep's target, its source values and its metric, ready for either engine.

    ``hook`` is the activation patched: a per-head one (``z``, ``q``, ``k``, ``v``) or a
    ``d_model``-wide one of a block.
    """

    target: PromptBatch
    values: Tensor
    """Source values, ``[1|batch, (1|pos,) n_layers, *unit]`` (on the CPU)."""
    source_logits: Tensor | None
    """The source run's logits at ``last_pos`` (PromptBatch sources only)."""
    description: str
    metric: Metric
    metric_label: str
    positions: str
    hook: PatchSite

    @property
    def per_head(self) -> bool:
        """Whether the patched activation has a head axis."""
        return self.hook in choices(HeadHook)

    def rows(self, rows: Tensor) -> Tensor:
        """Source values for a chunk of target rows (a shared source is expanded, not copied)."""
        v = self.values
        return v.expand(len(rows), *v.shape[1:]) if v.shape[0] == 1 else v[rows]

    def result(
        self, model: HookedModel, *, method: str, patched: Tensor, baseline: Tensor, effect: Tensor
    ) -> HeadPatchingResult | ResidPatchingResult:
        """The result of the sweep, with the source run's own metric as ``reference``."""
        reference = None
        if self.source_logits is not None:
            reference = evaluate_metric(self.metric, self.source_logits, self.target)
        what: dict[str, Any] = dict(model=model_name(model), metric=self.metric_label, source=self.description)
        how = dict(positions=self.positions, method=method)
        numbers = dict(patched=patched, baseline=baseline, reference=reference, effect=effect)
        if self.per_head:
            return HeadPatchingResult(hook=self.hook, **what, **how, **numbers)
        return ResidPatchingResult(hook=self.hook, **what, **how, **numbers)


def sweep_inputs(
    model: HookedModel,
    target: PromptBatch,
    source: Source,
    *,
    metric: MetricName | Metric,
    positions: str,
    hook: PatchSite = "z",
    show_progress: bool | None = None,
) -> SweepInputs:
    """Read ``source`` for a sweep of ``target`` patching ``hook`` and resolve ``metric``."""
    if len(target) == 0:
        raise ConfigError("the target batch is empty")
    s = hooks.spec(model)
    full = positions != "last"
    per_head = hook in choices(HeadHook)
    unit = (s.heads_of(hook), s.d_head) if per_head else (s.d_model,)  # type: ignore[arg-type]
    logits = None
    if isinstance(source, PromptBatch):
        values, logits = _batch_values(model, source, target, full, hook, show_progress)
        description = f"batch:{source.kind}"
    elif isinstance(source, Mapping) and per_head:
        values, description = _cache_values(source, hook, s.n_layers, target, full), "cache"
    elif isinstance(source, Tensor):
        values, description = _tensor_values(source, (s.n_layers, *unit), target, full)
    else:
        kinds = f"a PromptBatch, a cache of hook_{hook} activations, or a tensor of per-head values"
        raise ConfigError(
            "source must be " + (kinds if per_head else "a PromptBatch or a tensor of residual-stream vectors")
        )
    source_logprobs = None if logits is None else torch.log_softmax(logits, -1)
    return SweepInputs(
        target=target,
        values=values,
        source_logits=logits,
        description=description,
        metric=resolve_metric(metric, target, source, source_logprobs),
        metric_label=metric_name(metric),
        positions=positions,
        hook=hook,
    )


def _batch_values(
    model: HookedModel, source: PromptBatch, target: PromptBatch, full: bool, hook: PatchSite, show: bool | None
) -> tuple[Tensor, Tensor]:
    if len(source) != len(target):
        raise ConfigError(f"source has {len(source)} prompts and target {len(target)}; they are paired row by row.")
    if full and source.tokens.shape != target.tokens.shape:
        raise ConfigError(
            "positions='each'/'all' patch column by column, so source and target need the same token "
            f"shape; got {tuple(source.tokens.shape)} and {tuple(target.tokens.shape)}."
        )
    return activations_and_logits(
        model,
        source,
        hook,
        positions="all" if full else "last",
        batch_size=auto_batch_size(source, None),
        show_progress=show,
    )


def _cache_values(
    cache: Mapping[str, Tensor], hook: PatchSite, n_layers: int, target: PromptBatch, full: bool
) -> Tensor:
    """``hook`` of every layer from a cache, as ``[batch, (pos,) n_layers, heads, d_head]``."""
    names = [hooks.head_hook(hook, l) for l in range(n_layers)]  # type: ignore[arg-type]
    missing = [n for n in names if n not in cache]
    if missing:
        raise ConfigError(
            f"the source cache lacks {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}: a head sweep "
            f"needs hook_{hook} of all {n_layers} layers. Cache them all, e.g. "
            f"run_with_cache(..., names_filter=lambda n: n.endswith('hook_{hook}'))."
        )
    per_layer = [torch.as_tensor(cache[n]).detach().cpu() for n in names]
    acts = torch.stack(per_layer, dim=2)  # [batch, pos, n_layers, heads, d_head]
    if acts.shape[:2] != target.tokens.shape:
        raise ConfigError(
            f"cached hook_{hook} has shape {tuple(acts.shape[:2])}, the target {tuple(target.tokens.shape)}"
        )
    return acts if full else hooks.gather_positions(acts, target.last_pos)


def _tensor_values(source: Tensor, unit: tuple[int, ...], target: PromptBatch, full: bool) -> tuple[Tensor, str]:
    """A user's tensor: one ``unit`` for all prompts, one per prompt, or one per position."""
    src = source.detach().cpu()
    n = len(unit)
    if tuple(src.shape) == unit:
        return (src.view(1, 1, *unit) if full else src.view(1, *unit)), "vector"
    if src.ndim == n + 1 and tuple(src.shape[1:]) == unit and src.shape[0] == len(target):
        return (src[:, None] if full else src), "per-prompt"
    if (
        full
        and src.ndim == n + 2
        and tuple(src.shape[2:]) == unit
        and tuple(src.shape[:2]) == tuple(target.tokens.shape)
    ):
        return src, "per-position"
    what = "one vector per head" if len(unit) == 3 else "one vector per layer"
    raise ConfigError(
        f"source tensor of shape {tuple(src.shape)} does not fit: expected {unit} ({what}), "
        f"({len(target)}, *{unit}) (per prompt)"
        + (f" or ({len(target)}, {target.tokens.shape[1]}, *{unit}) (per position)" if full else "")
    )
