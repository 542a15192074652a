"""The implant evaluation's two side checks: task specificity and natural text.

Both run on the first fold's test part with the first fold's vector (the only fold of a
held-out split), so no vector is ever tested on pairs it was read from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.hooks import HookedModel
from icl_lens.patching.metrics import top1_correct
from icl_lens.patching.steering import baseline_and_implants_logprobs, implant
from icl_lens.prompting.encoding import encode_texts
from icl_lens.prompting.prompts import build_prompts
from icl_lens.prompting.tasks import Task, load_task
from icl_lens.vectors.common import n_queries
from icl_lens.vectors.function_vector_result import FunctionVectorResult
from icl_lens.vectors.task_vector_result import TaskVectorResult

if TYPE_CHECKING:
    from icl_lens.vectors.implant import ImplantConfig

Vector = FunctionVectorResult | TaskVectorResult


def first_fold(vector: Vector) -> Vector:
    """The vector of the first fold (the vector itself for a held-out split or a single fold)."""
    return vector.folds[0] if vector.folds else vector


def label(vector: Vector) -> str:
    return f"{vector.origin.task} ({vector.kind})"


def operation_of(vector: Vector) -> str:
    return "add" if isinstance(vector, FunctionVectorResult) else "replace"


def vectors_by_layer(vector: Vector, n_layers: int) -> Float[Tensor, "n_layers d_model"]:
    if isinstance(vector, TaskVectorResult):
        return vector.vectors.float()
    return vector.vector.float()[None].expand(n_layers, -1)


def specificity(
    model: HookedModel, task: Task, vector: Vector, others: Sequence[Vector], layer: int, cfg: ImplantConfig
) -> tuple[tuple[str, ...], tuple[str, ...], Float[Tensor, "vectors tasks"], tuple[int, ...]]:
    """Rows: no vector, then each vector; columns: this task, then the other tasks; and the
    number of queries of each column. Each task's queries are the first fold's test part."""
    s = hooks.spec(model)
    vector = first_fold(vector)
    origin = vector.origin
    columns: list[Task] = [task]
    for t in (*cfg.specificity_tasks, *(o.origin.task_data or o.origin.task for o in others)):
        loaded = load_task(t)
        if loaded.name not in {c.name for c in columns}:
            columns.append(loaded)
    rows: list[Vector] = [vector, *(first_fold(o) for o in others)]
    implants = [(vectors_by_layer(r, s.n_layers)[layer], operation_of(r)) for r in rows]
    out = torch.zeros(1 + len(rows), len(columns))
    sizes = []
    for j, col in enumerate(columns):
        test = origin.parts(col)[0][2]
        batch = build_prompts(
            model, test, 0, n_queries(cfg.n_specificity, test), cfg.seed, origin.template, kind="zero_shot"
        )
        # Every vector row shares its prompts' unpatched pass with the "no vector" row (the fast
        # engine recomputes only the answer position after `layer`), as the conditions do.
        base, implanted = baseline_and_implants_logprobs(
            model,
            batch,
            implants=implants,  # type: ignore[arg-type]
            layer=layer,
            scale=cfg.scale,
            batch_size=cfg.batch_size,
            method=cfg.method,
        )
        for i, lp in enumerate([base, *implanted]):
            out[i, j] = top1_correct(lp, batch).mean()
        sizes.append(len(batch))
    labels = ("no vector", *(label(r) for r in rows))
    return labels, tuple(c.name for c in columns), out, tuple(sizes)


def natural_text(
    model: HookedModel, test: Task, vector: Float[Tensor, " d_model"], layer: int, operation: str, cfg: ImplantConfig
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Greedy continuations of ``natural_template`` with and without the vector at its last token."""
    if cfg.n_natural == 0 or cfg.n_generate == 0:
        return (), (), ()
    texts = tuple(cfg.natural_template.replace("{input}", x) for x, _ in test.pairs[: cfg.n_natural])
    tokens, mask = encode_texts(model, texts, padding_side="left")
    plain = _greedy(model, tokens, mask, cfg.n_generate, None)
    implanted = _greedy(model, tokens, mask, cfg.n_generate, (vector, layer, operation, cfg.scale))
    return texts, plain, implanted


def _greedy(
    model: HookedModel, tokens: Tensor, mask: Tensor, n_new: int, put: tuple[Tensor, int, str, float] | None
) -> tuple[str, ...]:
    """``n_new`` greedy tokens; the vector (if any) goes in at the prompt's last token only."""
    where = tokens.shape[1] - 1  # left padding: every prompt ends in this column
    new: list[Tensor] = []
    with torch.no_grad():
        for _ in range(n_new):
            if put is None:
                logits = hooks.forward(model, tokens, mask)
            else:
                vec, layer, operation, scale = put
                with implant(model, where, vector=vec, layer=layer, operation=operation, scale=scale):
                    logits = hooks.forward(model, tokens, mask)
            nxt = logits[:, -1].argmax(-1).cpu()
            new.append(nxt)
            tokens = torch.cat([tokens, nxt[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    gen = torch.stack(new, 1)
    return tuple(model.tokenizer.decode(row.tolist()) for row in gen)
