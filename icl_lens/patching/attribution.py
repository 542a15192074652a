"""Attribution patching: a first-order estimate of every patch from one backward pass.

For a patch that replaces activation ``a`` (target run) with ``a'`` (source), the change
of the metric is estimated by ``grad_a(metric) . (a' - a)`` (Nanda 2023, "Attribution
patching"; Syed et al. 2023). One forward and one backward pass of the target give the
estimate for every head (and every residual stream) at once.

It is an approximation: exact where the metric is linear in the activation (e.g. a
patch of the last layer's residual stream measured by a logit difference), and poor where
a patch moves an activation far along a curved function (saturated softmax in attention
or in the metric; large patches in early layers). Always check it against an exact sweep
on a sample with :func:`patching_agreement`.

For ``positions="last"`` the gradient at the answer position depends only on the answer
position's own computation (the prefix is causally upstream), so with the fast engine's
cached prefix the backward pass runs through one row per prompt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import BlockHook, HeadHook, HookedModel
from icl_lens.core.options import check_choice
from icl_lens.patching.activations import row_chunks, take_rows
from icl_lens.patching.attribution_qk import qk_engine, qk_fixed_chunk
from icl_lens.patching.engine import LastPositionEngine
from icl_lens.patching.metrics import Metric, metric_for_rows
from icl_lens.patching.options import Method, MetricName, PatchSite, Positions, RankBy, ResidPositions
from icl_lens.patching.results import HeadPatchingResult, PatchingAgreement, ResidPatchingResult
from icl_lens.patching.runner import ChunkRunner, answer_gradients, sweep_runner
from icl_lens.patching.sources import Source, SweepInputs, sweep_inputs
from icl_lens.patching.sweeps import resid_cells
from icl_lens.prompting.prompts import PromptBatch

TOKENS_PER_BACKWARD = 512
"""Token budget of one full forward + backward (activations are kept for the backward)."""
TOKENS_PER_FAST_BACKWARD = 1024
"""Token budget of a chunk whose backward runs through the answer position only."""


def attribution_head_sweep(
    model: HookedModel,
    target: PromptBatch,
    source: Source,
    *,
    metric: MetricName | Metric = "prob",
    positions: Positions = "last",
    hook: HeadHook = "z",
    qk_fix: bool = False,
    batch_size: int | None = None,
    method: Method = "auto",
    show_progress: bool | None = None,
) -> HeadPatchingResult:
    """Attribution-patching estimate of :func:`~icl_lens.patching.head_sweep` for every head.

    Same arguments and result type as ``head_sweep`` (``method="attribution"`` in the
    result, ``"attribution+qk"`` with ``qk_fix``): ``patched = baseline + grad . (a_source -
    a_target)`` per prompt. ``qk_fix=True`` recomputes, through the softmax, the attention
    pattern that the patch changes (AtP*, Kramár et al. 2024; see
    :mod:`icl_lens.patching.attribution_qk`), for ``positions="last"`` or ``"each"``.
    ``method`` picks the gradient engine: ``"fast"`` (answer position only, through the
    cached prefix: ``positions="last"``, ``hook="z"``, no ``qk_fix``), ``"plain"`` (a full
    backward pass) or ``"auto"`` (fast where it applies, plain for any chunk of prompts
    whose control row disagrees).
    """
    runner = _runner(model, method, positions, hook, qk_fix)
    inputs = sweep_inputs(
        model, target, source, metric=metric, positions=positions, hook=hook, show_progress=show_progress
    )
    return _attribution(model, inputs, runner, batch_size, qk_fix)  # type: ignore[return-value]


def attribution_resid_sweep(
    model: HookedModel,
    target: PromptBatch,
    source: PromptBatch | Tensor,
    *,
    metric: MetricName | Metric = "prob",
    positions: ResidPositions = "last",
    hook: BlockHook = "resid_pre",
    qk_fix: bool = False,
    exact_changed_tokens: bool = False,
    batch_size: int | None = None,
    method: Method = "auto",
    show_progress: bool | None = None,
) -> ResidPatchingResult:
    """Attribution-patching estimate of :func:`~icl_lens.patching.resid_sweep` for every layer
    (and column, with ``positions="each"``); ``qk_fix`` as in :func:`attribution_head_sweep`.

    ``exact_changed_tokens=True`` (``positions="each"``, a :class:`PromptBatch` source)
    computes the cells of every column whose token differs between ``target`` and
    ``source`` exactly, with :func:`~icl_lens.patching.resid_sweep`, and estimates the rest.
    Replacing a column's residual stream where the token itself differs swaps what the
    column *is*: a first-order estimate has no grip on that (on SmolLM2's antonym sweep its
    Spearman correlation with the exact effects is about 0 at those columns, 0.93 at the
    others; docs/patching.md). The exact cells cost about ``changed / n_columns`` of the
    exact sweep. The result's ``method`` ends in ``+exact-changed``.
    """
    if exact_changed_tokens and (positions != "each" or not isinstance(source, PromptBatch)):
        raise ConfigError(
            "exact_changed_tokens compares the target's and the source's tokens column by column: "
            "use positions='each' and a PromptBatch source"
        )
    runner = _runner(model, method, positions, hook, qk_fix)
    inputs = sweep_inputs(
        model, target, source, metric=metric, positions=positions, hook=hook, show_progress=show_progress
    )
    result: ResidPatchingResult = _attribution(model, inputs, runner, batch_size, qk_fix)  # type: ignore[assignment]
    if not exact_changed_tokens:
        return result
    assert isinstance(source, PromptBatch)
    changed = (target.tokens != source.tokens).any(0).nonzero().flatten().tolist()
    patched = result.patched.clone()
    if changed:
        # The same inputs: the source's activations are not computed again.
        exact_runner = sweep_runner(model, method, positions="each", hook=hook)
        layers = range(hooks.spec(model).n_layers)
        exact = resid_cells(model, inputs, layers, changed, exact_runner, batch_size, show_progress)
        patched[:, changed] = exact.patched[:, changed]
    effect = (patched - result.baseline).mean(-1)
    return dataclasses.replace(result, method=f"{result.method}+exact-changed", patched=patched, effect=effect)


def _runner(model: HookedModel, method: Method, positions: str, hook: PatchSite, qk_fix: bool) -> ChunkRunner[Any]:
    runner = sweep_runner(model, method, positions=positions, hook=hook, attribution=True)
    if qk_fix:
        if positions not in ("last", "each"):
            raise ConfigError("qk_fix estimates patches of one column at a time: use positions='last' or 'each'")
        if method == "fast":
            raise ConfigError("qk_fix runs a full backward pass (method='plain' or 'auto'), not the fast engine")
        runner = ChunkRunner(model, "plain")
    return runner


def _attribution(
    model: HookedModel, inputs: SweepInputs, runner: ChunkRunner[Any], batch_size: int | None, qk_fix: bool
) -> HeadPatchingResult | ResidPatchingResult:
    """``grad . (source - target)`` for every cell, chunk by chunk of prompts."""
    s = hooks.spec(model)
    target, hook = inputs.target, inputs.hook
    n, n_cols = len(target), target.tokens.shape[1]
    cells = (s.n_layers,) + ((s.heads_of(hook),) if inputs.per_head else ())  # type: ignore[arg-type]
    attribution = torch.zeros(*cells, *((n_cols,) if inputs.positions == "each" else ()), n)
    baseline = torch.zeros(n)
    names = [hooks.head_hook(hook, l) if inputs.per_head else hooks.block_hook(hook, l) for l in range(s.n_layers)]  # type: ignore[arg-type]
    budget = TOKENS_PER_BACKWARD if runner.engine is None else TOKENS_PER_FAST_BACKWARD
    size = batch_size if batch_size is not None else max(1, budget // max(1, n_cols))
    engine = qk_engine(model) if qk_fix else None
    for rows in row_chunks(n, size):
        if engine is not None:
            sub = take_rows(target, rows)
            values = inputs.rows(rows)
            source = values[:, None] if inputs.positions == "last" else values
            metric = metric_for_rows(inputs.metric, rows, n)
            baseline[rows], attribution[..., rows] = qk_fixed_chunk(engine, sub, metric, hook, source, inputs.positions)
        else:
            baseline[rows], attribution[..., rows] = _chunk(model, inputs, runner, rows, names)
    return inputs.result(
        model,
        method="attribution+qk" if qk_fix else "attribution",
        patched=baseline + attribution,
        baseline=baseline,
        effect=attribution.mean(-1),
    )


def _chunk(
    model: HookedModel, inputs: SweepInputs, runner: ChunkRunner[Any], rows: Tensor, names: list[str]
) -> tuple[Tensor, Tensor]:
    """Metric values ``[batch]`` and estimates ``[*cells, batch]`` of one chunk of prompts."""
    sub = take_rows(inputs.target, rows)
    metric = metric_for_rows(inputs.metric, rows, len(inputs.target))
    values = inputs.rows(rows).float()
    n_layers = len(names)

    def fast(engine: LastPositionEngine) -> tuple[Tensor, Tensor]:
        state = engine.prefix_state(sub.tokens, sub.attention_mask, sub.last_pos)
        out, z, grad_z, resid, grad_resid = answer_gradients(engine, state, lambda lg: metric(lg, sub).float())
        if inputs.per_head:
            return out, _estimate(values, z, grad_z, "last")
        # residual l enters block l, so block l's resid_post is residual l + 1
        at = slice(1, n_layers + 1) if inputs.hook == "resid_post" else slice(0, n_layers)
        return out, _estimate(values, resid[:, at], grad_resid[:, at], "last")

    def plain() -> tuple[Tensor, Tensor]:
        out, acts, grads = _full_gradients(model, sub, metric, names)
        act, grad = torch.stack(acts, dim=2), torch.stack(grads, dim=2)  # [batch, pos, layer, ...]
        if inputs.positions == "last":
            act, grad = hooks.gather_positions(act, sub.last_pos), hooks.gather_positions(grad, sub.last_pos)
        return out, _estimate(values, act, grad, inputs.positions)

    return runner.run(fast, plain)


def _estimate(source: Tensor, act: Tensor, grad: Tensor, positions: str) -> Tensor:
    """``grad . (source - act)`` over the last axis, batch axis moved last.

    ``act`` and ``grad`` are ``[batch, layer, ...]`` (``positions="last"``) or ``[batch,
    pos, layer, ...]``; the estimate is ``[layer, ..., batch]``, with a ``pos`` axis before
    the batch for ``"each"`` and summed over columns for ``"all"``. The products are summed in
    float32 whatever the model's dtype.
    """
    act, grad = act.float(), grad.float()
    per_cell = ((source.to(act) - act) * grad).sum(-1)
    if positions == "all":
        per_cell = per_cell.sum(1)
    elif positions == "each":
        per_cell = per_cell.movedim(1, -1)
    return per_cell.movedim(0, -1).cpu()


def _full_gradients(
    model: HookedModel, sub: PromptBatch, metric: Metric, names: Sequence[str]
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Metric values, activations and gradients of ``names`` at every column (full backward)."""
    deltas: dict[str, Tensor] = {}
    acts: dict[str, Tensor] = {}

    def watch(name: str) -> hooks.HookFn:
        def add_delta(act: Tensor, hook: Any) -> Tensor:
            acts[name] = act.detach()
            # A zero added to the activation: its gradient is the activation's gradient.
            deltas[name] = torch.zeros_like(act, requires_grad=True)
            return act + deltas[name]

        return add_delta

    with torch.enable_grad():
        logits = hooks.forward(model, sub.tokens, sub.attention_mask, [(n, watch(n)) for n in names])
        values = torch.as_tensor(metric(hooks.gather_positions(logits, sub.last_pos), sub))
        if values.shape != (len(sub),):
            raise ConfigError(f"metric returned shape {tuple(values.shape)}, expected ({len(sub)},)")
        grads = torch.autograd.grad(values.float().sum(), [deltas[n] for n in names], allow_unused=True)
    grads_out = [torch.zeros_like(acts[n]) if g is None else g for n, g in zip(names, grads, strict=True)]
    return values.detach().float().cpu(), [acts[n] for n in names], grads_out


def patching_agreement(
    approx: HeadPatchingResult | ResidPatchingResult | Tensor,
    exact: HeadPatchingResult | ResidPatchingResult | Tensor,
    k: int = 10,
    *,
    by: RankBy = "abs",
) -> PatchingAgreement:
    """Agreement of an approximate sweep with an exact one, over the cells both computed.

    Spearman and Pearson correlations of the effects (``scipy.stats``; ties get their
    average rank), and the overlap of the top-``k`` cells (by absolute effect with
    ``by="abs"``, by signed effect with ``by="signed"``).
    """
    check_choice(by, RankBy, "by")

    def effect(r: Any) -> tuple[Tensor, str]:
        if isinstance(r, Tensor):
            return r.detach().float().flatten().cpu(), "tensor"
        return r.effect.float().flatten(), r.method

    a, a_name = effect(approx)
    b, b_name = effect(exact)
    if a.shape != b.shape:
        raise ConfigError(f"cannot compare effects of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    keep = torch.isfinite(a) & torch.isfinite(b)
    a, b = a[keep].double(), b[keep].double()
    if len(a) < 2:
        raise ConfigError("fewer than two cells were computed by both sweeps")
    kk = min(int(k), len(a))
    score_a, score_b = (a.abs(), b.abs()) if by == "abs" else (a, b)
    top_a = set(torch.topk(score_a, kk).indices.tolist())
    top_b = set(torch.topk(score_b, kk).indices.tolist())
    return PatchingAgreement(
        spearman=_correlation(stats.spearmanr, a, b),
        pearson=_correlation(stats.pearsonr, a, b),
        top_k_overlap=len(top_a & top_b) / kk,
        k=kk,
        n=len(a),
        approx_method=a_name,
        exact_method=b_name,
        approx=a.float(),
        exact=b.float(),
    )


def _correlation(test: Any, a: Tensor, b: Tensor) -> float:
    """A scipy correlation, NaN (without scipy's warning) when either side is constant."""
    x, y = a.numpy(), b.numpy()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(test(x, y)[0])
