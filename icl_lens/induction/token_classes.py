"""Induction-consistent and induction-inconsistent tokens (Olsson et al. 2022, section 5).

An induction head predicts that a token ``A`` is followed by whatever followed ``A``
earlier in the context. Every token of a text (after the first) falls in one class:

* **reference**: its preceding token ``A`` has not occurred before: induction has nothing
  to say about it;
* **consistent**: ``A`` occurred before and one of its earlier occurrences was followed by
  this same token: induction predicts it;
* **inconsistent**: ``A`` occurred before but was never followed by this token: induction
  points elsewhere, so a model that relies on it should predict this token *worse*.

The analyses built on this classification are
:func:`~icl_lens.induction.token_losses.induction_token_losses` (a model on natural text,
with induction heads ablated) and
:func:`~icl_lens.induction.token_training.induction_token_losses_over_training` (the
checkpoints of a toy run, across the phase change).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from icl_lens.core.errors import ConfigError
from icl_lens.core.stats import PairedComparison, compare_paired, proportion_interval

TokenClass = Literal["reference", "consistent", "inconsistent"]
TOKEN_CLASSES: tuple[str, ...] = ("reference", "consistent", "inconsistent")
"""Class names; :func:`classify_tokens` codes them 0, 1, 2 (and -1 at position 0)."""
UNCLASSIFIED, REFERENCE, CONSISTENT, INCONSISTENT = -1, 0, 1, 2
CLASS_COLORS = {"reference": "0.45", "consistent": "C2", "inconsistent": "C3"}


def classify_tokens(tokens: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """Code each token 0 (reference), 1 (consistent) or 2 (inconsistent); position 0 is -1.

    Token ``p`` is judged by its predecessor ``A = tokens[p - 1]``: reference if ``A`` does
    not occur at any position before ``p - 1``; consistent if some earlier occurrence of
    ``A`` was followed by ``tokens[p]``; inconsistent otherwise. Each row is one context.
    """
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2:
        raise ConfigError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
    out = torch.full(tokens.shape, UNCLASSIFIED, dtype=torch.long)
    for r, row in enumerate(tokens.tolist()):
        followers: dict[int, set[int]] = {}
        for p in range(1, len(row)):
            seen = followers.get(row[p - 1])
            if seen is None:
                out[r, p] = REFERENCE
            else:
                out[r, p] = CONSISTENT if row[p] in seen else INCONSISTENT
            # The bigram ending at p becomes visible only to later tokens.
            followers.setdefault(row[p - 1], set()).add(row[p])
    return out


def class_counts(classes: Int[Tensor, "unit pos"]) -> Any:
    """Tokens in each class, with the share of all classified tokens and its Wilson interval."""
    import pandas as pd

    total = int((classes >= 0).sum())
    rows = []
    for code, name in enumerate(TOKEN_CLASSES):
        n = int((classes == code).sum())
        low, high = proportion_interval(n, total)
        rows.append(dict(token_class=name, n_tokens=n, share=n / total, ci_low=low, ci_high=high))
    return pd.DataFrame(rows)


def class_means(loss: Float[Tensor, "unit pos"], classes: Int[Tensor, "unit pos"]) -> Float[Tensor, "unit n_classes"]:
    """Mean loss of each class within each unit (a context or sequence); NaN where a unit has none."""
    out = []
    for code in range(len(TOKEN_CLASSES)):
        mask = classes == code
        total = torch.where(mask, loss, torch.zeros_like(loss)).sum(1)
        out.append(total / mask.sum(1))
    return torch.stack(out, 1).float()


def paired_over_units(a: Tensor, b: Tensor, names: tuple[str, str], seed: int) -> PairedComparison:
    """``compare_paired`` over the units (contexts, sequences) where both values exist
    (with fewer than two, the difference alone: interval and p-value NaN)."""
    keep = a.isfinite() & b.isfinite()
    if int(keep.sum()) < 2:  # one unit: a mean difference, but nothing to test it against
        x, y = a[keep].double(), b[keep].double()
        d = float((x - y).mean()) if keep.any() else float("nan")
        nan = float("nan")
        return PairedComparison(
            names[0], names[1], float(x.mean()), float(y.mean()), d, nan, nan, nan, "none", int(keep.sum())
        )
    return compare_paired(a[keep], b[keep], names=names, seed=seed)
