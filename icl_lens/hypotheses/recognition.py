"""Task recognition vs task learning (Pan et al. 2023), as accuracy by shot count.

Pan, Gao, Chen and Chen, "What In-Context Learning 'Learns' In-Context: Disentangling
Task Recognition and Task Learning" (Findings of ACL 2023) separate two things ICL can do:

* **task recognition** (TR): the demonstrations tell the model *which* task it already
  knows; the input-label mapping shown does not matter. Measured with **random** labels:
  every demonstration gets a label drawn uniformly from the label space.
* **task learning** (TL): the model picks up a mapping it could not know in advance.
  Measured with **abstract** labels: each real label is replaced, consistently, by an
  unrelated token (``animal -> K``, ``object -> C``); the query's answer is the abstract
  token of its true label.

Accuracy is the label-restricted top-1 of the answer's first token: the prediction is
the label (real labels for gold/random, abstract ones for abstract) whose first token has
the highest log-probability at the answer position. Chance is one over the number of
labels. The same queries and (nested) demonstration inputs are used in every setting and
at every shot count.
"""

from __future__ import annotations

import dataclasses
import random
import string
from collections.abc import Sequence
from typing import Any, Literal

from icl_lens.core.errors import ConfigError, TaskError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.models import model_name
from icl_lens.core.options import check_choice
from icl_lens.core.results import Config
from icl_lens.hypotheses.labels import first_token, label_first_tokens, label_restricted_correct, task_labels
from icl_lens.hypotheses.recognition_result import SETTINGS, RecognitionResult, Setting
from icl_lens.prompting.encoding import tokenizer_of
from icl_lens.prompting.evaluation import accuracy_by_shots, check_shots
from icl_lens.prompting.prompts import PromptBatch, build_prompts
from icl_lens.prompting.tasks import Task, load_task
from icl_lens.prompting.templates import get_template

AbstractPool = Literal["letters", "numbers"]
"""The built-in pools of abstract labels."""

ABSTRACT_POOLS: dict[AbstractPool, tuple[str, ...]] = {
    "letters": tuple(string.ascii_uppercase),
    "numbers": tuple(str(i) for i in range(10)),
}


@dataclasses.dataclass(frozen=True)
class RecognitionConfig(Config):
    """Settings of :func:`recognition_vs_learning`.

    Attributes:
        shots: demonstration counts (Pan et al. sweep 0 to 128 demonstrations; a small
            model on a CPU sweeps up to 16 in about a minute per task).
        n_prompts: queries per setting and shot count.
        abstract_labels: ``"letters"`` (``A``..``Z``, Pan et al.'s letter variant),
            ``"numbers"`` (``0``..``9``), or a tuple of strings of your own.
        template: ``"hendel"`` (``x -> y``), ``"todd"`` or a format string.
    """

    shots: tuple[int, ...] = (0, 1, 2, 4, 8, 16)
    n_prompts: int = 32
    seed: int = 0
    template: str = "hendel"
    abstract_labels: AbstractPool | tuple[str, ...] = "letters"
    batch_size: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "shots", check_shots(self.shots))
        if self.n_prompts < 1 or self.batch_size < 1:
            raise ConfigError("n_prompts and batch_size must be >= 1")
        if isinstance(self.abstract_labels, str):
            check_choice(self.abstract_labels, AbstractPool, "abstract_labels (or a tuple of strings)")
        else:
            pool = tuple(str(s) for s in self.abstract_labels)
            if len(set(pool)) != len(pool) or any(not s.strip() for s in pool):
                raise ConfigError(f"abstract_labels must be distinct non-empty strings, got {pool}")
            object.__setattr__(self, "abstract_labels", pool)
        get_template(self.template)


def abstract_label_map(
    tokenizer: Any,
    labels: Sequence[str],
    pool: AbstractPool | Sequence[str] = "letters",
    *,
    lead: str = " ",
    seed: int = 0,
) -> dict[str, str]:
    """A seeded bijection from real labels to unrelated single-token stand-ins.

    A stand-in qualifies when ``lead + stand_in`` is one token for ``tokenizer``, it is
    not itself a real label (case-insensitively), and its token differs from the first
    token of every real label (so a prediction never counts for both). ``lead`` is the
    text the template puts before an output (a space for ``"x -> y"``).
    """
    if isinstance(pool, str):
        candidates = list(ABSTRACT_POOLS[check_choice(pool, AbstractPool, "pool")])
    else:
        candidates = [str(s) for s in pool]
    labels = list(labels)
    real_first = {first_token(tokenizer, lead + y) for y in labels}
    lowered = {y.strip().lower() for y in labels}
    rng = random.Random(f"{seed}:abstract")
    rng.shuffle(candidates)
    chosen: list[str] = []
    used_ids: set[int] = set()
    for c in candidates:
        ids = tokenizer.encode(lead + c, add_special_tokens=False)
        if len(ids) != 1 or ids[0] in real_first or ids[0] in used_ids or c.strip().lower() in lowered:
            continue
        chosen.append(c)
        used_ids.add(ids[0])
        if len(chosen) == len(labels):
            return dict(zip(labels, chosen, strict=True))
    raise ConfigError(
        f"only {len(chosen)} of the abstract labels {pool if isinstance(pool, str) else tuple(pool)} are single "
        f"tokens (after {lead!r}) that collide with no real label; {len(labels)} are needed. "
        "Use abstract_labels='letters' or give a longer tuple of strings."
    )


def _random_label_task(task: Task, labels: Sequence[str], seed: int) -> Task:
    rng = random.Random(f"{seed}:random-labels")
    pairs = tuple((x, labels[rng.randrange(len(labels))]) for x in task.inputs)
    return dataclasses.replace(task, name=f"{task.name}[random labels]", pairs=pairs)


def recognition_vs_learning(
    model: HookedModel,
    task: Task | str,
    config: RecognitionConfig | None = None,
    *,
    show_progress: bool | None = None,
    **overrides: Any,
) -> RecognitionResult:
    """Accuracy by shot count with gold, random (recognition) and abstract (learning) labels.

    Args:
        model: a TransformerBridge (any HookedModel) with a tokenizer.
        task: a classification-style task (a shared label set), or its name.
        config: see :class:`RecognitionConfig`; keyword ``overrides`` replace its fields
            (``recognition_vs_learning(model, task, shots=(0, 4))``).
        show_progress: progress bars (default: the global setting).

    Returns:
        A :class:`RecognitionResult`; ``plot()`` draws the three curves with chance.
    """
    cfg = RecognitionConfig.resolve(config, overrides)
    task = load_task(task)
    labels = task_labels(task)
    template = get_template(cfg.template)
    tokenizer = tokenizer_of(model)
    label_map = abstract_label_map(tokenizer, labels, cfg.abstract_labels, lead=template.output_lead, seed=cfg.seed)
    if set(task.outputs) - set(labels):
        raise TaskError(f"task {task.name!r} has outputs outside its labels {labels}")
    if len(task) < max(cfg.shots) + 1:
        raise ConfigError(f"task {task.name!r} has {len(task)} pairs, too few for {max(cfg.shots)} shots")

    abstract_task = dataclasses.replace(
        task, name=f"{task.name}[abstract]", pairs=tuple((x, label_map[y]) for x, y in task.pairs)
    )
    # Same inputs in the same order in every pool, so every setting gets the same queries
    # and the same demonstration inputs; only the labels differ.
    setups: dict[Setting, tuple[Task, Task, tuple[str, ...]]] = {
        "gold": (task, task, labels),
        "random": (task, _random_label_task(task, labels, cfg.seed), labels),
        "abstract": (abstract_task, abstract_task, tuple(label_map[y] for y in labels)),
    }
    label_ids = {s: label_first_tokens(tokenizer, setups[s][2], template) for s in SETTINGS}

    def prompts(setting: Setting, k: int) -> PromptBatch:
        query_task, demo_pool, _ = setups[setting]
        return build_prompts(model, query_task, k, cfg.n_prompts, cfg.seed, template, demos_from=demo_pool)

    correct, _ = accuracy_by_shots(
        model,
        SETTINGS,
        cfg.shots,
        prompts,
        judge=lambda setting, logprobs, batch: label_restricted_correct(logprobs, batch, label_ids[setting]),
        batch_size=cfg.batch_size,
        desc="recognition_vs_learning",
        show_progress=show_progress,
    )
    return RecognitionResult(
        model=model_name(model),
        task=task.name,
        labels=labels,
        label_map=label_map,
        settings=SETTINGS,
        shots=cfg.shots,
        accuracy=correct.float().mean(-1),
        correct=correct,
        chance=1.0 / len(labels),
        config=cfg,
    )
