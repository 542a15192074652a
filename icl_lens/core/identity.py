"""Which weights a model has: a fingerprint that tells two models with the same name apart.

Vectors and cached activations belong to the weights they were read from. A model's name
and sizes do not identify them (two ``tiny_model`` runs, a fine-tuned copy, another
``d_head`` with the same ``d_model``), so :func:`weight_signature` records the shape of
every parameter (compared exactly) and two values sampled from each (compared with a
tolerance, because folding weights on another device changes the last bits).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from icl_lens.core.hooks import HookedModel

RTOL = 1e-3
"""Relative tolerance on sampled weights: far above float noise, far below any real change."""


def weight_signature(model: HookedModel) -> tuple[str, tuple[float, ...]]:
    """``(digest of every parameter's name and shape, two sampled values per parameter)``."""
    shapes, values = [], []
    named = getattr(model, "named_parameters", None)
    for name, p in sorted(named() if named is not None else [], key=lambda item: item[0]):
        shapes.append(f"{name}:{tuple(p.shape)}")
        flat = p.detach().reshape(-1)
        n = flat.numel()
        if n:
            values += [float(flat[n // 3]), float(flat[(2 * n) // 3])]
    digest = hashlib.sha256("|".join(shapes).encode()).hexdigest()[:16]
    return digest, tuple(values)


def same_weights(a: tuple[str, Sequence[float]], b: tuple[str, Sequence[float]]) -> bool:
    """Whether two signatures describe the same weights (shapes exact, values within :data:`RTOL`)."""
    if a[0] != b[0] or len(a[1]) != len(b[1]):
        return False
    x, y = torch.tensor(a[1], dtype=torch.float64), torch.tensor(b[1], dtype=torch.float64)
    return bool(torch.allclose(x, y, rtol=RTOL, atol=1e-6))
