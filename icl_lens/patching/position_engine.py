"""Exact patching at any position: recompute only the columns and blocks a patch can reach.

Under causal attention a patch at column ``p`` of block ``l`` changes no column before
``p``, at any block, and nothing before block ``l``. So every patched variant of a prompt
shares the unpatched run's keys and values of the columns before ``p``, at every block,
and the engine

1. runs each prompt once, unpatched, keeping per block the keys (rotary applied) and
   values of every column, the residual stream entering the block at every column, and
   what the patched activation needs (head outputs, queries, ``resid_mid``);
2. computes the patched block itself on the columns the patch changes (the *prelude*:
   one column for a head output, a query or a residual stream; the columns ``p..`` for a
   key or a value, which every later query reads);
3. from the next block on, recomputes only the *window* of columns ``p..E-1`` (``E``: one
   past the last answer position) against the cached keys and values of the columns
   before ``p``; at the last block only the answer column is computed;
4. batches variants that share their window: each enters the recomputation at its own
   block, as in the last-position engine (:mod:`icl_lens.patching.engine`).

Norms, projections, MLPs, the final norm and the unembedding are the model's own modules;
only attention against the cached prefix is written here. A patch before the answer
position costs ``(E - p)`` columns times the blocks after ``l``, against ``T`` columns
times every block (and every column's unembedding) for a full forward: about a quarter of
the work for a sweep over every layer and every column.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from icl_lens.core import forward, hooks
from icl_lens.core.hooks import HookedModel
from icl_lens.core.progress import progress
from icl_lens.patching.engine import BlockEngine, check_control
from icl_lens.patching.options import PatchSite
from icl_lens.patching.position_state import (
    ALL_COLUMNS,
    ANSWER_COLUMN,
    HEAD_SITES,
    LOGIT_ROWS,
    WINDOW_ROWS,
    PositionPatches,
    PromptState,
)

__all__ = ["ALL_COLUMNS", "ANSWER_COLUMN", "WINDOW_ROWS", "PositionEngine", "PositionPatches", "PromptState"]


class PositionEngine(BlockEngine):
    """Runs patched variants of whole windows of columns through the model's own blocks."""

    # -- the unpatched forward ---------------------------------------------------------
    def prompt_state(
        self,
        tokens: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"],
        last_pos: Int[Tensor, " batch"],
        site: PatchSite,
    ) -> PromptState:
        """One forward of the unpatched prompts, caching what variants patching ``site`` reuse."""
        s = self.spec
        n = s.n_layers
        keys: list[Any] = [None] * n
        values: list[Any] = [None] * n
        resid: list[Any] = [None] * (n + 1)
        extra: list[Any] = [None] * n
        queries: list[Any] = [None] * n

        def keep(store: list[Any], i: int) -> hooks.HookFn:
            def save(act: Tensor, hook: Any) -> None:
                store[i] = act.detach()

            return save

        fwd: list[tuple[str, hooks.HookFn]] = []
        for l in range(n):
            fwd += [(hooks.k(l), keep(keys, l)), (hooks.v(l), keep(values, l)), (hooks.resid_pre(l), keep(resid, l))]
            if site in HEAD_SITES:
                fwd.append((hooks.z(l), keep(extra, l)))
            if site in ("mlp_out", "resid_mid"):
                fwd.append((hooks.resid_mid(l), keep(extra, l)))
            if site in ("k", "v"):
                fwd.append((hooks.q(l), keep(queries, l)))
        fwd.append((hooks.resid_post(n - 1), keep(resid, n)))
        logits = self.last_logits(tokens, attention_mask, last_pos, fwd)
        device = hooks.device_of(self.model)
        real = attention_mask.to(device).bool()
        position_ids = (real.long().cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            rotated_keys = [self.rotate(k.transpose(1, 2), position_ids) for k in keys]
            rotated_queries = (
                [self.rotate(q.transpose(1, 2), position_ids) for q in queries] if site in ("k", "v") else None
            )
        last = last_pos.to(device).long()
        return PromptState(
            keys=rotated_keys,
            values=[v.transpose(1, 2).contiguous() for v in values],
            resid=torch.stack(resid, dim=1),
            site=extra if extra[0] is not None else None,
            queries=rotated_queries,
            real=real,
            position_ids=position_ids,
            last_pos=last,
            end=int(last.max()) + 1,
            logits=logits.float(),
        )

    # -- the variants ------------------------------------------------------------------
    def control_logits(self, state: PromptState) -> Iterator[Float[Tensor, "batch d_vocab"]]:
        """Unpatched answer logits recomputed by the engine: from block 0 over every column,
        and from the middle block over a window that starts halfway to the answer."""
        yield self._propagate(state, 0, [(0, lambda: state.resid[:, None, 0, : state.end])])[:, 0]
        c0, layer = int(state.last_pos.min()) // 2, self.spec.n_layers // 2
        if c0 > 0:
            yield self._propagate(state, c0, [(layer, lambda: state.resid[:, None, layer, c0 : state.end])])[:, 0]

    def run(
        self, state: PromptState, patches: PositionPatches, *, show_progress: bool | None = False
    ) -> Iterator[tuple[Int[Tensor, " k"], Float[Tensor, "batch k d_vocab"]]]:
        """Yield ``(variant indices, answer logits)`` for every variant, window by window."""
        n_prompts = state.resid.shape[0]
        entry = patches.layer + (0 if patches.site == "resid_pre" else 1)
        plan = []
        for column in torch.unique(patches.column).tolist():
            ids = (patches.column == column).nonzero().flatten()
            ids = ids[torch.argsort(entry[ids], stable=True)]
            c0 = self._window_start(state, column)
            per = max(1, WINDOW_ROWS // (n_prompts * max(1, state.end - c0)))
            plan += [(column, c0, ids[i : i + per]) for i in range(0, len(ids), per)]
        for column, c0, ids in progress(plan, desc="patching positions (fast)", enabled=show_progress):
            if c0 >= state.end:  # after every answer position: nothing the answer reads changes
                yield ids, state.logits[:, None].expand(-1, len(ids), -1)
                continue
            starts = [
                (layer, functools.partial(_prelude, self, state, patches, ids[entry[ids] == layer], column, c0, layer))
                for layer in torch.unique_consecutive(entry[ids]).tolist()
            ]
            logits = self._propagate(state, c0, starts)
            late = state.last_pos < c0  # prompts whose answer comes before the patched column
            if bool(late.any()):
                logits[late] = state.logits[late, None].to(logits)
            yield ids, logits

    def _window_start(self, state: PromptState, column: int) -> int:
        if column == ALL_COLUMNS:
            return 0
        return int(state.last_pos.min()) if column == ANSWER_COLUMN else int(column)

    def _propagate(
        self, state: PromptState, c0: int, starts: list[tuple[int, Callable[[], Tensor]]]
    ) -> Float[Tensor, "batch variant d_vocab"]:
        """Answer logits of variants whose window (columns ``c0..end-1``) enters block
        ``layer`` as ``start()`` (``[batch, k, window, d_model]``), for each ``(layer, start)``."""
        s = self.spec
        n_prompts, n = state.resid.shape[0], state.end - c0
        answer = (state.last_pos - c0).clamp(min=0)
        rows = torch.arange(n_prompts, device=answer.device)
        x = state.resid.new_zeros(n_prompts, 0, n, s.d_model)
        done: list[Tensor] = []
        pending = sorted(starts, key=lambda item: item[0])
        with torch.no_grad():
            for layer in range(pending[0][0], s.n_layers):
                while pending and pending[0][0] == layer:
                    x = torch.cat([x, pending.pop(0)[1]().to(x)], dim=1)
                x = self._window_block(layer, x, state, c0, last=layer == s.n_layers - 1)
            if x.shape[1]:
                done.append(x[:, :, 0] if x.shape[2] == 1 else x[rows, :, answer])
            for _, start in pending:  # variants that start after the last block
                done.append(start()[rows, :, answer])
            final = torch.cat(done, dim=1)
            step = max(1, LOGIT_ROWS // n_prompts)
            return torch.cat([self.unembed(final[:, i : i + step]).float() for i in range(0, final.shape[1], step)], 1)

    # -- one block over windows of columns ---------------------------------------------
    def _window_block(
        self, layer: int, x: Float[Tensor, "batch variant n d_model"], state: PromptState, c0: int, *, last: bool
    ) -> Float[Tensor, "batch variant m d_model"]:
        """Block ``layer`` on the window of every variant; ``last``: only each prompt's answer column comes out."""
        s = self.spec
        block, attn = self.blocks[layer], self.blocks[layer].attn
        n_prompts, n_var, n, d = x.shape
        h = block.ln1(x.reshape(n_prompts, n_var * n, d))
        k = attn.k(h).view(n_prompts, n_var, n, s.n_kv_heads, s.d_head)
        v = attn.v(h).view(n_prompts, n_var, n, s.n_kv_heads, s.d_head)
        columns = torch.arange(c0, c0 + n, device=x.device)
        key_pos = state.position_ids[:, c0 : c0 + n]
        if last:  # only the answer column's query is needed: the other columns serve as keys and values
            answer = (state.last_pos - c0).clamp(min=0)
            rows = torch.arange(n_prompts, device=x.device)
            h = h.view(n_prompts, n_var, n, d)[rows, :, answer]
            x = x[rows, :, answer][:, :, None]
            query_cols, query_pos = columns[answer][:, None], key_pos[rows, answer][:, None]
        else:
            query_cols, query_pos = columns[None].expand(n_prompts, -1), key_pos
        m = x.shape[2]
        q = attn.q(h.reshape(n_prompts, n_var * m, d)).view(n_prompts, n_var, m, s.n_heads, s.d_head)
        q = self.rotate(q.permute(0, 1, 3, 2, 4).reshape(n_prompts, n_var * s.n_heads, m, s.d_head), query_pos)
        k = self.rotate(k.permute(0, 1, 3, 2, 4).reshape(n_prompts, n_var * s.n_kv_heads, n, s.d_head), key_pos)
        q = q.view(n_prompts, n_var, s.n_kv_heads, s.group_size, m, s.d_head)
        k = k.view(n_prompts, n_var, s.n_kv_heads, n, s.d_head)
        v = v.permute(0, 1, 3, 2, 4)  # [batch, variant, kv, n, d_head]
        # own keys: causal, real columns only (a padding column still sees itself, to stay finite)
        own = self.scale(layer, torch.einsum("bvkgmd,bvknd->bvkgmn", q, k))
        sees = (columns[None, None, :] <= query_cols[:, :, None]) & (
            state.real[:, None, c0 : c0 + n] | (columns[None, None, :] == query_cols[:, :, None])
        )
        own = own.masked_fill(~sees[:, None, None, None], float("-inf"))
        if c0 > 0:
            prefix = self.scale(layer, torch.einsum("bvkgmd,bkcd->bvkgmc", q, state.keys[layer][:, :, :c0]))
            prefix = prefix.masked_fill(~state.real[:, None, None, None, None, :c0], float("-inf"))
            own = torch.cat([prefix, own], dim=-1)
        pattern = torch.softmax(own.float(), dim=-1).to(q.dtype)
        z = torch.einsum("bvkgmn,bvknd->bvkgmd", pattern[..., c0:], v)
        if c0 > 0:
            z = z + torch.einsum("bvkgmc,bkcd->bvkgmd", pattern[..., :c0], state.values[layer][:, :, :c0])
        z = z.permute(0, 1, 4, 2, 3, 5).reshape(n_prompts, n_var * m, s.n_heads * s.d_head)
        out = x.reshape(n_prompts, n_var * m, d) + attn.o(z)
        if not s.attn_only:
            out = out + block.mlp(block.ln2(out))
        return out.view(n_prompts, n_var, m, d)


def _prelude(
    engine: PositionEngine, state: PromptState, patches: PositionPatches, ids: Tensor, column: int, c0: int, entry: int
) -> Float[Tensor, "batch k n d_model"]:
    """The window entering block ``entry`` of variants ``ids``, which patch block ``entry``
    (``resid_pre``) or ``entry - 1`` (every other site): the patched block, computed on the
    columns the patch changes, written into the cached window."""
    s = engine.spec
    site = patches.site
    layer = entry if site == "resid_pre" else entry - 1
    n_prompts, n, k = state.resid.shape[0], state.end - c0, len(ids)
    device = state.resid.device
    prompts = torch.arange(n_prompts, device=device)
    every = column == ALL_COLUMNS
    # window rows the patch writes: each prompt's one row, or all of them
    rows = torch.zeros(n_prompts, dtype=torch.long, device=device)
    if column == ANSWER_COLUMN:
        rows = (state.last_pos - c0).clamp(min=0)
    cols = torch.arange(c0, state.end, device=device)[None].expand(n_prompts, -1) if every else (rows + c0)[:, None]
    src = _source(patches, ids, state, cols, layer)  # [batch, k, r, *unit]

    def at_rows(t: Tensor) -> Tensor:  # [batch, pos, ...] -> [batch, r, ...] at the patched columns
        return t[prompts[:, None], cols]

    heads = patches.head[ids].to(device)
    if site in ("resid_pre", "resid_post"):
        new = src
    elif site == "mlp_out":
        new = at_rows(state.site[layer])[:, None] + src  # type: ignore[index]
    elif site == "resid_mid":
        # A bridge's hook_resid_mid is the MLP's input (ln2.hook_in): patching it changes
        # what the MLP reads, while the block passes its own resid_mid on.
        new = _mlp_half(engine, layer, at_rows(state.site[layer])[:, None], mlp_input=src)  # type: ignore[index]
    elif site == "attn_out":
        new = _mlp_half(engine, layer, at_rows(state.resid[:, layer])[:, None] + src)
    elif site in ("z", "q"):
        z = at_rows(state.site[layer])[:, None].expand(-1, k, -1, -1, -1)  # type: ignore[index]
        if site == "q":
            src = _query_head_output(engine, state, layer, heads, src, cols)
        onehot = torch.nn.functional.one_hot(heads, s.n_heads).bool()[None, :, None, :, None]
        z = torch.where(onehot, src[:, :, :, None], z)
        mid = at_rows(state.resid[:, layer])[:, None] + _out(engine, layer, z)
        new = _mlp_half(engine, layer, mid)
    else:  # k, v: every window column after the patched one reads the new key or value
        new = _kv_window(engine, state, layer, heads, src, cols, c0, site)
    if new.shape[2] == n:
        return new
    window = state.resid[:, None, entry, c0 : state.end].expand(-1, k, -1, -1).clone()
    window[prompts, :, rows] = new[:, :, 0].to(window)
    return window


def _source(patches: PositionPatches, ids: Tensor, state: PromptState, cols: Tensor, layer: int) -> Tensor:
    """Source values of variants ``ids`` at the patched columns ``cols`` ``[batch, r]``: ``[batch, k, r, *unit]``."""
    src = patches.source.to(state.resid.device)
    n_prompts = state.resid.shape[0]
    per_col = src[:, :, layer]  # [1|batch, 1|pos, *unit]
    if per_col.shape[1] > 1:
        per_col = per_col.expand(n_prompts, *per_col.shape[1:])[torch.arange(n_prompts)[:, None], cols]
    per_col = per_col.expand(n_prompts, cols.shape[1], *per_col.shape[2:])
    if patches.site in HEAD_SITES:
        per_col = per_col[:, :, patches.head[ids].to(src.device)]  # [batch, r, k, d_head]
        return per_col.permute(0, 2, 1, 3).to(state.resid.dtype)
    return per_col[:, None].expand(-1, len(ids), -1, -1).to(state.resid.dtype)


def _out(engine: PositionEngine, layer: int, z: Tensor) -> Tensor:
    """The attention output (``W_O``, with any bias) of head outputs ``[batch, k, r, n_heads, d_head]``."""
    b, k, r = z.shape[:3]
    return engine.blocks[layer].attn.o(z.reshape(b, k * r, -1)).view(b, k, r, -1)


def _mlp_half(engine: PositionEngine, layer: int, mid: Tensor, mlp_input: Tensor | None = None) -> Tensor:
    """The residual leaving block ``layer`` from ``resid_mid`` rows ``[batch, k, r, d_model]``
    (the MLP reading ``mlp_input`` instead, where given)."""
    if engine.spec.attn_only:
        return mid
    block = engine.blocks[layer]
    shape = torch.broadcast_shapes(mid.shape, mid.shape if mlp_input is None else mlp_input.shape)
    read = (mid if mlp_input is None else mlp_input).expand(shape)
    flat = read.reshape(shape[0], -1, shape[-1])
    return mid + block.mlp(block.ln2(flat)).view(shape)


def _query_head_output(
    engine: PositionEngine, state: PromptState, layer: int, heads: Tensor, query: Tensor, cols: Tensor
) -> Tensor:
    """Head outputs ``[batch, k, r, d_head]`` of query heads ``heads`` with their query at ``cols`` replaced."""
    s = engine.spec
    positions = state.position_ids.gather(1, cols)
    rotated = engine.rotate(query, positions)  # [batch, k, r, d_head]: heads as the head axis
    kv = heads // s.group_size
    keys, values = state.keys[layer][:, kv], state.values[layer][:, kv]  # [batch, k, pos, d_head]
    scores = engine.scale(layer, rotated @ keys.transpose(-1, -2))
    return _attend(scores, values, state, cols)


def _attend(scores: Tensor, values: Tensor, state: PromptState, cols: Tensor) -> Tensor:
    """Softmax over causal, real columns (a padding column sees itself) and the weighted values."""
    t = torch.arange(state.real.shape[1], device=scores.device)
    sees = (t[None, None, :] <= cols[:, :, None]) & (state.real[:, None, :] | (t[None, None, :] == cols[:, :, None]))
    while sees.dim() < scores.dim():
        sees = sees[:, None]
    pattern = torch.softmax(scores.masked_fill(~sees, float("-inf")).float(), dim=-1).to(values.dtype)
    return pattern @ values


def _kv_window(
    engine: PositionEngine,
    state: PromptState,
    layer: int,
    heads: Tensor,
    src: Tensor,
    cols: Tensor,
    c0: int,
    site: str,
) -> Tensor:
    """The residual leaving block ``layer`` over the window, with key/value head ``heads`` replaced at ``cols``."""
    s = engine.spec
    n_prompts, k = src.shape[:2]
    prompts = torch.arange(n_prompts, device=src.device)[:, None]
    keys, values = state.keys[layer][:, heads].clone(), state.values[layer][:, heads].clone()  # [batch, k, pos, d]
    if site == "k":
        positions = state.position_ids.gather(1, cols)
        keys[prompts, :, cols] = engine.rotate(src, positions).transpose(1, 2).to(keys)
    else:
        values[prompts, :, cols] = src.transpose(1, 2).to(values)
    window = torch.arange(c0, state.end, device=src.device)[None].expand(n_prompts, -1)
    group = heads[:, None] * s.group_size + torch.arange(s.group_size, device=heads.device)  # [k, group]
    queries = state.queries[layer][:, group.flatten(), c0 : state.end]  # type: ignore[index]
    queries = queries.view(n_prompts, k, s.group_size, -1, s.d_head)
    scores = engine.scale(layer, queries @ keys[:, :, None].transpose(-1, -2))
    out = _attend(scores, values[:, :, None], state, window)  # [batch, k, group, n, d_head]
    z = state.site[layer][:, None, c0 : state.end].expand(-1, k, -1, -1, -1).clone()  # type: ignore[index]
    z = z.view(n_prompts, k, -1, s.n_kv_heads, s.group_size, s.d_head)
    z[:, torch.arange(k), :, heads] = out.permute(1, 0, 3, 2, 4)
    z = z.view(n_prompts, k, -1, s.n_heads, s.d_head)
    mid = state.resid[:, None, layer, c0 : state.end] + _out(engine, layer, z)
    return _mlp_half(engine, layer, mid)


def position_engine(model: HookedModel) -> PositionEngine | None:
    """The engine for ``model``, or ``None`` where the fast path does not apply (as
    :func:`~icl_lens.patching.engine.last_position_engine`)."""
    family = forward.model_family(model)
    if family is None or hooks.count_hooks(model) != 0:
        return None
    return PositionEngine(model, family)


def patched_logits(
    engine: PositionEngine, state: PromptState, patches: PositionPatches, *, show_progress: bool | None = False
) -> Iterator[tuple[Int[Tensor, " k"], Float[Tensor, "batch k d_vocab"]]]:
    """:meth:`PositionEngine.run`, after the engine's unpatched control rows are checked
    against the real forward (:class:`~icl_lens.core.errors.FastPathMismatchError` if one disagrees)."""
    for control in engine.control_logits(state):
        check_control(state.logits, control, dtype=engine.dtype, engine="fast position engine")
    yield from engine.run(state, patches, show_progress=show_progress)
