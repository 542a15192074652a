"""Which demonstrations help: nearest neighbours, the kernel head's favourites, random, farthest.

If ICL is kernel regression over the demonstrations (Han et al. 2023), demonstrations
similar to the query should weigh more and help more: retrieving nearest neighbours
beats random demonstrations (KATE, Liu et al. 2021), and the farthest ones should hurt.
``demonstration_selection(model, task)`` splits the task into test queries and a
training pool and, for each query, picks ``k`` demonstrations from the pool four ways:

* ``"nearest"``: highest cosine similarity to the query of the model's own representation
  of the input: the residual stream after layer ``layer`` at the answer position of the
  zero-shot prompt (``[BOS] x ->``), centred over all inputs, as in
  :func:`~icl_lens.hypotheses.kernel.similarity_matrices`;
* ``"kernel"``: highest score under the kernel of the best kernel-regression head
  ``(l, h)`` (picked by :func:`~icl_lens.hypotheses.kernel.kernel_regression` on prompts
  made of the pool alone): ``q · k / sqrt(d_head)`` between the head's query at the
  query's answer position and its keys over the demonstration's tokens (input to label,
  each demonstration run alone), maximised over those tokens. Queries and keys are read
  before any rotary rotation, so this is the head's score at equal positions: its content
  kernel without the distance term;
* ``"random"``: a seeded random draw (the first ``k`` of a fixed permutation);
* ``"farthest"``: lowest representation similarity.

Demonstrations are placed in order of increasing similarity, so the most similar stands
next to the query (as KATE does). Every method is scored on the same queries: first-token
top-1 accuracy with a Wilson interval, an exact McNemar test against ``"random"`` at the
same ``k``, and on a label task the kernel head's vote (its accuracy and its agreement
with the model's label-restricted answer) and the share of chosen demonstrations that
carry the query's own label, which is what a similarity-weighted vote can exploit.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.models import model_name
from icl_lens.core.options import check_choice, choices
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.hypotheses.head_vote import batch_answers, labels_or_none, pick_kernel_head
from icl_lens.hypotheses.kernel import input_representations, similarity_matrices
from icl_lens.hypotheses.kernel_result import KernelRegressionResult
from icl_lens.hypotheses.selection_result import DemonstrationSelectionResult
from icl_lens.prompting.prompts import build_prompts
from icl_lens.prompting.tasks import Task, load_task
from icl_lens.prompting.templates import Template, get_template

Selection = Literal["nearest", "kernel", "random", "farthest"]
SELECTIONS: tuple[str, ...] = choices(Selection)


@dataclasses.dataclass(frozen=True)
class SelectionConfig(Config):
    """Settings of :func:`demonstration_selection`.

    Attributes:
        ks: demonstrations per prompt.
        methods: selection rules (see the module docstring); ``"random"`` is the baseline
            of every paired test and is always run.
        n_queries: test queries; the rest of the task (``pool_size`` pairs of it, or all)
            is the pool demonstrations are chosen from.
        layer: residual layer of the representation (``None``: the middle layer).
        kernel_head: the kernel head ``(layer, head)``; ``None`` picks it with
            :func:`kernel_regression` on ``kernel_prompts`` prompts made of the pool.
        template: the prompt format.
    """

    ks: tuple[int, ...] = (2, 5, 10)
    methods: tuple[Selection, ...] = SELECTIONS
    n_queries: int = 60
    pool_size: int | None = None
    layer: int | None = None
    kernel_head: tuple[int, int] | None = None
    kernel_prompts: int = 64
    template: str = "hendel"
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", tuple(int(k) for k in self.ks))
        methods = tuple(check_choice(m, Selection, "method") for m in self.methods)
        if "random" not in methods:
            methods = methods + ("random",)
        object.__setattr__(self, "methods", tuple(m for m in SELECTIONS if m in methods))
        if self.kernel_head is not None:
            object.__setattr__(self, "kernel_head", tuple(int(x) for x in self.kernel_head))
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"ks must be positive integers, got {self.ks}")
        if self.n_queries < 1 or self.batch_size < 1 or self.kernel_prompts < 4:
            raise ConfigError("n_queries and batch_size must be >= 1, kernel_prompts >= 4")
        if self.pool_size is not None and self.pool_size < max(self.ks):
            raise ConfigError(f"pool_size={self.pool_size} is smaller than the largest k={max(self.ks)}")
        get_template(self.template)


def split_queries(task: Task, n_queries: int, pool_size: int | None, seed: int, min_pool: int = 1) -> tuple[Task, Task]:
    """A seeded split into ``n_queries`` test pairs and a disjoint pool (``pool_size`` pairs or the rest).

    Raises:
        ConfigError: the task has too few pairs for ``n_queries`` and a pool of ``min_pool``.
    """
    if len(task) < n_queries + max(1, min_pool):
        raise ConfigError(
            f"task {task.name!r} has {len(task)} pairs: {n_queries} queries and a pool of at least "
            f"{max(1, min_pool)} demonstrations do not fit; ask for fewer queries or demonstrations."
        )
    order = list(range(len(task)))
    random.Random(f"{seed}:selection").shuffle(order)
    rest = order[n_queries:] if pool_size is None else order[n_queries : n_queries + pool_size]
    queries = dataclasses.replace(
        task, name=f"{task.name}[queries]", pairs=tuple(task.pairs[i] for i in order[:n_queries])
    )
    pool = dataclasses.replace(task, name=f"{task.name}[pool]", pairs=tuple(task.pairs[i] for i in sorted(rest)))
    return queries, pool


def kernel_scores(
    model: HookedModel,
    queries: Task,
    pool: Task,
    head: tuple[int, int],
    template: Template,
    batch_size: int,
) -> Float[Tensor, "queries pool"]:
    """The kernel head's content score of every pool demonstration for every query (see the module docstring)."""
    layer, h = head
    s = hooks.spec(model)
    if not (0 <= layer < s.n_layers and 0 <= h < s.n_heads):
        raise ConfigError(f"kernel_head {head} does not exist in a model of {s.n_layers} layers x {s.n_heads} heads")
    asked = build_prompts(model, queries, 0, len(queries), 0, template, kind="zero_shot")
    # Each pool pair as the only demonstration of a prompt; what follows it cannot change its keys.
    shown = build_prompts(model, pool, template=template, demos=[[p] for p in pool.pairs])
    with torch.no_grad():
        q_rows = []
        for b in asked.batches(batch_size):
            cache = hooks.run_with_cache(model, b.tokens, [hooks.q(layer)], b.attention_mask)[1]
            q_rows.append(hooks.gather_positions(cache[hooks.q(layer)], b.last_pos)[:, h].float())
        q = torch.cat(q_rows)  # [queries, d_head]
        keys = []
        for b in shown.batches(batch_size):
            k = hooks.run_with_cache(model, b.tokens, [hooks.k(layer)], b.attention_mask)[1][hooks.k(layer)]
            for r in range(len(b)):
                start, stop = int(b.input_spans[r, 0, 0]), int(b.label_spans[r, 0, 1])
                keys.append(k[r, start:stop, s.kv_head(h)].float())
    # queries come back in the task's order: zero-shot prompts sample queries by seed
    row_of = {x: i for i, x in enumerate(asked.queries)}
    q = q[torch.tensor([row_of[x] for x in queries.inputs])]
    scale = s.d_head**-0.5
    return torch.stack([(q @ k.T).amax(-1) * scale for k in keys], 1).cpu()


def demonstration_selection(
    model: HookedModel,
    task: Task | str,
    config: SelectionConfig | None = None,
    *,
    kernel: KernelRegressionResult | None = None,
    show_progress: bool | None = None,
    **overrides: Any,
) -> DemonstrationSelectionResult:
    """ICL accuracy with demonstrations chosen nearest, by the kernel head, at random and farthest.

    Args:
        model: a model with a tokenizer, speaking the TransformerLens hook contract.
        task: a task or its name; a label task (``task.labels`` or a few shared outputs)
            also gets the kernel head's vote. An open-ended task needs ``kernel_head=`` for
            the ``"kernel"`` rule.
        config: a :class:`SelectionConfig`; keyword ``overrides`` replace its fields.
        kernel: a :func:`kernel_regression` result whose ``best_head`` is the kernel head
            (else ``config.kernel_head``, else picked on the pool).

    Returns:
        A :class:`DemonstrationSelectionResult`: ``to_dataframe()`` has one row per rule
        and ``k`` with intervals and the paired test against random; ``plot()`` draws
        accuracy against ``k``.
    """
    cfg = SelectionConfig.resolve(config, overrides)
    task = load_task(task)
    template = get_template(cfg.template)
    queries, pool = split_queries(task, cfg.n_queries, cfg.pool_size, cfg.seed, min_pool=max(cfg.ks))
    labels = labels_or_none(task)
    n_layers = hooks.spec(model).n_layers
    layer = n_layers // 2 if cfg.layer is None else cfg.layer
    if not 0 <= layer < n_layers:
        raise ConfigError(f"layer {layer} is outside the model's {n_layers} layers")

    head = cfg.kernel_head or (tuple(kernel.best_head) if kernel is not None else None)
    if head is None and labels is not None:
        head = pick_kernel_head(
            model, pool, template=cfg.template, n_prompts=cfg.kernel_prompts, seed=cfg.seed, batch_size=cfg.batch_size
        )
    if head is None and "kernel" in cfg.methods:
        raise ConfigError(
            f"task {task.name!r} has no label set, so no kernel-regression head can be picked on it: pass "
            "kernel_head=(layer, head), or methods without 'kernel'."
        )

    inputs = pool.inputs + queries.inputs
    probs, hidden = input_representations(
        model, inputs, template=template, layer=layer, batch_size=cfg.batch_size, show_progress=False
    )
    similarity = similarity_matrices(probs, hidden)[1][len(pool) :, : len(pool)]
    scores = {"nearest": similarity, "farthest": -similarity}
    kernel_similarity = None
    if "kernel" in cfg.methods:
        assert head is not None
        kernel_similarity = kernel_scores(model, queries, pool, head, template, cfg.batch_size)
        scores["kernel"] = kernel_similarity
    top = max(cfg.ks)
    ranked = {}
    for method in cfg.methods:
        if method == "random":
            draws = [random.Random(f"{cfg.seed}:{i}:random").sample(range(len(pool)), top) for i in range(len(queries))]
            ranked[method] = torch.tensor(draws)
        else:  # best first; stable, so ties keep pool order
            ranked[method] = scores[method].argsort(dim=-1, descending=True, stable=True)[:, :top]
    selected = torch.stack([ranked[m] for m in cfg.methods])

    shape = (len(cfg.methods), len(cfg.ks), len(queries))
    correct = torch.zeros(shape, dtype=torch.bool)
    vote_correct = torch.zeros(shape, dtype=torch.bool)
    vote_agrees = torch.zeros(shape, dtype=torch.bool)
    label_share = torch.zeros(shape)
    jobs = [(m, j) for m in range(len(cfg.methods)) for j in range(len(cfg.ks))]
    for m, j in progress(jobs, total=len(jobs), desc="demonstration selection", enabled=show_progress):
        picks = selected[m, :, : cfg.ks[j]]
        if cfg.methods[m] != "random":
            picks = picks.flip(-1)  # the most similar demonstration next to the query
        demos = [[pool.pairs[int(i)] for i in row] for row in picks]
        batch = build_prompts(model, queries, template=template, demos=demos)
        answers = batch_answers(model, batch, template=template, labels=labels, head=head, batch_size=cfg.batch_size)
        correct[m, j] = answers.correct
        if answers.gold is not None and answers.label_share is not None and answers.label_prediction is not None:
            label_share[m, j] = answers.label_share
            if answers.vote is not None:
                vote_correct[m, j] = answers.vote == answers.gold
                vote_agrees[m, j] = answers.vote == answers.label_prediction
    has_vote = labels is not None and head is not None
    return DemonstrationSelectionResult(
        config=cfg,
        model=model_name(model),
        task=task.name,
        labels=labels,
        kernel_head=head,
        layer=layer,
        queries=tuple(queries.pairs),
        pool=tuple(pool.pairs),
        selected=selected,
        similarity=similarity,
        kernel_similarity=kernel_similarity,
        correct=correct,
        vote_correct=vote_correct if has_vote else None,
        vote_agrees=vote_agrees if has_vote else None,
        label_share=label_share if labels is not None else None,
    )
