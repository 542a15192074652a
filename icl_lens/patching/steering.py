"""Putting a vector into the residual stream at the answer position, layer by layer.

A function vector is *added* to the residual stream after block ``L``; a task vector
*replaces* it. Both only touch the answer position (``last_pos``), so the patching
engine's exact fast path applies: the prompt is run once and only the answer position is
recomputed from block ``L`` on. An addition is expressed as a replacement by
``resid + scale * v``, with ``resid`` read from the same unpatched run, which is the same
computation.

Everything here goes through :mod:`icl_lens.patching`; nothing patches by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.prompting.evaluation import next_token_logprobs
from icl_lens.prompting.prompts import PromptBatch

OPERATIONS = ("add", "replace")


def resid_at_answer(
    model: Any, batch: PromptBatch, *, batch_size: int | None = None, show_progress: bool | None = False
) -> Float[Tensor, "batch n_layers d_model"]:
    """The residual stream after every block at each prompt's answer position."""
    from icl_lens.patching import resid_activations

    return (
        resid_activations(model, batch, hook="resid_post", batch_size=batch_size, show_progress=show_progress)
        .float()
        .cpu()
    )


def _sources(
    model: Any,
    batch: PromptBatch,
    vectors: Float[Tensor, "n_layers d_model"],
    operation: str,
    scale: float,
    batch_size: int | None,
) -> Float[Tensor, "... n_layers d_model"]:
    if operation == "replace":
        return vectors.float()
    base = resid_at_answer(model, batch, batch_size=batch_size)
    return base + scale * vectors.float()[None]


def layer_sweep(
    model: Any,
    batch: PromptBatch,
    *,
    vectors: Float[Tensor, "n_layers d_model"],
    operation: str,
    layers: Sequence[int],
    scale: float = 1.0,
    batch_size: int | None = None,
    method: str = "auto",
    show_progress: bool | None = False,
) -> Bool[Tensor, "layers batch"]:
    """Top-1 correctness of every prompt with ``vectors[L]`` put in after block ``L``, per layer.

    ``operation="add"`` adds ``scale * vectors[L]``; ``"replace"`` replaces the residual by
    ``vectors[L]``. Row ``i`` of the result is layer ``layers[i]``.
    """
    from icl_lens.patching import resid_sweep

    if operation not in OPERATIONS:
        raise ConfigError(f"operation must be one of {OPERATIONS}, got {operation!r}")
    source = _sources(model, batch, vectors, operation, scale, batch_size)
    result = resid_sweep(
        model,
        batch,
        source.to(hooks.device_of(model)),
        metric="accuracy",
        positions="last",
        layers=list(layers),
        hook="resid_post",
        batch_size=batch_size,
        method=method,
        show_progress=show_progress,
    )
    patched = result.patched.float().cpu()
    return patched[list(layers)] > 0.5


def implanted_logprobs(
    model: Any,
    batch: PromptBatch,
    *,
    vector: Float[Tensor, "*batch d_model"],
    layer: int,
    operation: str,
    scale: float = 1.0,
    batch_size: int | None = None,
) -> Float[Tensor, "batch d_vocab"]:
    """Next-token log-probabilities at the answer position with the vector put in after block ``layer``.

    ``vector`` is one ``[d_model]`` vector for every prompt, or ``[batch, d_model]`` (one per prompt).
    """
    if operation not in OPERATIONS:
        raise ConfigError(f"operation must be one of {OPERATIONS}, got {operation!r}")
    per_prompt = vector.dim() == 2
    if per_prompt and vector.shape[0] != len(batch):
        raise ConfigError(f"got {vector.shape[0]} vectors for {len(batch)} prompts")
    out = []
    start = 0
    for sub in batch.batches(batch_size):
        v = vector[start : start + len(sub)] if per_prompt else vector
        start += len(sub)
        with implant(model, sub.last_pos, vector=v, layer=layer, operation=operation, scale=scale):
            out.append(next_token_logprobs(model, sub, batch_size=None))
    return torch.cat(out)


def implant(
    model: Any,
    positions: Any,
    *,
    vector: Float[Tensor, "*batch d_model"],
    layer: int,
    operation: str,
    scale: float = 1.0,
) -> Any:
    """The engine's intervention that adds (or replaces with) ``vector`` after block ``layer``."""
    from icl_lens.patching import add_to_resid, replace_resid

    v = vector.to(hooks.device_of(model)).float()
    if operation == "add":
        return add_to_resid(model, layer, v, positions=positions, hook="resid_post", scale=scale)
    if operation == "replace":
        return replace_resid(model, layer, v, positions=positions, hook="resid_post")
    raise ConfigError(f"operation must be one of {OPERATIONS}, got {operation!r}")


def baseline_and_implanted_logprobs(
    model: Any,
    batch: PromptBatch,
    *,
    vector: Float[Tensor, "*batch d_model"],
    layer: int,
    operation: str,
    scale: float = 1.0,
    batch_size: int | None = None,
) -> tuple[Float[Tensor, "batch d_vocab"], Float[Tensor, "batch d_vocab"]]:
    """Log-probabilities at the answer position without and with the vector, sharing one prompt pass.

    The patching engine's fast path runs each prompt once (keeping keys, values and the
    answer position's residual per block) and recomputes only the answer position from
    block ``layer + 1`` on, with the residual after block ``layer`` changed. An unpatched
    control row must reproduce the real forward; where it does not, or where the fast
    path does not apply (unsupported model, right padding, the last layer), both runs are
    full forwards.
    """
    fast = _fast_pair(model, batch, vector, layer, operation, scale, batch_size)
    if fast is not None:
        return fast
    base = next_token_logprobs(model, batch, batch_size=batch_size)
    put = implanted_logprobs(
        model, batch, vector=vector, layer=layer, operation=operation, scale=scale, batch_size=batch_size
    )
    return base, put


def _fast_pair(
    model: Any,
    batch: PromptBatch,
    vector: Tensor,
    layer: int,
    operation: str,
    scale: float,
    batch_size: int | None,
) -> tuple[Tensor, Tensor] | None:
    from icl_lens.patching.engine import CONTROL_TOLERANCE, Variants, control_error, last_position_runner

    if operation not in OPERATIONS:
        raise ConfigError(f"operation must be one of {OPERATIONS}, got {operation!r}")
    n_layers = hooks.spec(model).n_layers
    runner = last_position_runner(model)
    if runner is None or layer + 1 >= n_layers or not batch.uniform_last_pos:
        return None
    per_prompt = vector.dim() == 2
    base, put = [], []
    start = 0
    with torch.no_grad():
        for sub in batch.batches(batch_size):
            v = vector[start : start + len(sub)] if per_prompt else vector
            start += len(sub)
            state = runner.prefix_state(sub.tokens, sub.attention_mask, sub.last_pos)
            resid = state.resid_pre[:, layer + 1]  # the residual after block `layer`, answer position
            v = v.to(resid)
            changed = v.expand_as(resid) if operation == "replace" else resid + scale * v
            variants = Variants(
                start_layer=torch.full((2,), layer + 1, dtype=torch.long),
                patch_head=torch.full((2,), -1, dtype=torch.long),
                init=torch.stack([resid, changed], dim=1),
            )
            logits = torch.cat([lg for _, lg in runner.run(state, variants)], dim=1)
            if control_error(state, logits[:, 0]) > CONTROL_TOLERANCE:
                return None
            base.append(torch.log_softmax(state.logits.float(), -1).cpu())
            put.append(torch.log_softmax(logits[:, 1].float(), -1).cpu())
    return torch.cat(base), torch.cat(put)
