"""Universal function-vector heads (Todd et al. 2023, section 2.3), from a study's units.

For one model and seed:

1. the tasks that count are those where ICL beats the zero-shot baseline by ``margin``
   (accuracy of the function vector's own ICL prompts minus zero-shot accuracy, both on
   the implant evaluation's held-out test queries);
2. each head's universal score is its AIE averaged over those tasks;
3. the ``n_heads`` best heads form the universal set. For every task (used or not), the
   function vector is rebuilt from that task's own mean head outputs at the universal heads
   (``FunctionVectorResult.with_heads``) and evaluated like the task's own vector: these
   are the stage-2 units ``universal_fv_implant``, planned once stage 1 has finished.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch

from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.results import Config, Result
from icl_lens.prompting.tasks import Task
from icl_lens.studies.registry import Analysis, register_analysis
from icl_lens.vectors.function_vectors import FunctionVectorResult
from icl_lens.vectors.implant import ImplantConfig, ImplantResult, evaluate_implant

UNIVERSAL_KIND = "universal_fv_implant"


@dataclasses.dataclass(frozen=True)
class UniversalImplantConfig(Config):
    """A stage-2 unit: evaluate a task's function vector rebuilt from the universal heads.

    Attributes:
        heads: the universal heads ``((layer, head), ...)``, best first.
        implant: how the vector is evaluated (the spec's ``fv_implant`` config).
    """

    heads: tuple[tuple[int, int], ...] = ()
    implant: ImplantConfig = ImplantConfig()

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple((int(l), int(h)) for l, h in self.heads))
        if not self.heads:
            raise ConfigError("the universal function vector needs at least one head")


def _run_universal(
    model: HookedModel, task: Task | None, cfg: Config, needed: Mapping[str, Result], show_progress: bool | None
) -> Result:
    assert isinstance(cfg, UniversalImplantConfig)
    fv = needed["function_vector"]
    assert isinstance(fv, FunctionVectorResult)
    return evaluate_implant(model, task, fv.with_heads(list(cfg.heads)), cfg.implant, show_progress=show_progress)


register_analysis(
    Analysis(
        UNIVERSAL_KIND,
        UniversalImplantConfig,
        _run_universal,
        needs=("function_vector",),
        description="each task's function vector rebuilt from the universal heads, evaluated (stage 2)",
    ),
    replace=True,
)


@dataclasses.dataclass(frozen=True)
class UniversalHeads:
    """Which tasks count, each head's AIE per task and on average, and the best heads."""

    tasks: tuple[str, ...]
    used: tuple[bool, ...]
    icl_accuracy: tuple[float, ...]
    zero_shot_accuracy: tuple[float, ...]
    n_test: tuple[int, ...]
    aie: torch.Tensor
    mean_aie: torch.Tensor
    heads: tuple[tuple[int, int], ...]


def universal_heads(
    fvs: Mapping[str, FunctionVectorResult], implants: Mapping[str, ImplantResult], margin: float, n_heads: int
) -> UniversalHeads:
    """Todd et al.'s universal heads from per-task function vectors and their implant evaluations.

    Args:
        fvs, implants: by task label, the same tasks in both.
        margin: ICL accuracy minus zero-shot accuracy a task needs to be averaged over.
        n_heads: size of the universal set.

    Raises:
        ConfigError: no task passes the margin (the heads would be undefined).
    """
    tasks = tuple(t for t in fvs if t in implants)
    if not tasks:
        raise ConfigError("no task has both a function vector and its implant evaluation")
    icl = tuple(implants[t].acc("icl") for t in tasks)
    zs = tuple(implants[t].acc("zero_shot") for t in tasks)
    used = tuple(i - z >= margin - 1e-12 for i, z in zip(icl, zs))
    aie = torch.stack([fvs[t].aie.float() for t in tasks])
    if not any(used):
        raise ConfigError(
            f"ICL beats zero-shot by {margin:.0%} on none of the {len(tasks)} tasks, so no universal heads; "
            "lower cross_task.universal_fv.margin"
        )
    mean = aie[torch.tensor(used)].mean(0)
    order = sorted(
        ((l, h) for l in range(mean.shape[0]) for h in range(mean.shape[1])), key=lambda lh: (-float(mean[lh]), lh)
    )
    return UniversalHeads(
        tasks=tasks,
        used=used,
        icl_accuracy=icl,
        zero_shot_accuracy=zs,
        n_test=tuple(int(implants[t].correct.shape[-1]) for t in tasks),
        aie=aie,
        mean_aie=mean,
        heads=tuple(order[: min(n_heads, len(order))]),
    )


def heads_label(heads: Sequence[tuple[int, int]], k: int | None = None) -> str:
    shown = list(heads)[:k] if k is not None else list(heads)
    return " ".join(f"L{l}H{h}" for l, h in shown)


__all__ = ["UNIVERSAL_KIND", "UniversalHeads", "UniversalImplantConfig", "heads_label", "universal_heads"]
