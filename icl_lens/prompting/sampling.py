"""Which demonstrations and which query each prompt of a batch shows, given a seed.

Every draw is seeded by the batch seed and the prompt's index alone, so the same seed
gives the same queries to every prompt kind, and ``k`` shots are the first ``k`` of
``k + 1`` shots (a full shuffle, not ``rng.sample(k)``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Literal

from icl_lens.core.errors import PromptError
from icl_lens.prompting.tasks import Task

PromptKind = Literal["clean", "zero_shot", "shuffled", "dummy_query"]
"""What a batch's prompts show (see :mod:`icl_lens.prompting.prompts`)."""

Pair = tuple[str, str]


def draw_prompts(
    task: Task,
    pool: Task,
    kind: PromptKind,
    shots: int,
    fixed_demos: tuple[Pair, ...] | None,
    n_prompts: int,
    seed: int,
    variant: int,
) -> Iterator[tuple[list[Pair], str, str]]:
    """``(demonstrations, query, answer)`` of each prompt, in order.

    Queries come from ``task``, demonstrations from ``pool`` (or are ``fixed_demos``, whose
    inputs are then never asked as queries).
    """
    shown = {x for x, _ in fixed_demos} if fixed_demos is not None else set()
    exclude = {i for i, (x, _) in enumerate(task.pairs) if x in shown}
    for i, qi in enumerate(_sample_queries(len(task), n_prompts, seed, exclude)):
        query, answer = task.pairs[qi]
        demos = list(fixed_demos) if fixed_demos is not None else _sample_demos(pool, query, shots, seed, i)
        if kind == "shuffled":
            demos = _shuffle_labels(demos, random.Random(f"{seed}:{i}:shuffle"))
        if kind == "dummy_query":
            query, answer = _dummy_query(task, query, demos, seed, i, variant)
        yield demos, query, answer


def _sample_queries(n_pairs: int, n_prompts: int, seed: int, exclude: set[int]) -> list[int]:
    """Indices of the queries: shuffled passes over the pairs, skipping ``exclude``."""
    rng = random.Random(f"{seed}:queries")
    out: list[int] = []
    while len(out) < n_prompts:
        perm = list(range(n_pairs))
        rng.shuffle(perm)
        out += [i for i in perm if i not in exclude][: n_prompts - len(out)]
    return out


def _sample_demos(pool: Task, query: str, shots: int, seed: int, i: int) -> list[tuple[str, str]]:
    if shots == 0:
        return []
    candidates = [p for p in pool.pairs if p[0] != query]
    order = list(range(len(candidates)))
    # A full shuffle (not rng.sample(k)) so that k shots are a prefix of k+1 shots.
    random.Random(f"{seed}:{i}:demos").shuffle(order)
    return [candidates[j] for j in order[:shots]]


def _shuffle_labels(demos: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str]]:
    labels = [y for _, y in demos]
    if len(labels) < 2:
        return demos
    best, best_moved = labels, -1
    for _ in range(50):  # prefer a permutation that moves every label it can
        perm = labels[:]
        rng.shuffle(perm)
        moved = sum(a != b for a, b in zip(perm, labels, strict=True))
        if moved > best_moved:
            best, best_moved = perm, moved
        if moved == len(labels):
            break
    return [(x, y) for (x, _), y in zip(demos, best, strict=True)]


def _dummy_query(
    task: Task, query: str, demos: list[tuple[str, str]], seed: int, i: int, variant: int
) -> tuple[str, str]:
    used = {query} | {x for x, _ in demos}
    candidates = [p for p in task.pairs if p[0] not in used]
    if not candidates:
        raise PromptError(f"task {task.name!r} has no input left for a dummy query; use fewer shots.")
    order = list(range(len(candidates)))
    random.Random(f"{seed}:{i}:dummy").shuffle(order)
    return candidates[order[variant % len(candidates)]]
