"""Putting a vector into the residual stream at the answer position, layer by layer.

A function vector is *added* to the residual stream after block ``L``; a task vector
*replaces* it. Both only touch the answer position (``last_pos``), so the patching
engine's exact fast path applies: the prompt is run once and only the answer position is
recomputed from block ``L + 1`` on. An addition is expressed as a replacement by
``resid + scale * v``, with ``resid`` read from the same unpatched run, which is the same
computation. Which path computes each chunk of prompts is decided by
:mod:`icl_lens.patching.runner`, as for every sweep.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.options import check_choice
from icl_lens.core.progress import progress
from icl_lens.patching.activations import resid_activations
from icl_lens.patching.engine import LastPositionEngine, PrefixState
from icl_lens.patching.interventions import PositionSelector, add_to_resid, replace_resid
from icl_lens.patching.options import Method, Operation
from icl_lens.patching.runner import ChunkRunner, Patches, patched_answer_logits
from icl_lens.prompting.evaluation import next_token_logprobs
from icl_lens.prompting.prompts import PromptBatch


def resid_at_answer(
    model: HookedModel, batch: PromptBatch, *, batch_size: int | None = None, show_progress: bool | None = False
) -> Float[Tensor, "batch n_layers d_model"]:
    """The residual stream after every block at each prompt's answer position."""
    return (
        resid_activations(model, batch, hook="resid_post", batch_size=batch_size, show_progress=show_progress)
        .float()
        .cpu()
    )


def layer_sweep(
    model: HookedModel,
    batch: PromptBatch,
    *,
    vectors: Float[Tensor, "*batch n_layers d_model"],
    operation: Operation,
    layers: Sequence[int],
    scale: float = 1.0,
    batch_size: int | None = None,
    method: Method = "auto",
    show_progress: bool | None = False,
) -> Bool[Tensor, "layers batch"]:
    """Top-1 correctness of every prompt with ``vectors[L]`` put in after block ``L``, per layer.

    ``operation="add"`` adds ``scale * vectors[L]``; ``"replace"`` replaces the residual by
    ``vectors[L]``. ``vectors`` is ``[n_layers, d_model]`` (the same for every prompt) or
    ``[batch, n_layers, d_model]`` (one per prompt, e.g. each prompt's own ICL state). Row
    ``i`` of the result is layer ``layers[i]``. On the fast engine each prompt runs once: the
    answer position's residual after block ``L`` comes from that run.
    """
    correct, _ = _sweep(model, batch, vectors, operation, layers, None, scale, batch_size, method, show_progress)
    return correct


def layer_sweep_and_logprobs(
    model: HookedModel,
    batch: PromptBatch,
    *,
    vectors: Float[Tensor, "*batch n_layers d_model"],
    operation: Operation,
    layers: Sequence[int],
    at: int,
    scale: float = 1.0,
    batch_size: int | None = None,
    method: Method = "auto",
    show_progress: bool | None = False,
) -> tuple[Bool[Tensor, "layers batch"], Float[Tensor, "batch d_vocab"], Float[Tensor, "batch d_vocab"]]:
    """:func:`layer_sweep`, and the next-token log-probabilities without a vector and with
    ``vectors[at]`` put in after block ``at``, from the same pass over the prompts (``at``
    need not be one of ``layers``): what :func:`baseline_and_implanted_logprobs` gives, without
    running the prompts again."""
    correct, kept = _sweep(model, batch, vectors, operation, layers, at, scale, batch_size, method, show_progress)
    assert kept is not None
    return correct, kept[0], kept[1]


def _sweep(
    model: HookedModel,
    batch: PromptBatch,
    vectors: Tensor,
    operation: Operation,
    layers: Sequence[int],
    at: int | None,
    scale: float,
    batch_size: int | None,
    method: Method,
    show_progress: bool | None,
) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    """The layer sweep's top-1 correctness, and (``at`` given) the baseline and layer ``at``'s log-probabilities."""
    check_choice(operation, Operation, "operation")
    n_layers = hooks.spec(model).n_layers
    layer_list = [int(l) for l in layers]
    if any(not 0 <= l < n_layers for l in [*layer_list, *([] if at is None else [at])]):
        raise ConfigError(f"layers must be in [0, {n_layers})")
    # Layer `at` rides along with the sweep: the last row when it is not one of `layers`.
    run_layers = layer_list if at is None or at in layer_list else [*layer_list, at]
    keep = None if at is None else run_layers.index(at)
    runner: ChunkRunner[LastPositionEngine] = ChunkRunner(model, method)
    out = torch.zeros(len(layer_list), len(batch), dtype=torch.bool)
    base: list[Tensor] = []
    implanted: list[Tensor] = []
    v = vectors.float()
    per_prompt = v.dim() == 3
    if per_prompt and v.shape[0] != len(batch):
        raise ConfigError(f"got vectors for {v.shape[0]} prompts and {len(batch)} prompts")
    start = 0
    for sub in progress(list(batch.batches(batch_size)), desc="layer sweep", enabled=show_progress):
        rows = slice(start, start + len(sub))
        start += len(sub)
        sub_v = v[rows] if per_prompt else v[None]  # [batch or 1, n_layers, d_model]

        def fast(engine: LastPositionEngine, sub: PromptBatch = sub, sub_v: Tensor = sub_v) -> tuple[Tensor, ...]:
            puts = [(l, sub_v[:, l], operation) for l in run_layers]
            # Only the top token is needed: keep each piece's argmax, not [batch, layers, d_vocab] logits.
            top = torch.full((len(sub), len(run_layers)), -1, dtype=torch.long)
            kept = []
            state, pieces = _implanted_rows(engine, sub, puts, scale)
            for index, lg in pieces:
                top[:, index] = lg.argmax(-1).cpu()
                if keep is not None:
                    kept += [torch.log_softmax(lg[:, i].float(), -1).cpu() for i in (index == keep).nonzero().flatten()]
            correct = (top[:, : len(layer_list)] == sub.answer_ids[:, None]).T
            if keep is None:
                return (correct,)
            return correct, torch.log_softmax(state.logits.float(), -1).cpu(), kept[0]

        def plain(sub: PromptBatch = sub, sub_v: Tensor = sub_v) -> tuple[Tensor, ...]:
            logprobs = [
                _implanted(model, sub, sub_v[:, l] if per_prompt else sub_v[0, l], l, operation, scale)
                for l in run_layers
            ]
            correct = torch.stack([lp.argmax(-1) == sub.answer_ids for lp in logprobs[: len(layer_list)]])
            if keep is None:
                return (correct,)
            return correct, next_token_logprobs(model, sub, batch_size=None), logprobs[keep]

        got = runner.run(fast, plain)
        out[:, rows] = got[0]
        if keep is not None:
            base.append(got[1])
            implanted.append(got[2])
    return out, (None if keep is None else (torch.cat(base), torch.cat(implanted)))


def _put(resid: Tensor, vector: Tensor, operation: str, scale: float) -> Tensor:
    """The residual after putting ``vector`` in: ``resid + scale * v`` or ``v``."""
    return vector.expand_as(resid) if operation == "replace" else resid + scale * vector


def _implanted_rows(
    engine: LastPositionEngine, sub: PromptBatch, rows: Sequence[tuple[int, Tensor, str]], scale: float
) -> tuple[PrefixState, Iterator[tuple[Tensor, Tensor]]]:
    """One pass over the prompts, then the answer position again for each ``(layer, vector,
    operation)`` row, with the vector put in after block ``layer``: the prefix state (its
    ``logits`` are the baseline) and the rows' logits, piece by piece as the runner yields them."""
    with torch.no_grad():
        state = engine.prefix_state(sub.tokens, sub.attention_mask, sub.last_pos)
        changed = []
        for layer, vector, operation in rows:
            resid = state.resid_pre[:, layer + 1]  # the residual after block `layer`, answer position
            changed.append(_put(resid, vector.to(resid), operation, scale))
        patches = Patches(
            start=torch.tensor([layer + 1 for layer, _, _ in rows]),
            head=torch.full((len(rows),), -1),
            init=torch.stack(changed, dim=1),
        )
    return state, patched_answer_logits(engine, state, patches)


def implant(
    model: HookedModel,
    positions: PositionSelector,
    *,
    vector: Float[Tensor, "*batch d_model"],
    layer: int,
    operation: Operation,
    scale: float = 1.0,
) -> AbstractContextManager[HookedModel]:
    """The intervention that adds (or replaces with) ``vector`` after block ``layer``."""
    check_choice(operation, Operation, "operation")
    v = vector.to(hooks.device_of(model)).float()
    if operation == "add":
        return add_to_resid(model, layer, v, positions=positions, hook="resid_post", scale=scale)
    return replace_resid(model, layer, v, positions=positions, hook="resid_post")


def implanted_logprobs(
    model: HookedModel,
    batch: PromptBatch,
    *,
    vector: Float[Tensor, "*batch d_model"],
    layer: int,
    operation: Operation,
    scale: float = 1.0,
    batch_size: int | None = None,
) -> Float[Tensor, "batch d_vocab"]:
    """Next-token log-probabilities at the answer position with the vector put in after block ``layer``.

    ``vector`` is one ``[d_model]`` vector for every prompt, or ``[batch, d_model]`` (one per prompt).
    Full forward passes with the :func:`implant` intervention.
    """
    check_choice(operation, Operation, "operation")
    out = [
        _implanted(model, sub, v, layer, operation, scale)
        for sub, (v,) in _chunks_and_vectors(batch, [vector], batch_size)
    ]
    return torch.cat(out)


def baseline_and_implanted_logprobs(
    model: HookedModel,
    batch: PromptBatch,
    *,
    vector: Float[Tensor, "*batch d_model"],
    layer: int,
    operation: Operation,
    scale: float = 1.0,
    batch_size: int | None = None,
    method: Method = "auto",
) -> tuple[Float[Tensor, "batch d_vocab"], Float[Tensor, "batch d_vocab"]]:
    """Log-probabilities at the answer position without and with the vector, sharing one prompt pass.

    The fast engine runs each prompt once (keeping keys, values and the answer position's
    residual per block) and recomputes only the answer position from block ``layer + 1``
    on, with the residual after block ``layer`` changed. ``method`` as in every sweep:
    ``"auto"`` computes a chunk whose control row disagrees with two full forwards instead.
    """
    base, (put,) = baseline_and_implants_logprobs(
        model, batch, implants=[(vector, operation)], layer=layer, scale=scale, batch_size=batch_size, method=method
    )
    return base, put


def baseline_and_implants_logprobs(
    model: HookedModel,
    batch: PromptBatch,
    *,
    implants: Sequence[tuple[Float[Tensor, "*batch d_model"], Operation]],
    layer: int,
    scale: float = 1.0,
    batch_size: int | None = None,
    method: Method = "auto",
) -> tuple[Float[Tensor, "batch d_vocab"], list[Float[Tensor, "batch d_vocab"]]]:
    """:func:`baseline_and_implanted_logprobs` for several ``(vector, operation)`` implants at
    ``layer``: the baseline, and one distribution per implant, all from one pass per prompt."""
    for _, operation in implants:
        check_choice(operation, Operation, "operation")
    n_layers = hooks.spec(model).n_layers
    if not 0 <= layer < n_layers:
        raise ConfigError(f"layer {layer} out of range: the model has {n_layers} layers")
    runner: ChunkRunner[LastPositionEngine] = ChunkRunner(model, method)
    base: list[Tensor] = []
    put: list[list[Tensor]] = [[] for _ in implants]
    for sub, vs in _chunks_and_vectors(batch, [v for v, _ in implants], batch_size):
        b, ps = _implants(model, runner, sub, list(zip(vs, [op for _, op in implants])), layer, scale)
        base.append(b)
        for rows, p in zip(put, ps, strict=True):
            rows.append(p)
    return torch.cat(base), [torch.cat(rows) for rows in put]


def _chunks_and_vectors(
    batch: PromptBatch, vectors: Sequence[Tensor], batch_size: int | None
) -> Iterator[tuple[PromptBatch, list[Tensor]]]:
    """Chunks of the batch, each with its vectors (their rows, for a per-prompt ``[batch, d_model]``)."""
    for vector in vectors:
        if vector.dim() == 2 and vector.shape[0] != len(batch):
            raise ConfigError(f"got {vector.shape[0]} vectors for {len(batch)} prompts")
    start = 0
    for sub in batch.batches(batch_size):
        yield sub, [v[start : start + len(sub)] if v.dim() == 2 else v for v in vectors]
        start += len(sub)


def _implanted(
    model: HookedModel, sub: PromptBatch, vector: Tensor, layer: int, operation: Operation, scale: float
) -> Float[Tensor, "batch d_vocab"]:
    with implant(model, sub.last_pos, vector=vector, layer=layer, operation=operation, scale=scale):
        return next_token_logprobs(model, sub, batch_size=None)


def _implants(
    model: HookedModel,
    runner: ChunkRunner[LastPositionEngine],
    sub: PromptBatch,
    implants: list[tuple[Tensor, Operation]],
    layer: int,
    scale: float,
) -> tuple[Tensor, list[Tensor]]:
    """Baseline and implanted log-probabilities of one chunk, on the path the runner picks."""

    def fast(engine: LastPositionEngine) -> tuple[Tensor, list[Tensor]]:
        state, pieces = _implanted_rows(engine, sub, [(layer, v, op) for v, op in implants], scale)
        with torch.no_grad():
            logits = torch.cat([lg for _, lg in pieces], dim=1)  # every row starts at one block: in order
        put = [torch.log_softmax(logits[:, i].float(), -1).cpu() for i in range(len(implants))]
        return torch.log_softmax(state.logits.float(), -1).cpu(), put

    def plain() -> tuple[Tensor, list[Tensor]]:
        put = [_implanted(model, sub, v, layer, op, scale) for v, op in implants]
        return next_token_logprobs(model, sub, batch_size=None), put

    return runner.run(fast, plain)
