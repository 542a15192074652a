"""The option strings of the patching layer, each declared once as a ``Literal``.

Functions check them with :func:`icl_lens.core.options.check_choice`, so a typo fails with
the list of valid values. The hook kinds (``ResidHook``, ``BlockHook``, ``HeadHook``)
belong to the model contract and live in :mod:`icl_lens.core.hooks`.
"""

from __future__ import annotations

from typing import Literal

from icl_lens.core.hooks import BlockHook, HeadHook

Method = Literal["auto", "fast", "plain"]
"""Which engine computes a patching run: ``"fast"`` (the exact fast engine, or an error),
``"plain"`` (full forward passes with hooks), ``"auto"`` (fast where it applies and its
control row agrees, plain for the rest). See :mod:`icl_lens.patching.runner`."""

Positions = Literal["last", "each", "all"]
"""Where a sweep patches: each prompt's answer position, every column one at a time, or
every column at once."""

ResidPositions = Literal["last", "each"]
"""Where a residual-stream sweep patches (patching every column at once would replace the
whole run)."""

CapturePositions = Literal["last", "all"]
"""Which columns an activation read keeps: the answer position, or every column."""

PatchSite = Literal[HeadHook, BlockHook]
"""An activation a sweep patches: a per-head one (``z``, ``q``, ``k``, ``v``) or a
``d_model``-wide one of a block (a residual stream, the attention or the MLP output)."""

ActivationHook = PatchSite
"""What an activation read captures at every layer: a per-head activation (``z``: the
heads' outputs before ``W_O``; ``q``, ``k``, ``v``) or a ``d_model``-wide one of a block."""

MetricName = Literal["prob", "logprob", "accuracy", "logit_diff", "kl"]
"""The built-in patching metrics (see :mod:`icl_lens.patching.metrics`)."""

AblationMethod = Literal["zero", "mean", "resample"]
"""How :func:`~icl_lens.patching.ablation.ablate_heads` replaces a head's output."""

Direction = Literal["denoising", "noising"]
"""Which way a causal trace patches: clean activations into the corrupted run (denoising),
or corrupted ones into the clean run (noising)."""

Operation = Literal["add", "replace"]
"""How a vector is put into the residual stream: added to it (function vectors) or
replacing it (task vectors)."""

RankBy = Literal["signed", "abs"]
"""How effects are ranked: by signed value (largest increase first) or by magnitude."""
