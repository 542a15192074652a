"""Merge the saved parts of a sweep that was split across processes or machines.

A large sweep (every head of a 30-layer model, thousands of prompts) can be cut into
parts, by heads, layers or prompts, each run where there is room, saved with
``result.save(path)``, and put back together with :func:`merge_results`.

The rule, field by field, for parts of one result type:

* a field named in ``concat`` is concatenated in part order (tensors along the given
  dimension; tuples and lists end to end): the split axis, e.g. prompts;
* a floating-point tensor of the same shape in every part is filled in: each part holds
  NaN where it did not sweep (the heads or layers another part did), and the merge takes
  every entry from the part that has it. Where two parts both have an entry they must
  agree (to float rounding), else the parts are not of one sweep;
* every other field (configs, metadata, integer tensors) must be equal in all parts,
  unless ``replace`` gives the merged value (a config listing all swept heads, say).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from icl_lens.core.errors import ResultFileError
from icl_lens.core.results import Result, _equal, load_result


def merge_results(
    parts: Sequence[Result | str | os.PathLike[str]],
    *,
    concat: Mapping[str, int] | None = None,
    replace: Mapping[str, Any] | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> Result:
    """Merge the parts of one split sweep into one result.

    Args:
        parts: results, or folders they were saved to, all of one type, in split order.
        concat: fields that are the split axis, with the tensor dimension to concatenate
            along (``{"per_prompt": -1, "queries": 0}``); tuples and lists are joined.
        replace: values for fields that legitimately differ between parts (a config).
        rtol, atol: tolerance for entries that two parts both computed.

    Returns:
        A result of the parts' type, as one unsplit run would have produced.

    Raises:
        ResultFileError: parts of different types, a field that differs and is neither
            concatenated nor replaced, or overlapping entries that disagree.
    """
    loaded = [p if isinstance(p, Result) else load_result(p) for p in parts]
    if not loaded:
        raise ResultFileError("merge_results needs at least one part")
    cls = type(loaded[0])
    others = sorted({type(p).__name__ for p in loaded if type(p) is not cls})
    if others:
        raise ResultFileError(f"cannot merge a {cls.__name__} with {', '.join(others)}: parts must be of one sweep")
    concat = dict(concat or {})
    replace = dict(replace or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted((set(concat) | set(replace)) - names)
    if unknown:
        raise ResultFileError(f"{cls.__name__} has no fields {unknown}; its fields are {sorted(names)}")
    merged: dict[str, Any] = {}
    for name in (f.name for f in dataclasses.fields(cls)):
        values = [getattr(p, name) for p in loaded]
        if name in replace:
            merged[name] = replace[name]
        elif name in concat:
            merged[name] = _concatenate(name, values, concat[name])
        else:
            merged[name] = _combine(name, values, rtol, atol)
    return cls(**merged)


def _concatenate(name: str, values: list[Any], dim: int) -> Any:
    if all(isinstance(v, torch.Tensor) for v in values):
        return torch.cat(values, dim=dim)
    if all(isinstance(v, tuple) for v in values):
        return tuple(x for v in values for x in v)
    if all(isinstance(v, list) for v in values):
        return [x for v in values for x in v]
    raise ResultFileError(
        f"field {name!r} cannot be concatenated: its parts are {sorted({type(v).__name__ for v in values})}"
    )


def _combine(name: str, values: list[Any], rtol: float, atol: float) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor) and first.is_floating_point():
        return _fill(name, values, rtol, atol)
    if all(_equal(first, v) for v in values[1:]):
        return first
    raise ResultFileError(
        f"field {name!r} differs between the parts and is not a NaN-filled sweep tensor; name it in "
        "concat= if it is the split axis, or give its merged value in replace=."
    )


def _fill(name: str, values: list[torch.Tensor], rtol: float, atol: float) -> torch.Tensor:
    out = values[0].clone()
    for i, v in enumerate(values[1:], start=1):
        if v.shape != out.shape or v.dtype != out.dtype:
            raise ResultFileError(
                f"field {name!r}: part {i} has shape {tuple(v.shape)} {v.dtype}, part 0 {tuple(out.shape)} "
                f"{out.dtype}; split along an axis? name it in concat="
            )
        v = v.to(out.device)
        both = ~torch.isnan(out) & ~torch.isnan(v)
        if both.any() and not torch.allclose(out[both], v[both], rtol=rtol, atol=atol):
            worst = float((out[both] - v[both]).abs().max())
            raise ResultFileError(
                f"field {name!r}: parts 0..{i - 1} and part {i} both computed {int(both.sum())} entries and "
                f"disagree (max difference {worst:.3g}); they are not parts of one sweep"
            )
        out = torch.where(torch.isnan(out), v, out)
    return out


__all__ = ["merge_results"]
