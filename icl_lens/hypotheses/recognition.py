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
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from icl_lens.core.errors import ConfigError, TaskError
from icl_lens.core.models import model_name
from icl_lens.core.progress import progress
from icl_lens.core.results import Config, Result
from icl_lens.prompting.evaluation import answer_logprobs
from icl_lens.prompting.prompts import Template, build_prompts, get_template
from icl_lens.prompting.tasks import Task, load_task

SETTINGS = ("gold", "random", "abstract")
ABSTRACT_POOLS: dict[str, tuple[str, ...]] = {
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
    abstract_labels: str | tuple[str, ...] = "letters"
    batch_size: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "shots", tuple(int(s) for s in self.shots))
        if not self.shots or any(s < 0 for s in self.shots):
            raise ConfigError(f"shots must be non-negative integers, got {self.shots}")
        if self.n_prompts < 1 or self.batch_size < 1:
            raise ConfigError("n_prompts and batch_size must be >= 1")
        if isinstance(self.abstract_labels, str):
            if self.abstract_labels not in ABSTRACT_POOLS:
                raise ConfigError(
                    f"abstract_labels must be one of {sorted(ABSTRACT_POOLS)} or a tuple of strings, "
                    f"got {self.abstract_labels!r}"
                )
        else:
            pool = tuple(str(s) for s in self.abstract_labels)
            if len(set(pool)) != len(pool) or any(not s.strip() for s in pool):
                raise ConfigError(f"abstract_labels must be distinct non-empty strings, got {pool}")
            object.__setattr__(self, "abstract_labels", pool)
        get_template(self.template)


@dataclasses.dataclass(frozen=True)
class RecognitionResult(Result):
    """Accuracy by shot count with gold, random and abstract labels.

    ``correct[s, k, i]``: prompt ``i`` in setting ``settings[s]`` with ``shots[k]``
    demonstrations was answered correctly (label-restricted first-token top-1).
    ``label_map`` maps each real label to its abstract stand-in.
    """

    title = "Task recognition vs task learning"

    model: str
    task: str
    labels: tuple[str, ...]
    label_map: dict[str, str]
    settings: tuple[str, ...]
    shots: tuple[int, ...]
    accuracy: Float[Tensor, "settings shots"]
    correct: Bool[Tensor, "settings shots prompts"]
    chance: float
    config: RecognitionConfig

    def accuracy_of(self, setting: str) -> list[float]:
        """Accuracy by shot count in one setting (``"gold"``, ``"random"``, ``"abstract"``)."""
        return self.accuracy[self.settings.index(setting)].tolist()

    def to_dataframe(self) -> Any:
        import pandas as pd

        rows = []
        for s, setting in enumerate(self.settings):
            for k, n in enumerate(self.shots):
                rows.append(
                    dict(
                        setting=setting,
                        shots=n,
                        accuracy=float(self.accuracy[s, k]),
                        chance=self.chance,
                        n_prompts=int(self.correct.shape[-1]),
                    )
                )
        return pd.DataFrame(rows)

    def summary(self) -> str:
        k = self.shots[-1]
        parts = ", ".join(f"{s} {float(self.accuracy[i, -1]):.0%}" for i, s in enumerate(self.settings))
        return f"{self.model} on {self.task}, {k} shots: {parts} (chance {self.chance:.0%})"

    def _plot(self, ax: Any) -> None:
        x = list(range(len(self.shots)))
        styles = {"gold": ("tab:blue", "o"), "random": ("tab:orange", "s"), "abstract": ("tab:green", "^")}
        names = {
            "gold": "gold labels",
            "random": "random labels (recognition)",
            "abstract": "abstract labels (learning)",
        }
        for s, setting in enumerate(self.settings):
            color, marker = styles.get(setting, (None, "o"))
            ax.plot(x, self.accuracy[s].tolist(), marker=marker, color=color, label=names.get(setting, setting))
        ax.axhline(self.chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({self.chance:.0%})")
        ax.set_xticks(x, [str(s) for s in self.shots])
        ax.set_xlabel("demonstrations (shots)")
        ax.set_ylabel("label-restricted accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"Recognition vs learning: {self.task} ({self.model})", fontsize="medium")
        ax.legend(fontsize="small")


def abstract_label_map(
    tokenizer: Any, labels: Sequence[str], pool: str | Sequence[str] = "letters", *, lead: str = " ", seed: int = 0
) -> dict[str, str]:
    """A seeded bijection from real labels to unrelated single-token stand-ins.

    A stand-in qualifies when ``lead + stand_in`` is one token for ``tokenizer``, it is
    not itself a real label (case-insensitively), and its token differs from the first
    token of every real label (so a prediction never counts for both). ``lead`` is the
    text the template puts before an output (a space for ``"x -> y"``).
    """
    candidates = list(ABSTRACT_POOLS[pool]) if isinstance(pool, str) else [str(s) for s in pool]
    labels = list(labels)
    real_first = {_first_token(tokenizer, lead + y) for y in labels}
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


def _first_token(tokenizer: Any, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise TaskError(f"label {text!r} tokenizes to nothing")
    return int(ids[0])


def label_first_tokens(tokenizer: Any, labels: Sequence[str], template: Template) -> Int[Tensor, " labels"]:
    """First token of each label as it appears after the template's output lead.

    Raises :class:`ConfigError` if two labels share a first token: a label-restricted
    prediction could not tell them apart.
    """
    lead = template.parts()[3]
    ids = [_first_token(tokenizer, lead + y) for y in labels]
    if len(set(ids)) != len(ids):
        clash = [(y, tokenizer.decode([i])) for y, i in zip(labels, ids, strict=True)]
        raise ConfigError(
            f"labels share a first token ({clash}); label-restricted predictions need distinct first "
            "tokens. Rename the labels (e.g. 'N. America') or use another template."
        )
    return torch.tensor(ids, dtype=torch.long)


def task_labels(task: Task) -> tuple[str, ...]:
    """The label set of a classification-style task (its ``labels``, else few distinct outputs)."""
    if task.labels:
        return tuple(task.labels)
    distinct = sorted(set(task.outputs))
    if 2 <= len(distinct) <= 20 and len(distinct) <= len(task) // 4:
        return tuple(distinct)
    raise TaskError(
        f"task {task.name!r} has no small label set ({len(distinct)} distinct outputs in {len(task)} pairs). "
        "This analysis needs a classification-style task such as number_parity, animal_object, word_pos or "
        "country_continent, or a Task(labels=...) of your own."
    )


def _random_label_task(task: Task, labels: Sequence[str], seed: int) -> Task:
    rng = random.Random(f"{seed}:random-labels")
    pairs = tuple((x, labels[rng.randrange(len(labels))]) for x in task.inputs)
    return dataclasses.replace(task, name=f"{task.name}[random labels]", pairs=pairs)


def recognition_vs_learning(
    model: Any,
    task: Task | str,
    config: RecognitionConfig | None = None,
    *,
    shots: Sequence[int] | None = None,
    show_progress: bool | None = None,
) -> RecognitionResult:
    """Accuracy by shot count with gold, random (recognition) and abstract (learning) labels.

    Args:
        model: a TransformerBridge / HookedTransformer with a tokenizer.
        task: a classification-style task (a shared label set), or its name.
        config: see :class:`RecognitionConfig`.
        shots: overrides ``config.shots``.

    Returns:
        A :class:`RecognitionResult`; ``plot()`` draws the three curves with chance.
    """
    cfg = config or RecognitionConfig()
    if shots is not None:
        cfg = cfg.replace(shots=tuple(shots))
    task = load_task(task)
    labels = task_labels(task)
    template = get_template(cfg.template)
    tokenizer = model.tokenizer
    lead = template.parts()[3]
    label_map = abstract_label_map(tokenizer, labels, cfg.abstract_labels, lead=lead, seed=cfg.seed)
    if set(task.outputs) - set(labels):
        raise TaskError(f"task {task.name!r} has outputs outside its labels {labels}")
    if len(task) < max(cfg.shots) + 1:
        raise ConfigError(f"task {task.name!r} has {len(task)} pairs, too few for {max(cfg.shots)} shots")

    abstract_task = dataclasses.replace(
        task, name=f"{task.name}[abstract]", pairs=tuple((x, label_map[y]) for x, y in task.pairs)
    )
    # Same inputs in the same order in every pool, so every setting gets the same queries
    # and the same demonstration inputs; only the labels differ.
    setups = {
        "gold": (task, task, labels),
        "random": (task, _random_label_task(task, labels, cfg.seed), labels),
        "abstract": (abstract_task, abstract_task, tuple(label_map[y] for y in labels)),
    }
    correct = torch.zeros(len(SETTINGS), len(cfg.shots), cfg.n_prompts, dtype=torch.bool)
    jobs = [(s, k) for s in range(len(SETTINGS)) for k in range(len(cfg.shots))]
    for s, k in progress(jobs, desc="recognition_vs_learning", enabled=show_progress):
        query_task, demo_pool, label_set = setups[SETTINGS[s]]
        label_ids = label_first_tokens(tokenizer, label_set, template)
        batch = build_prompts(model, query_task, cfg.shots[k], cfg.n_prompts, cfg.seed, template, demos_from=demo_pool)
        logprobs = answer_logprobs(model, batch, batch_size=cfg.batch_size)
        predicted = label_ids[logprobs[:, label_ids].argmax(-1)]
        correct[s, k] = predicted == batch.answer_ids
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
