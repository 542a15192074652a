"""What function vectors, task vectors and the implant evaluation share.

* The identity a vector must be used with (:class:`VectorOrigin`): the model's name, its
  weight-processing mode and sizes. A vector read in compatibility mode (folded and
  centred weights) lives in another coordinate system than one read in the bridge's
  default mode, so it is refused elsewhere (:class:`VectorMismatchError`).
* The task split: demonstrations come from the train part, layers are chosen on the dev
  part, and accuracy is reported on the test part, so no reported query was used to build
  or choose anything.
* The checks every vector analysis runs first (:func:`split_for_vectors`,
  :func:`layers_to_try`), and the KL divergence between next-token distributions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

from jaxtyping import Float
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError, VectorMismatchError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.identity import same_weights, weight_signature
from icl_lens.core.models import model_name
from icl_lens.core.results import register
from icl_lens.prompting.tasks import Task
from icl_lens.prompting.templates import Template

DEFAULT_SPLIT: tuple[float, float, float] = (0.6, 0.2, 0.2)
"""Fractions of a task's pairs used for (demonstrations and extraction, dev, test)."""

ModelMode = Literal["compatibility", "hooked_transformer", "default"]
"""The coordinate system of a model's activations (see :func:`model_mode`)."""


def model_mode(model: HookedModel) -> ModelMode:
    """The coordinate system of a model's activations.

    ``"compatibility"``: a bridge with ``enable_compatibility_mode()`` (layer norms folded,
    writing weights centred, as a ``HookedTransformer``); ``"hooked_transformer"``: a
    legacy ``HookedTransformer`` (TransformerLens 3); ``"default"``: a bridge in its default (unprocessed) mode.
    """
    if bool(getattr(model, "compatibility_mode", False)):
        return "compatibility"
    if type(model).__name__ == "HookedTransformer":
        return "hooked_transformer"
    return "default"


@register
@dataclasses.dataclass(frozen=True)
class VectorOrigin:
    """Where a vector comes from: the model, its mode, the task, the prompts and the seeds."""

    model: str
    mode: str
    n_layers: int
    d_model: int
    task: str
    template: Template
    n_shots: int
    split: tuple[float, ...]
    split_seed: int
    seed: int
    n_train: int
    n_dev: int
    n_test: int
    task_data: Task | None = None
    """The task itself (pairs included), so a saved vector says exactly what it was read from."""
    weights: str = ""
    """Digest of the model's parameter names and shapes (:func:`~icl_lens.core.identity.weight_signature`)."""
    weight_samples: tuple[float, ...] = ()
    """Weights sampled from every parameter, compared with a tolerance (empty: not recorded)."""

    def check_model(self, model: HookedModel, what: str = "this vector") -> None:
        """Raise :class:`VectorMismatchError` unless ``model`` is the model of this vector."""
        s = hooks.spec(model)
        name, mode = model_name(model), model_mode(model)
        problems = []
        if name != self.model:
            problems.append(f"it was read from model {self.model!r}, not {name!r}")
        if mode != self.mode:
            problems.append(
                f"it was read in {self.mode!r} mode and the model is in {mode!r} mode "
                "(compatibility mode folds and centres the weights, which changes the residual basis)"
            )
        if (s.n_layers, s.d_model) != (self.n_layers, self.d_model):
            problems.append(
                f"it has {self.n_layers} layers x d_model {self.d_model}, the model {s.n_layers} x {s.d_model}"
            )
        elif (
            self.weights
            and not problems
            and not same_weights((self.weights, self.weight_samples), weight_signature(model))
        ):
            problems.append(
                f"the model called {name!r} has other weights than the one the vector was read from "
                "(another seed, d_head, positional embedding or fine-tuning)"
            )
        if problems:
            raise VectorMismatchError(
                f"{what} cannot be used with this model: "
                + "; ".join(problems)
                + ". Extract the vector again from this model (il.function_vector / il.task_vector), "
                "or load the model the way it was loaded for the extraction."
            )


class FromOrigin:
    """``model`` and ``task`` names of a vector result, read from its ``origin``."""

    origin: VectorOrigin

    @property
    def model(self) -> str:
        return self.origin.model

    @property
    def task(self) -> str:
        return self.origin.task


def split_task(task: Task, fractions: Sequence[float], seed: int) -> tuple[Task, Task, Task]:
    """``(train, dev, test)``: disjoint, seeded parts of ``task`` (see :meth:`Task.split`)."""
    if len(fractions) != 3:
        raise ConfigError(f"split needs three fractions (train, dev, test), got {tuple(fractions)}")
    train, dev, test = task.split(tuple(fractions), seed=seed)
    return train, dev, test


def check_split_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(f <= 0 for f in fr) or abs(sum(fr) - 1) > 1e-6:
        raise ConfigError(f"split must be three positive fractions (train, dev, test) summing to 1, got {fr}")
    return fr


def check_train_size(task: Task, train: Task, n_shots: int, extra: int, what: str) -> None:
    """Refuse a train part too small for ``n_shots`` demonstrations plus ``extra`` queries (``what``)."""
    need = n_shots + extra
    if len(train) < need:
        raise ConfigError(
            f"the train part of task {task.name!r} has {len(train)} pairs; {n_shots} demonstrations plus "
            f"{what} need {need}. Lower n_shots or give the train part a larger fraction (config.split)."
        )


def split_for_vectors(
    model: HookedModel,
    task: Task,
    template: Template,
    n_shots: int,
    split: Sequence[float],
    split_seed: int,
    seed: int,
    *,
    extra: int,
    what: str,
) -> tuple[tuple[Task, Task, Task], VectorOrigin]:
    """The task's ``(train, dev, test)`` parts and the vector's origin, once the train part is big enough."""
    parts = split_task(task, split, split_seed)
    check_train_size(task, parts[0], n_shots, extra, what)
    s = hooks.spec(model)
    digest, samples = weight_signature(model)
    origin = VectorOrigin(
        model=model_name(model),
        mode=model_mode(model),
        n_layers=s.n_layers,
        d_model=s.d_model,
        task=task.name,
        template=template,
        n_shots=int(n_shots),
        split=tuple(float(f) for f in split),
        split_seed=int(split_seed),
        seed=int(seed),
        n_train=len(parts[0]),
        n_dev=len(parts[1]),
        n_test=len(parts[2]),
        task_data=task,
        weights=digest,
        weight_samples=samples,
    )
    return parts, origin


def check_layer_list(layers: Sequence[int] | None) -> tuple[int, ...] | None:
    """A config's ``layers`` as a tuple of ints (``None`` stays ``None``: every layer)."""
    if layers is None:
        return None
    out = tuple(int(layer) for layer in layers)
    if not out:
        raise ConfigError("layers must name at least one layer (or be None for all)")
    return out


def layers_to_try(model: HookedModel, layers: Sequence[int] | None) -> tuple[int, ...]:
    """The layers a sweep visits: ``layers`` (checked against the model), or all of them."""
    n_layers = hooks.spec(model).n_layers
    chosen = tuple(layers) if layers is not None else tuple(range(n_layers))
    if any(not 0 <= layer < n_layers for layer in chosen):
        raise ConfigError(f"layers {chosen} out of range for a {n_layers}-layer model")
    return chosen


def kl_divergence(
    reference: Float[Tensor, "batch d_vocab"], other: Float[Tensor, "batch d_vocab"]
) -> Float[Tensor, " batch"]:
    """``KL(reference || other)`` per row, from log-probabilities (nats)."""
    ref = reference.double()
    return (ref.exp() * (ref - other.double())).sum(-1).clamp_min(0.0).float()


def n_queries(requested: int, pool: Task) -> int:
    """Distinct queries: never more prompts than the pool has inputs (zero-shot prompts would repeat)."""
    return max(1, min(int(requested), len(pool)))
