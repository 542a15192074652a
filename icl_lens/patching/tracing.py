"""Causal tracing: the layer x position maps of Meng et al. (2022, "Locating and Editing
Factual Associations in GPT"), for the residual stream, the attention output and the MLP
output, by denoising and by noising.

For each site, layer ``l`` and column ``p``, one activation of one run is replaced by the
other run's: *denoising* runs the corrupted prompts with the clean activation patched in
(how much of the clean answer comes back); *noising* runs the clean prompts with the
corrupted activation (how much of it is lost). Each map is an exact
:func:`~icl_lens.patching.resid_sweep` with ``positions="each"``: the position engine
recomputes only the columns from ``p`` on and the blocks after ``l``
(:mod:`icl_lens.patching.position_engine`).

Meng et al. corrupt the subject with Gaussian noise and patch a window of ten layers for
the MLP and attention panels; here the corrupted run is any prompt batch of the same shape
(for ICL: the same prompts with the demonstrations' labels shuffled) and each cell is one
layer, so the three panels are directly comparable.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import BlockHook, HookedModel
from icl_lens.core.models import model_name
from icl_lens.core.options import check_choice
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.patching.options import Direction, Method, MetricName
from icl_lens.patching.sweeps import resid_sweep
from icl_lens.patching.tracing_result import CausalTraceResult
from icl_lens.prompting.prompts import PromptBatch


@dataclasses.dataclass(frozen=True)
class CausalTraceConfig(Config):
    """Settings of :func:`causal_trace`.

    Attributes:
        metric: what each patched run is measured by, at the answer position (``"prob"``:
            probability of the answer's first token, as in Meng et al.).
        sites: the activations patched, one panel each: ``"resid_pre"`` (the residual
            stream entering the layer), ``"attn_out"``, ``"mlp_out"`` (what the layer's
            attention / MLP adds), or ``"resid_mid"``, ``"resid_post"``.
        directions: ``"denoising"`` (clean into corrupted) and/or ``"noising"`` (corrupted
            into clean).
        layers: layers to patch (``None``: all).
        batch_size: prompts per chunk (results do not depend on it).
        method: the patching engine's path (``"auto"``, ``"fast"``, ``"plain"``).
    """

    metric: MetricName = "prob"
    sites: tuple[BlockHook, ...] = ("resid_pre", "attn_out", "mlp_out")
    directions: tuple[Direction, ...] = ("denoising", "noising")
    layers: tuple[int, ...] | None = None
    batch_size: int | None = None
    method: Method = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", tuple(self.sites))
        object.__setattr__(self, "directions", tuple(self.directions))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(l) for l in self.layers))
        check_choice(self.metric, MetricName, "metric")
        check_choice(self.method, Method, "method")
        if not self.sites or not self.directions:
            raise ConfigError("sites and directions must each name at least one")
        for site in self.sites:
            check_choice(site, BlockHook, "each of sites")
        for direction in self.directions:
            check_choice(direction, Direction, "each of directions")
        if len(set(self.sites)) != len(self.sites) or len(set(self.directions)) != len(self.directions):
            raise ConfigError("sites and directions must not repeat")


def causal_trace(
    model: HookedModel,
    clean: PromptBatch,
    corrupted: PromptBatch,
    config: CausalTraceConfig | None = None,
    *,
    show_progress: bool | None = None,
    **overrides: Any,
) -> CausalTraceResult:
    """Layer x position maps of patching ``clean`` and ``corrupted`` into each other.

    Args:
        model: the model.
        clean: prompts the model answers (e.g. ICL prompts).
        corrupted: the same prompts, corrupted (e.g. ``kind="shuffled"``), of the same
            token shape: column ``p`` of one is patched into column ``p`` of the other.
        config: :class:`CausalTraceConfig`; keyword ``overrides`` replace its fields
            (``causal_trace(model, clean, corrupted, sites=("resid_pre",))``).
        show_progress: progress bars (default: the global setting).

    Returns:
        A :class:`CausalTraceResult`: the metric of every patched run, per site,
        direction, layer, column and prompt, with the prompts' tokens for the axis.
    """
    cfg = CausalTraceConfig.resolve(config, overrides)
    if clean.tokens.shape != corrupted.tokens.shape:
        raise ConfigError(
            f"clean and corrupted prompts are patched column by column and need the same token shape; got "
            f"{tuple(clean.tokens.shape)} and {tuple(corrupted.tokens.shape)}. Build them with the same seed "
            "(e.g. il.build_prompts(..., kind='shuffled'))."
        )
    n_layers = hooks.spec(model).n_layers
    layers = list(range(n_layers)) if cfg.layers is None else list(cfg.layers)
    runs = [(site, direction) for site in cfg.sites for direction in cfg.directions]
    patched = torch.full((len(cfg.sites), len(cfg.directions), n_layers, *clean.tokens.shape[::-1]), float("nan"))
    methods: set[str] = set()
    metric_of: dict[str, torch.Tensor] = {}
    for site, direction in progress(runs, desc="causal trace", enabled=show_progress):
        target, source = (corrupted, clean) if direction == "denoising" else (clean, corrupted)
        sweep = resid_sweep(
            model,
            target,
            source,
            metric=cfg.metric,
            positions="each",
            layers=layers,
            hook=site,
            batch_size=cfg.batch_size,
            method=cfg.method,
            show_progress=False,
        )
        patched[cfg.sites.index(site), cfg.directions.index(direction)] = sweep.patched.float().cpu()
        metric_of["corrupted" if direction == "denoising" else "clean"] = sweep.baseline.float().cpu()
        if sweep.reference is not None:
            metric_of["clean" if direction == "denoising" else "corrupted"] = sweep.reference.float().cpu()
        methods.add(sweep.method)
    return CausalTraceResult(
        model=model_name(model),
        config=cfg,
        metric=cfg.metric,
        method="+".join(sorted(methods)) if len(methods) > 1 else methods.pop(),
        sites=tuple(cfg.sites),
        directions=tuple(cfg.directions),
        tokens=_token_strings(model, clean),
        patched=patched,
        clean=metric_of["clean"],
        corrupted=metric_of["corrupted"],
    )


def _token_strings(model: HookedModel, batch: PromptBatch) -> tuple[tuple[str, ...], ...]:
    """Each prompt's tokens as strings, ``""`` for padding columns."""
    tokenizer = getattr(model, "tokenizer", None)
    out = []
    for row, mask in zip(batch.tokens.tolist(), batch.attention_mask.tolist(), strict=True):
        if tokenizer is None:
            out.append(tuple(str(t) if m else "" for t, m in zip(row, mask, strict=True)))
        else:
            out.append(tuple(tokenizer.decode([t]) if m else "" for t, m in zip(row, mask, strict=True)))
    return tuple(out)
