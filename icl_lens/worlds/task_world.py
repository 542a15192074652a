"""The ICL task world: a mixture of known functions, shown as ``x -> f(x)`` demonstrations.

Every training sequence picks one task ``f`` of the world and shows ``max_shots``
demonstrations of it on distinct random inputs, in exactly the format the package's
prompts use (``"hendel"``: ``{input} -> {output}\\n``, one token per piece, see
:mod:`icl_lens.worlds.vocab`)::

    [BOS] 17 -> 18 \\n 3 -> 4 \\n 40 -> 41 \\n ...

The loss is the cross-entropy of every output given what precedes it, so one sequence
trains the model at every shot count from 0 (the first demonstration, where only the task
prior is known) to ``max_shots - 1``. A prompt built by :func:`icl_lens.build_prompts`
for one of :attr:`TaskToyConfig.tasks` is therefore a training sequence cut after a
query's arrow: every analysis of the package runs on the world unchanged.

Two worlds:

* ``"tasks"``: each task is a fixed function of the input (copy, successor, a shift, a
  random permutation, a colour class); the demonstrations only say *which* one. This is
  the setting where task vectors (Hendel et al. 2023) can exist: the task is a few bits
  that a vector can carry.
* ``"control"``: every input belongs to one of ``n_classes`` classes, written in the input
  itself (``"B 17"``: class ``B``, item 17), but the class *names* (the outputs) are a
  fresh random choice from an 8-word pool in every sequence: task learning, the answer is
  defined only by the demonstrations' labels. The model must find a demonstration of the
  query's class and copy its label, a lookup that depends on the query; it has never seen
  a naming twice, so it has no reason to hold one in a single vector. A Task of this world
  is one fixed naming. The lookup needs an induction-like circuit, which the models tried
  so far learn slowly (train it naturally, ``tvp_layer=None``; docs/positive-controls.md).

The task-vector prompting loss (TVP-loss) of Yang et al. (2025), "Task vectors in
in-context learning: emergence, formation, and benefit", is a training option
(``tvp_layer``): the residual stream after block ``tvp_layer`` at the arrow of a
demonstration (an ICL state) replaces the arrow's state in a zero-shot prompt ``[BOS] x'
->`` of another input ``x'`` of the same task, and the cross-entropy of ``f(x')`` there is
added to the loss (times ``tvp_weight``). Using another query than the one the state was
read at makes the vector carry the task, not the answer.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.options import check_choice
from icl_lens.core.results import Config
from icl_lens.prompting.tasks import Task
from icl_lens.worlds.vocab import ARROW, NEWLINE, SPECIAL

WorldName = Literal["tasks", "control"]
Positions = Literal["standard", "rotary"]

CLASS_LABELS: dict[str, tuple[str, ...]] = {
    "parity": ("even", "odd"),
    "colour": ("red", "green", "blue", "gold"),
    "shape": ("circle", "square", "star", "heart"),
    "size": ("small", "medium", "large"),
}
"""Label words of the classification tasks (``parity`` by the number, the others random, balanced)."""
LABEL_POOL = ("red", "green", "blue", "gold", "pink", "grey", "teal", "plum")
CLASS_LETTERS = "ABCDEFGH"
DEFAULT_TASKS = ("copy", "successor", "parity", "colour", "shape", "size")
TASK_KINDS = ("copy", "successor", "predecessor", "shift_<k>", "permutation_<i>", *CLASS_LABELS)
BOS_ID = 0


@dataclasses.dataclass(frozen=True)
class TaskToyConfig(Config):
    """A task world and how to train a transformer on it.

    Attributes:
        world: ``"tasks"`` (fixed functions) or ``"control"`` (fresh label names per sequence).
        tasks: the world's functions (``"tasks"`` only): ``copy``, ``successor``,
            ``predecessor``, ``shift_<k>`` (``x + k`` mod ``n_inputs``), ``permutation_<i>``
            (a fixed random permutation), and classifications: ``parity`` (even/odd),
            ``colour``, ``shape``, ``size`` (fixed, balanced random classes; see
            :data:`CLASS_LABELS`).
        n_inputs: inputs are the numbers ``0 .. n_inputs - 1``.
        n_classes, n_namings: the control world's input classes, and how many fixed
            namings (class -> label word, from an 8-word pool) become its Task objects.
        world_seed: draws the permutations, colour classes and namings.
        max_shots: demonstrations per training sequence (prompts with up to
            ``max_shots - 1`` demonstrations and a query are in distribution).
        n_layers, n_heads, d_model, d_head: the transformer (LayerNorm,
            ``d_mlp = 4 d_model``); ``positions``: learned (``"standard"``) or ``"rotary"``;
            ``attn_only``: no MLPs.
        batch_size, n_steps, lr, weight_decay, checkpoint_every, seed: training (AdamW).
        tvp_layer: ``None`` (the natural run) or the layer whose residual stream the
            task-vector prompting loss shapes; ``tvp_weight`` multiplies that loss.
    """

    world: str = "tasks"
    tasks: tuple[str, ...] = DEFAULT_TASKS
    n_inputs: int = 64
    n_classes: int = 4
    n_namings: int = 6
    world_seed: int = 0
    max_shots: int = 11
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 64
    d_head: int = 16
    positions: str = "standard"
    attn_only: bool = False
    batch_size: int = 32
    n_steps: int = 3000
    lr: float = 3e-3
    weight_decay: float = 0.01
    checkpoint_every: int = 100
    seed: int = 0
    tvp_layer: int | None = 1
    tvp_weight: float = 0.3

    def __post_init__(self) -> None:
        check_choice(self.world, WorldName, "world")
        check_choice(self.positions, Positions, "positions")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.world == "tasks":
            if len(self.tasks) < 2 or len(set(self.tasks)) != len(self.tasks):
                raise ConfigError(f"a task world needs at least 2 distinct tasks, got {self.tasks}")
            for name in self.tasks:
                _parse_task(name)
        if self.n_inputs < 8:
            raise ConfigError(f"n_inputs must be >= 8, got {self.n_inputs}")
        if not 2 <= self.n_classes <= len(LABEL_POOL) or self.n_namings < 1:
            raise ConfigError(f"need 2 <= n_classes <= {len(LABEL_POOL)} and n_namings >= 1")
        if not 2 <= self.max_shots <= self.n_inputs:
            raise ConfigError(f"need 2 <= max_shots <= n_inputs, got {self.max_shots}")
        if min(self.n_layers, self.n_heads, self.d_model, self.d_head, self.batch_size, self.checkpoint_every) < 1:
            raise ConfigError("sizes, batch_size and checkpoint_every must be >= 1")
        if self.n_steps < 0:
            raise ConfigError("n_steps must be >= 0")
        if self.tvp_layer is not None and not 0 <= self.tvp_layer < self.n_layers:
            raise ConfigError(f"tvp_layer must be None or a layer in 0..{self.n_layers - 1}, got {self.tvp_layer}")

    @property
    def input_width(self) -> int:
        """Tokens per input: 1 (``"17"``), or 2 in the control world (``"B"``, ``" 17"``)."""
        return 1 if self.world == "tasks" else 2

    @property
    def demo_width(self) -> int:
        """Tokens per demonstration: the input, ``" ->"``, the output and ``"\\n"``."""
        return self.input_width + 3

    @property
    def seq_len(self) -> int:
        """Tokens per training sequence: BOS and ``max_shots`` demonstrations."""
        return 1 + self.demo_width * self.max_shots


# ---------------------------------------------------------------------------------------
# the world: vocabulary and tasks
# ---------------------------------------------------------------------------------------
def world_words(config: TaskToyConfig) -> tuple[str, ...]:
    """Every token of the world after the special ones: arrow, newline, inputs, outputs, labels."""
    n = config.n_inputs
    if config.world == "tasks":
        labels = [w for t in config.tasks if t in CLASS_LABELS for w in CLASS_LABELS[t]]
        return (ARROW, NEWLINE, *(str(i) for i in range(n)), *(f" {i}" for i in range(n)), *(f" {w}" for w in labels))
    letters = CLASS_LETTERS[: config.n_classes]
    return (ARROW, NEWLINE, *letters, *(f" {i}" for i in range(n)), *(f" {w}" for w in LABEL_POOL))


def _token_ids(config: TaskToyConfig) -> dict[str, int]:
    return {w: i + len(SPECIAL) for i, w in enumerate(world_words(config))}


def _parse_task(name: str) -> tuple[str, int]:
    for kind in ("shift", "permutation"):
        if name.startswith(kind + "_") and name[len(kind) + 1 :].isdigit():
            return kind, int(name[len(kind) + 1 :])
    if name in ("copy", "successor", "predecessor", *CLASS_LABELS):
        return name, 0
    raise ConfigError(f"unknown task {name!r}; the world's tasks are {', '.join(TASK_KINDS)}")


def task_outputs(config: TaskToyConfig, name: str) -> list[str]:
    """``outputs[x]``: the output word of task ``name`` for input ``x`` (``"tasks"`` world)."""
    n = config.n_inputs
    kind, k = _parse_task(name)
    if kind == "parity":
        return [CLASS_LABELS["parity"][x % 2] for x in range(n)]
    if kind in CLASS_LABELS:
        words = CLASS_LABELS[kind]
        classes = [i % len(words) for i in range(n)]
        random.Random(f"{config.world_seed}:{kind}").shuffle(classes)
        return [words[c] for c in classes]
    if kind == "permutation":
        perm = list(range(n))
        random.Random(f"{config.world_seed}:permutation:{k}").shuffle(perm)
        return [str(p) for p in perm]
    shift = {"copy": 0, "successor": 1, "predecessor": -1, "shift": k}[kind]
    return [str((x + shift) % n) for x in range(n)]


def input_classes(config: TaskToyConfig) -> list[int]:
    """The control world's class of every input (balanced, fixed by ``world_seed``)."""
    classes = [i % config.n_classes for i in range(config.n_inputs)]
    random.Random(f"{config.world_seed}:classes").shuffle(classes)
    return classes


def control_namings(config: TaskToyConfig) -> list[tuple[str, ...]]:
    """The control world's fixed namings (class -> label word) that become its Task objects."""
    rng = random.Random(f"{config.world_seed}:namings")
    return [tuple(rng.sample(LABEL_POOL, config.n_classes)) for _ in range(config.n_namings)]


def world_tasks(config: TaskToyConfig) -> tuple[Task, ...]:
    """The world's tasks as ordinary :class:`~icl_lens.Task` objects (``input -> output`` words)."""
    inputs = [str(i) for i in range(config.n_inputs)]
    if config.world == "tasks":
        out = []
        for name in config.tasks:
            outputs = task_outputs(config, name)
            labels = CLASS_LABELS.get(name)
            out.append(Task(name=name, pairs=tuple(zip(inputs, outputs)), labels=labels, source="task world"))
        return tuple(out)
    classes = input_classes(config)
    items = [f"{CLASS_LETTERS[c]} {x}" for x, c in zip(inputs, classes)]
    return tuple(
        Task(
            name=f"naming_{i}",
            pairs=tuple((x, naming[c]) for x, c in zip(items, classes)),
            labels=naming,
            description="control world: class names are fresh in every training sequence",
            source="control world",
        )
        for i, naming in enumerate(control_namings(config))
    )


# ---------------------------------------------------------------------------------------
# training batches and losses
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class WorldBatch:
    """Training sequences and, for the TVP-loss, zero-shot queries of the same tasks."""

    tokens: Int[Tensor, "batch seq"]
    zero_shot: Int[Tensor, "batch zs_len"]
    zero_shot_answer: Int[Tensor, " batch"]
    tvp_shot: Int[Tensor, " batch"]


def output_table(config: TaskToyConfig) -> Int[Tensor, "tasks inputs"]:
    """Token id of every task's output for every input (``"tasks"`` world)."""
    ids = _token_ids(config)
    return torch.tensor([[ids[" " + y] for y in task_outputs(config, t)] for t in config.tasks], dtype=torch.long)


def world_batch(config: TaskToyConfig, n: int, generator: torch.Generator) -> WorldBatch:
    """``n`` training sequences (see the module docstring); advances ``generator``."""
    ids = _token_ids(config)
    k, m = config.max_shots, config.n_inputs
    inputs = torch.rand(n, m, generator=generator).argsort(-1)[:, : k + 1]  # distinct; the last is the TVP query
    if config.world == "tasks":
        table = output_table(config)
        task = torch.randint(0, len(config.tasks), (n,), generator=generator)
        outputs = table[task[:, None], inputs]
    else:
        pool = torch.tensor([ids[" " + w] for w in LABEL_POOL])
        naming = torch.rand(n, len(LABEL_POOL), generator=generator).argsort(-1)[:, : config.n_classes]
        classes = torch.tensor(input_classes(config))[inputs]
        outputs = pool[naming.gather(1, classes)]
    if config.world == "tasks":
        input_tokens = (inputs + ids["0"])[..., None]
    else:
        letters = torch.tensor([ids[CLASS_LETTERS[c]] for c in input_classes(config)])
        input_tokens = torch.stack([letters[inputs], inputs + ids[" 0"]], -1)
    w, iw = config.demo_width, config.input_width
    tokens = torch.empty(n, config.seq_len, dtype=torch.long)
    tokens[:, 0] = BOS_ID
    for j in range(iw):
        tokens[:, 1 + j :: w] = input_tokens[:, :k, j]
    tokens[:, 1 + iw :: w] = ids[ARROW]
    tokens[:, 2 + iw :: w] = outputs[:, :k]
    tokens[:, 3 + iw :: w] = ids[NEWLINE]
    bos, arrow = torch.full((n, 1), BOS_ID), torch.full((n, 1), ids[ARROW])
    zero_shot = torch.cat([bos, input_tokens[:, k], arrow], 1)
    tvp_shot = torch.randint(1, k, (n,), generator=generator)
    return WorldBatch(tokens=tokens, zero_shot=zero_shot, zero_shot_answer=outputs[:, k], tvp_shot=tvp_shot)


def arrow_positions(config: TaskToyConfig) -> Int[Tensor, " shots"]:
    """Positions of the arrows, where each output is predicted."""
    return torch.arange(config.max_shots) * config.demo_width + 1 + config.input_width


def world_loss(model: hooks.HookedModel, config: TaskToyConfig, batch: WorldBatch) -> Tensor:
    """Cross-entropy of every output, plus ``tvp_weight`` times the TVP-loss when ``tvp_layer`` is set."""
    arrows = arrow_positions(config)
    if config.tvp_layer is None:
        logits = model(batch.tokens)
        return F.cross_entropy(logits[:, arrows].flatten(0, 1), batch.tokens[:, arrows + 1].flatten())
    states: dict[str, Tensor] = {}

    def keep(act: Tensor, hook: object) -> None:
        states["icl"] = act  # not detached: the TVP-loss trains the layers that write the state

    logits = hooks.forward(model, batch.tokens, fwd_hooks=[(hooks.resid_post(config.tvp_layer), keep)])
    icl_loss = F.cross_entropy(logits[:, arrows].flatten(0, 1), batch.tokens[:, arrows + 1].flatten())
    rows = torch.arange(len(batch.tvp_shot))
    vectors = states["icl"][rows, arrows[batch.tvp_shot]]

    def put(act: Tensor, hook: object) -> Tensor:
        act = act.clone()
        act[:, -1] = vectors
        return act

    zs_logits = hooks.forward(model, batch.zero_shot, fwd_hooks=[(hooks.resid_post(config.tvp_layer), put)])
    tvp_loss = F.cross_entropy(zs_logits[:, -1], batch.zero_shot_answer)
    return icl_loss + config.tvp_weight * tvp_loss
