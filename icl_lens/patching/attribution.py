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

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError, ModelContractError
from icl_lens.core.models import model_name
from icl_lens.patching.activations import row_chunks, take_rows
from icl_lens.patching.engine import CONTROL_TOLERANCE, control_error, last_position_runner
from icl_lens.patching.metrics import Metric, evaluate_metric, metric_for_rows, metric_name, resolve_metric
from icl_lens.patching.results import HeadPatchingResult, PatchingAgreement, ResidPatchingResult
from icl_lens.patching.sweeps import _RESID_HOOKS, _choice, _head_source, _resid_source, _source_rows
from icl_lens.prompting.prompts import PromptBatch

TOKENS_PER_BACKWARD = 512
"""Token budget of one full forward + backward (activations are kept for the backward)."""


def _full_gradients(
    model: Any, sub: PromptBatch, metric: Metric, names: Sequence[str]
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


def _fast_or_none(model: Any, method: str, positions: str, usable: bool = True) -> Any:
    _choice(method, ("auto", "fast", "plain"), "method")
    runner = last_position_runner(model) if method != "plain" and positions == "last" and usable else None
    if method == "fast" and runner is None:
        raise ConfigError("method='fast' needs positions='last', a hook-free model and a supported architecture")
    return runner


def _chunk_size(target: PromptBatch, batch_size: int | None, fast: bool) -> int:
    if batch_size is not None:
        return int(batch_size)
    budget = 1024 if fast else TOKENS_PER_BACKWARD
    return max(1, budget // max(1, target.tokens.shape[1]))


def attribution_head_sweep(
    model: Any,
    target: PromptBatch,
    source: PromptBatch | Tensor | Mapping[str, Tensor],
    *,
    metric: str | Metric = "prob",
    positions: str = "last",
    batch_size: int | None = None,
    method: str = "auto",
    show_progress: bool | None = None,
) -> HeadPatchingResult:
    """Attribution-patching estimate of :func:`~icl_lens.patching.head_sweep` for every head.

    Same arguments and result type as ``head_sweep`` (``method="attribution"`` in the
    result): ``patched = baseline + grad_z . (z_source - z_target)`` per prompt.
    ``method`` picks the gradient engine: ``"fast"`` (answer position only, through the
    cached prefix), ``"plain"`` (a full backward pass) or ``"auto"``.
    """
    s = hooks.spec(model)
    _choice(positions, ("last", "each", "all"), "positions")
    runner = _fast_or_none(model, method, positions)
    src, src_logits, src_desc = _head_source(model, source, target, positions, show_progress)
    metric_fn = resolve_metric(metric, target, source, None if src_logits is None else src_logits.log_softmax(-1))
    n, n_cols = len(target), target.tokens.shape[1]
    shape = (s.n_layers, s.n_heads) + ((n_cols,) if positions == "each" else ())
    attribution = torch.zeros(*shape, n)
    baseline = torch.zeros(n)
    names = [hooks.z(l) for l in range(s.n_layers)]
    for rows in row_chunks(n, _chunk_size(target, batch_size, runner is not None)):
        sub = take_rows(target, rows)
        m = metric_for_rows(metric_fn, rows, n)
        vals = _source_rows(src, rows).float()
        if runner is not None:
            state = runner.prefix_state(sub.tokens, sub.attention_mask, sub.last_pos)
            values, logits, z, grad_z, _, _ = runner.gradients(state, lambda lg, m=m, sub=sub: m(lg, sub).float())
            _check_control(state, logits, method)
            # [batch, layer, head]: sum over d_head of grad * (source - target).
            attribution[..., rows] = ((vals.to(z) - z) * grad_z).sum(-1).permute(1, 2, 0).cpu()
        else:
            values, acts, grads = _full_gradients(model, sub, m, names)
            for l in range(s.n_layers):
                z, g = acts[l].float(), grads[l].float()  # [batch, pos, head, d_head]
                if positions == "last":
                    at = torch.arange(len(sub))
                    diff = vals[:, l].to(z) - z[at, sub.last_pos]
                    attribution[l][..., rows] = (diff * g[at, sub.last_pos]).sum(-1).T.cpu()
                else:
                    per_col = ((vals[:, :, l].to(z) - z) * g).sum(-1)  # [batch, pos, head]
                    if positions == "each":
                        attribution[l][..., rows] = per_col.permute(2, 1, 0).cpu()
                    else:
                        attribution[l][..., rows] = per_col.sum(1).T.cpu()
        baseline[rows] = values.cpu()
    reference = None if src_logits is None else evaluate_metric(metric_fn, src_logits, target)
    return HeadPatchingResult(
        model=model_name(model),
        metric=metric_name(metric),
        positions=positions,
        method="attribution",
        source=src_desc,
        patched=baseline + attribution,
        baseline=baseline,
        reference=reference,
        effect=attribution.mean(-1),
    )


def attribution_resid_sweep(
    model: Any,
    target: PromptBatch,
    source: PromptBatch | Tensor,
    *,
    metric: str | Metric = "prob",
    positions: str = "last",
    hook: str = "resid_pre",
    batch_size: int | None = None,
    method: str = "auto",
    show_progress: bool | None = None,
) -> ResidPatchingResult:
    """Attribution-patching estimate of :func:`~icl_lens.patching.resid_sweep` for every layer."""
    s = hooks.spec(model)
    _choice(positions, ("last", "each"), "positions")
    _choice(hook, tuple(_RESID_HOOKS), "hook")
    runner = _fast_or_none(model, method, positions, usable=hook != "resid_mid")
    src, src_logits, src_desc = _resid_source(model, source, target, positions, hook, show_progress)
    metric_fn = resolve_metric(metric, target, source, None if src_logits is None else src_logits.log_softmax(-1))
    n, n_cols = len(target), target.tokens.shape[1]
    shape = (s.n_layers,) + ((n_cols,) if positions == "each" else ())
    attribution = torch.zeros(*shape, n)
    baseline = torch.zeros(n)
    names = [_RESID_HOOKS[hook](l) for l in range(s.n_layers)]
    offset = 1 if hook == "resid_post" else 0
    for rows in row_chunks(n, _chunk_size(target, batch_size, runner is not None)):
        sub = take_rows(target, rows)
        m = metric_for_rows(metric_fn, rows, n)
        vals = _source_rows(src, rows).float()
        if runner is not None:
            state = runner.prefix_state(sub.tokens, sub.attention_mask, sub.last_pos)
            values, logits, _, _, resid, grad_r = runner.gradients(state, lambda lg, m=m, sub=sub: m(lg, sub).float())
            _check_control(state, logits, method)
            r, g = resid[:, offset : offset + s.n_layers], grad_r[:, offset : offset + s.n_layers]
            attribution[..., rows] = ((vals.to(r) - r) * g).sum(-1).T.cpu()
        else:
            values, acts, grads = _full_gradients(model, sub, m, names)
            for l in range(s.n_layers):
                r, g = acts[l].float(), grads[l].float()  # [batch, pos, d_model]
                if positions == "last":
                    at = torch.arange(len(sub))
                    attribution[l, rows] = (
                        ((vals[:, l].to(r) - r[at, sub.last_pos]) * g[at, sub.last_pos]).sum(-1).cpu()
                    )
                else:
                    attribution[l][:, rows] = ((vals[:, :, l].to(r) - r) * g).sum(-1).T.cpu()
        baseline[rows] = values.cpu()
    reference = None if src_logits is None else evaluate_metric(metric_fn, src_logits, target)
    return ResidPatchingResult(
        model=model_name(model),
        metric=metric_name(metric),
        positions=positions,
        method="attribution",
        source=src_desc,
        hook=hook,
        patched=baseline + attribution,
        baseline=baseline,
        reference=reference,
        effect=attribution.mean(-1),
    )


def _check_control(state: Any, logits: Tensor, method: str) -> None:
    err = control_error(state, logits)
    if err > CONTROL_TOLERANCE:
        raise ModelContractError(
            f"the fast gradient engine does not reproduce this model's forward pass (log-probs differ by "
            f"{err:.2e}); pass method='plain'."
        )


def _ranks(x: Tensor) -> Tensor:
    """Ranks with ties averaged (as in Spearman's rho)."""
    order = torch.argsort(x)
    _, inverse, counts = torch.unique_consecutive(x[order], return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts
    ranks = torch.empty_like(x)
    ranks[order] = (first + (counts - 1) / 2.0)[inverse].to(x.dtype)
    return ranks


def _pearson(a: Tensor, b: Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum()) / denom if denom > 0 else float("nan")


def patching_agreement(
    approx: HeadPatchingResult | ResidPatchingResult | Tensor,
    exact: HeadPatchingResult | ResidPatchingResult | Tensor,
    k: int = 10,
    *,
    by: str = "abs",
) -> PatchingAgreement:
    """Agreement of an approximate sweep with an exact one, over the cells both computed.

    Spearman and Pearson correlations of the effects, and the overlap of the top-``k``
    cells (by absolute effect with ``by="abs"``, by signed effect with ``by="signed"``).
    """
    _choice(by, ("abs", "signed"), "by")

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
        spearman=_pearson(_ranks(a), _ranks(b)),
        pearson=_pearson(a, b),
        top_k_overlap=len(top_a & top_b) / kk,
        k=kk,
        n=len(a),
        approx_method=a_name,
        exact_method=b_name,
        approx=a.float(),
        exact=b.float(),
    )
