"""AtP*'s correction for attention saturation (Kramár et al. 2024), for attribution patching.

Attribution patching estimates a patch to first order, ``grad . (a' - a)``. Where the
patch changes the queries or keys of an attention layer, that first order goes through the
softmax's slope, which vanishes where attention is saturated: a patch that moves a head's
attention from one column to another is estimated to do almost nothing. AtP* recomputes
the attention pattern the patch produces exactly, through the softmax, and keeps the first
order only after it: ``sum_{t,s} dM/dA[t,s] (A'[t,s] - A[t,s])``.

With ``qk_fix=True``, for a patch at column ``p``:

* a query (``q``) or key (``k``) head: the pattern of its layer is recomputed with the new
  query (row ``p``) or key (column ``p``, seen by every later row): AtP*'s estimate;
* a value head: first order is exact up to the pattern (``z`` is linear in ``v``);
* every other site: the patched block is computed exactly on column ``p`` (one column),
  giving the change ``delta`` of the residual stream entering the next attention layer;
  there the new query, key and value of column ``p`` are computed exactly, the pattern
  through the softmax, and the estimate is ``dM/d(attn_out)[p] . delta + dM/dv[p] . (v' -
  v) + sum dM/dA (A' - A)``. Later layers stay first-order. A patch after the last block
  is ``dM/d(resid)[p] . delta``.

Everything comes from one forward and one backward pass of the target prompts (gradients of
the pattern, the attention output and the values of every layer), plus, per patch, one
column through the patched block and the next layer's projections.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.forward import model_family
from icl_lens.core.hooks import HookedModel
from icl_lens.patching.engine import BlockEngine
from icl_lens.patching.metrics import Metric
from icl_lens.prompting.prompts import PromptBatch

ROWS = 512
"""Patched columns (prompts x cells) estimated together."""

_HEAD_SITES = ("z", "q", "k", "v")


def qk_engine(model: HookedModel) -> BlockEngine:
    """The model's attention parts for the QK fix, or a :class:`ConfigError` saying why not."""
    family = model_family(model)
    if family is None or hooks.count_hooks(model) != 0:
        raise ConfigError(
            "qk_fix recomputes attention patterns with the model's own modules: it needs a TransformerBridge with "
            "native or HF rotary attention and no hooks attached; use qk_fix=False here."
        )
    return BlockEngine(model, family)


@dataclasses.dataclass
class _Run:
    """Values and gradients of the target run that the estimates read (per layer lists)."""

    values: dict[str, list[Tensor]]
    grads: dict[str, list[Tensor]]
    metric: Tensor
    real: Tensor
    position_ids: Tensor


def qk_fixed_chunk(
    engine: BlockEngine, sub: PromptBatch, metric: Metric, site: str, source: Tensor, positions: str
) -> tuple[Tensor, Tensor]:
    """Metric values ``[batch]`` and AtP* estimates ``[n_layers, (heads,) (pos,) batch]`` of one chunk.

    ``source`` is ``[1|batch, 1|pos, n_layers, *unit]``; ``positions`` is ``"last"`` or ``"each"``.
    """
    s = engine.spec
    run = _forward_backward(engine, sub, metric, site)
    n, n_cols = sub.tokens.shape
    n_heads = s.heads_of(site) if site in _HEAD_SITES else 1  # type: ignore[arg-type]
    device = run.metric.device
    if positions == "each":
        head, col, row = torch.meshgrid(
            torch.arange(n_heads), torch.arange(n_cols), torch.arange(n), indexing="ij"
        )  # cell order: [head, pos, batch]
    else:
        head, row = torch.meshgrid(torch.arange(n_heads), torch.arange(n), indexing="ij")
        col = sub.last_pos[row]
    head, col, row = head.flatten().to(device), col.flatten().to(device), row.flatten().to(device)
    out = torch.zeros(s.n_layers, len(head), dtype=torch.float64)
    cache: dict[int, dict[str, Tensor]] = {}
    for layer in range(s.n_layers):
        keep = run.real[row, col].nonzero().flatten()  # a padding column reaches nothing
        for lo in range(0, len(keep), ROWS):
            i = keep[lo : lo + ROWS]
            src = _source_at(source, row[i], col[i], layer, head[i] if site in _HEAD_SITES else None)
            est = _estimate(engine, run, cache, site, layer, row[i], col[i], head[i], src)
            # a patch with the target's own value changes nothing: exactly zero, not rounding
            same = (src == _target_at(run, site, layer, row[i], col[i], head[i])).all(-1)
            out[layer, i.cpu()] = est.masked_fill(same, 0.0).cpu()
    shape = (s.n_layers,) + ((n_heads,) if site in _HEAD_SITES else ()) + ((n_cols,) if positions == "each" else ())
    return run.metric.cpu(), out.float().view(*shape, n)


def _source_at(source: Tensor, row: Tensor, col: Tensor, layer: int, head: Tensor | None) -> Tensor:
    src = source.to(row.device)
    r = row if src.shape[0] > 1 else torch.zeros_like(row)
    c = col if src.shape[1] > 1 else torch.zeros_like(col)
    return (src[r, c, layer] if head is None else src[r, c, layer, head]).float()


def _target_at(run: _Run, site: str, layer: int, row: Tensor, col: Tensor, head: Tensor) -> Tensor:
    """The target run's own value of the patched activation."""
    v = run.values
    if site in _HEAD_SITES:
        return v[site][layer][row, col, head]
    if site == "resid_post":
        return v["resid_pre"][layer + 1][row, col]
    return v[site][layer][row, col]


def _forward_backward(engine: BlockEngine, sub: PromptBatch, metric: Metric, site: str) -> _Run:
    """One forward and backward of the target prompts, keeping what the estimates read.

    ``values[kind][l]`` and ``grads[kind][l]`` per layer; ``values["resid_pre"][n_layers]``
    and ``grads["resid_pre"][n_layers]`` are the residual leaving the last block.
    """
    s = engine.spec
    name_of = {
        "resid_pre": hooks.resid_pre,
        "resid_mid": hooks.resid_mid,
        "q": hooks.q,
        "k": hooks.k,
        "v": hooks.v,
        "z": hooks.z,
        "pattern": hooks.pattern,
        "attn_out": hooks.attn_out,
        "mlp_out": hooks.mlp_out,
    }
    kinds = ["resid_pre", "q", "k", "v", "pattern", "attn_out"] + ([] if s.attn_only else ["resid_mid"])
    kinds += [site] if site in ("z", "mlp_out") else []
    keep_value = {"resid_pre", "resid_mid", "q", "k", "v", site}
    keep_grad = {"pattern", "attn_out", "v"}
    values: dict[str, list[Any]] = {kind: [None] * (s.n_layers + 1) for kind in kinds}
    deltas: dict[str, list[Any]] = {kind: [None] * (s.n_layers + 1) for kind in kinds}

    def watch(kind: str, layer: int, grad: bool) -> hooks.HookFn:
        def hook(act: Tensor, hook: Any) -> Tensor:
            if kind in keep_value or layer == s.n_layers:
                values[kind][layer] = act.detach()
            if not grad:
                return act
            # a zero added to the activation: its gradient is the activation's gradient
            deltas[kind][layer] = torch.zeros_like(act, requires_grad=True)
            return act + deltas[kind][layer]

        return hook

    fwd = [(name_of[kind](l), watch(kind, l, kind in keep_grad)) for l in range(s.n_layers) for kind in kinds]
    fwd.append((hooks.resid_post(s.n_layers - 1), watch("resid_pre", s.n_layers, True)))
    with torch.enable_grad():
        logits = hooks.forward(engine.model, sub.tokens, sub.attention_mask, fwd)
        out = torch.as_tensor(metric(hooks.gather_positions(logits, sub.last_pos), sub))
        if out.shape != (len(sub),):
            raise ConfigError(f"metric returned shape {tuple(out.shape)}, expected ({len(sub)},)")
        wrt = [(kind, l) for kind in kinds for l in range(s.n_layers + 1) if deltas[kind][l] is not None]
        found = torch.autograd.grad(out.float().sum(), [deltas[k][l] for k, l in wrt], allow_unused=True)
    grads: dict[str, list[Any]] = {kind: [None] * (s.n_layers + 1) for kind in kinds}
    for (kind, l), g in zip(wrt, found, strict=True):
        grads[kind][l] = torch.zeros_like(deltas[kind][l]) if g is None else g
    if s.attn_only:  # without an MLP, the residual between attention and MLP is the block's output
        values["resid_mid"] = values["resid_pre"][1:] + [None]
    real = sub.attention_mask.to(logits.device).bool()
    return _Run(
        values=values,
        grads=grads,
        metric=out.detach().float(),
        real=real,
        position_ids=(real.long().cumsum(-1) - 1).clamp(min=0),
    )


def _layer_cache(engine: BlockEngine, run: _Run, cache: dict[int, dict[str, Tensor]], layer: int) -> dict[str, Tensor]:
    """Rotated queries and keys, and the softmax pieces (float64) of one layer's pattern."""
    if layer in cache:
        return cache[layer]
    s = engine.spec
    q = engine.rotate(run.values["q"][layer].transpose(1, 2), run.position_ids)  # [batch, heads, pos, d_head]
    k = engine.rotate(run.values["k"][layer].transpose(1, 2), run.position_ids)
    n, _, t, d = q.shape
    scores = torch.einsum("bkgtd,bksd->bkgts", q.view(n, s.n_kv_heads, s.group_size, t, d), k).reshape(n, -1, t, t)
    scores = engine.scale(layer, scores).double()
    cols = torch.arange(t, device=q.device)
    sees = (cols[None, :] <= cols[:, None])[None] & (
        run.real[:, None, :] | torch.eye(t, dtype=torch.bool, device=q.device)[None]
    )
    scores = scores.masked_fill(~sees[:, None], float("-inf"))
    top = scores.amax(-1, keepdim=True)
    weights = torch.exp(scores - top)  # unnormalized softmax, 0 where masked
    grad = run.grads["pattern"][layer].double()
    cache.clear()  # one layer at a time: estimates for layer l read layer l or l + 1
    cache[layer] = dict(
        q=q,
        k=k,
        top=top[..., 0],
        weights=weights,
        total=weights.sum(-1),
        pattern=weights / weights.sum(-1, keepdim=True),
        grad=grad,
        weighted=(grad * weights).sum(-1),
    )
    return cache[layer]


def _estimate(
    engine: BlockEngine,
    run: _Run,
    cache: dict[int, dict[str, Tensor]],
    site: str,
    layer: int,
    row: Tensor,
    col: Tensor,
    head: Tensor,
    src: Tensor,
) -> Tensor:
    """AtP* estimates ``[k]`` of patches of ``site`` at ``(layer, head, col)`` of prompts ``row``."""
    s = engine.spec
    v = run.values
    if site == "v":
        return (run.grads["v"][layer][row, col, head].double() * (src - v["v"][layer][row, col, head]).double()).sum(-1)
    if site in ("q", "k"):
        c = _layer_cache(engine, run, cache, layer)
        pos = run.position_ids[row, col][:, None]
        new = engine.rotate(src[:, None, None, :], pos)[:, 0, 0]  # [k, d_head]
        if site == "q":
            q_new = c["q"][row, :, col].clone()
            q_new[torch.arange(len(row)), head] = new
            return _row_term(engine, c, run, layer, row, col, q_new, c["k"][row, :, col])
        k_new = c["k"][row, :, col].clone()
        k_new[torch.arange(len(row)), head] = new
        return _column_term(engine, c, run, layer, row, col, k_new, first=0)
    # the residual stream entering the first attention layer the patch reaches
    post = v["resid_pre"]
    if site == "resid_pre":
        target, delta = layer, src - post[layer][row, col]
    elif site == "resid_post":
        target, delta = layer + 1, src - post[layer + 1][row, col]
    elif site == "mlp_out":
        target, delta = layer + 1, src - (post[layer + 1] - v["resid_mid"][layer])[row, col]
    else:
        mid = v["resid_mid"][layer][row, col]
        if site == "z":
            w_o = hooks.W_O(engine.model, layer)[head]  # [k, d_head, d_model]
            change = src - v["z"][layer][row, col, head]
            mid_new, mlp_input = mid + torch.einsum("kd,kdm->km", change.to(w_o), w_o), None
        elif site == "attn_out":
            mid_new, mlp_input = post[layer][row, col] + src, None
        else:  # resid_mid: a bridge's hook_resid_mid is the MLP's input
            mid_new, mlp_input = mid, src
        target, delta = layer + 1, _leave_block(engine, layer, mid_new, mlp_input) - post[layer + 1][row, col]
    delta = delta.to(post[0])
    if target == s.n_layers:
        return (run.grads["resid_pre"][target][row, col].double() * delta.double()).sum(-1)
    return _through_attention(engine, run, cache, target, row, col, delta)


def _leave_block(engine: BlockEngine, layer: int, mid: Tensor, mlp_input: Tensor | None) -> Tensor:
    if engine.spec.attn_only:
        return mid
    block = engine.blocks[layer]
    read = mid if mlp_input is None else mlp_input.to(mid)
    return mid + block.mlp(block.ln2(read[None]))[0]


def _through_attention(
    engine: BlockEngine,
    run: _Run,
    cache: dict[int, dict[str, Tensor]],
    layer: int,
    row: Tensor,
    col: Tensor,
    delta: Tensor,
) -> Tensor:
    """Estimate of a change ``delta`` of the residual entering block ``layer`` at ``col``."""
    s = engine.spec
    block, attn = engine.blocks[layer], engine.blocks[layer].attn
    h = block.ln1((run.values["resid_pre"][layer][row, col] + delta)[None])
    k = len(row)
    pos = run.position_ids[row, col][:, None]
    q_new = engine.rotate(attn.q(h).view(k, s.n_heads, 1, s.d_head), pos)[:, :, 0]
    k_new = engine.rotate(attn.k(h).view(k, s.n_kv_heads, 1, s.d_head), pos)[:, :, 0]
    v_new = attn.v(h).view(k, s.n_kv_heads, s.d_head)
    c = _layer_cache(engine, run, cache, layer)
    skip = (run.grads["attn_out"][layer][row, col].double() * delta.double()).sum(-1)
    value = (run.grads["v"][layer][row, col].double() * (v_new - run.values["v"][layer][row, col]).double()).sum(
        (-1, -2)
    )
    pattern = _row_term(engine, c, run, layer, row, col, q_new, k_new)
    pattern = pattern + _column_term(engine, c, run, layer, row, col, k_new, first=1)
    return skip + value + pattern


def _row_term(
    engine: BlockEngine,
    c: dict[str, Tensor],
    run: _Run,
    layer: int,
    row: Tensor,
    col: Tensor,
    q_new: Tensor,
    k_new: Tensor,
) -> Tensor:
    """``sum dM/dA (A' - A)`` over the query row ``col``, with its query (and own key) replaced."""
    s = engine.spec
    k, t = len(row), run.real.shape[1]
    q_new = q_new.view(k, s.n_kv_heads, s.group_size, s.d_head)
    scores = torch.einsum("nkgd,nktd->nkgt", q_new, c["k"][row]).reshape(k, s.n_heads, t)
    own = (q_new * k_new[:, :, None]).sum(-1).reshape(k, s.n_heads)
    scores = scores.scatter(2, col[:, None, None].expand(k, s.n_heads, 1), own[..., None])
    scores = engine.scale(layer, scores).double()
    cols = torch.arange(t, device=col.device)
    sees = (cols[None] <= col[:, None]) & (run.real[row] | (cols[None] == col[:, None]))
    new = torch.softmax(scores.masked_fill(~sees[:, None], float("-inf")), -1)
    return ((new - c["pattern"][row, :, col]) * c["grad"][row, :, col]).sum((-1, -2))


def _column_term(
    engine: BlockEngine,
    c: dict[str, Tensor],
    run: _Run,
    layer: int,
    row: Tensor,
    col: Tensor,
    k_new: Tensor,
    first: int,
) -> Tensor:
    """``sum dM/dA (A' - A)`` over the query rows from ``col + first`` on, with key ``col`` replaced."""
    s = engine.spec
    k, t = len(row), run.real.shape[1]
    queries = c["q"][row].view(k, s.n_kv_heads, s.group_size, t, s.d_head)
    new = torch.einsum("nkgtd,nkd->nkgt", queries, k_new).reshape(k, s.n_heads, t)
    new = engine.scale(layer, new).double()
    old_weight = c["weights"][row, :, :, col]  # [k, heads, rows]
    grad_at = c["grad"][row, :, :, col]
    new_weight = torch.exp((new - c["top"][row]).clamp(max=700.0))
    total = c["total"][row] - old_weight + new_weight
    weighted = c["weighted"][row] - grad_at * old_weight + grad_at * new_weight
    change = weighted / total - c["weighted"][row] / c["total"][row]
    rows = torch.arange(t, device=col.device)
    keep = (rows[None] >= col[:, None] + first) & run.real[row]
    return (change * keep[:, None]).sum((-1, -2))
