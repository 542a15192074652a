"""One check per kind of argument, used by every entry point that takes one.

Bad input must fail at the call, with an icl_lens error naming the argument and what to
pass instead, never as a raw ``TypeError`` from deep inside torch, and never be silently
"fixed" (``seed=1.0`` is not quietly ``1``; ``n_prompts=2.7`` is not quietly ``2``).

* scalars: :func:`seed`, :func:`count`, :func:`integer`;
* lists: :func:`int_list` (shot counts, layers), :func:`layer_list`, :func:`head_list`;
* tensors: :func:`vector` (a ``[d_model]`` or ``[batch, d_model]`` vector), :func:`token_ids`;
* paths: :func:`output_folder` (a folder the caller may write into, checked before the
  work starts), :func:`read_text_file` (UTF-8, BOM dropped, the file named on error);
* configs and results: :func:`check_fields` checks every field of a dataclass against its
  annotation (``int``, ``tuple[int, ...]``, ``float | None``, ``Literal``, jaxtyping
  shapes); :class:`~icl_lens.core.results.Config` runs it before each config's own checks.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import operator
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

from icl_lens.core.errors import ConfigError, IclLensError

Error = type[IclLensError]


def _kind(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


# ---------------------------------------------------------------------------------------
# scalars
# ---------------------------------------------------------------------------------------
def integer(
    value: Any,
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    error: Error = ConfigError,
) -> int:
    """``value`` as an ``int`` (Python or numpy integer; never a bool, a float or a string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        hint = ""
        if isinstance(value, float) and value.is_integer():
            hint = f"; write {name}={int(value)}"
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            hint = f"; write {name}={int(value)} without quotes"
        raise error(f"{name} must be an integer, got {_kind(value)}{hint}")
    out = operator.index(value)
    if minimum is not None and out < minimum:
        raise error(f"{name} must be >= {minimum}, got {out}")
    if maximum is not None and out > maximum:
        raise error(f"{name} must be <= {maximum}, got {out}")
    return out


def seed(value: Any, name: str = "seed", *, error: Error = ConfigError) -> int:
    """A random seed: a non-negative integer (``1.0``, ``"1"`` and ``None`` are refused)."""
    return integer(value, name, minimum=0, error=error)


def count(value: Any, name: str, *, minimum: int = 1, error: Error = ConfigError) -> int:
    """A number of things (prompts, shots, samples): an integer ``>= minimum``."""
    return integer(value, name, minimum=minimum, error=error)


# ---------------------------------------------------------------------------------------
# lists
# ---------------------------------------------------------------------------------------
def _sequence(value: Any, name: str, example: str, error: Error) -> Sequence[Any]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence | range):
        import torch  # a 1-d tensor of ints is a fine list

        if isinstance(value, torch.Tensor) and value.ndim == 1:
            return value.tolist()
        raise error(f"{name} must be a list or tuple such as {example}, got {_kind(value)}")
    return value


def int_list(
    value: Any,
    name: str,
    *,
    minimum: int | None = 0,
    maximum: int | None = None,
    allow_empty: bool = False,
    unique: bool = False,
    example: str = "(0, 1, 5)",
    error: Error = ConfigError,
) -> tuple[int, ...]:
    """A list of integers (shot counts, layers...) as a tuple; each checked like :func:`integer`."""
    items = _sequence(value, name, example, error)
    out = tuple(integer(v, f"{name}[{i}]", minimum=minimum, maximum=maximum, error=error) for i, v in enumerate(items))
    if not out and not allow_empty:
        raise error(f"{name} is empty; give at least one value, such as {example}")
    if unique and len(set(out)) != len(out):
        raise error(f"{name} repeats a value: {out}")
    return out


def layer_list(value: Any, n_layers: int, name: str = "layers", *, error: Error = ConfigError) -> tuple[int, ...]:
    """Layer indices of a model with ``n_layers`` blocks, each in ``[0, n_layers)``."""
    out = int_list(value, name, minimum=None, example="(3, 5)", error=error)
    bad = [layer for layer in out if not 0 <= layer < n_layers]
    if bad:
        raise error(f"{name} {bad} out of range: the model has {n_layers} layers (0 to {n_layers - 1})")
    return out


def head_list(
    value: Any,
    n_layers: int,
    n_heads: int,
    name: str = "heads",
    *,
    allow_empty: bool = False,
    error: Error = ConfigError,
) -> list[tuple[int, int]]:
    """``(layer, head)`` pairs of a model, in the order given (a bare int or a flat list is refused)."""
    example = "[(5, 1), (7, 3)]"
    items = _sequence(value, name, example, error)
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str | bytes) or not isinstance(item, Sequence) or len(item) != 2:
            raise error(f"{name}[{i}] must be a (layer, head) pair such as (5, 1), got {_kind(item)}; e.g. {example}")
        layer = integer(item[0], f"{name}[{i}] layer", error=error)
        head = integer(item[1], f"{name}[{i}] head", error=error)
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise error(f"head {(layer, head)} does not exist: the model has {n_layers} layers of {n_heads} heads")
        out.append((layer, head))
    if not out and not allow_empty:
        raise error(f"{name} is empty; give at least one (layer, head) pair, such as {example}")
    return out


# ---------------------------------------------------------------------------------------
# tensors
# ---------------------------------------------------------------------------------------
def vector(
    value: Any, width: int, name: str = "vector", *, batch: int | None = None, error: Error = ConfigError
) -> Any:
    """A float tensor ``[width]`` or ``[batch, width]`` (``batch`` checked when given)."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise error(f"{name} must be a torch tensor of shape [{width}] or [batch, {width}], got {type(value).__name__}")
    if value.ndim not in (1, 2) or value.shape[-1] != width:
        raise error(
            f"{name} has shape {tuple(value.shape)}, but this model's residual stream has width {width}: "
            f"give [{width}] or [batch, {width}] (a vector read from another model does not fit)"
        )
    if value.ndim == 2 and batch is not None and value.shape[0] not in (1, batch):
        raise error(f"{name} has {value.shape[0]} rows for a batch of {batch}; give one row per prompt or one vector")
    if not value.is_floating_point():
        raise error(f"{name} must hold floats, got dtype {value.dtype}")
    if not torch.isfinite(value).all():
        raise error(f"{name} holds NaN or infinite values")
    return value


def token_ids(tokens: Any, d_vocab: int, name: str = "tokens", *, error: Error = ConfigError) -> Any:
    """An integer tensor ``[batch, pos]`` of ids in ``[0, d_vocab)``."""
    import torch

    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise error(f"{name} must be an integer tensor [batch, pos], got {shape}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= d_vocab):
        raise error(
            f"{name} holds ids from {int(tokens.min())} to {int(tokens.max())}, outside this model's vocabulary "
            f"(0 to {d_vocab - 1}): they were made with another tokenizer; build them with this model"
        )
    return tokens


# ---------------------------------------------------------------------------------------
# paths
# ---------------------------------------------------------------------------------------
def path(value: Any, name: str, *, error: Error = ConfigError) -> Path:
    """A ``str`` or ``os.PathLike`` as a ``Path`` (``~`` expanded); an empty string is refused."""
    if not isinstance(value, str | os.PathLike) or not str(os.fspath(value)).strip():
        raise error(f"{name} must be a file or folder path (str or pathlib.Path), got {_kind(value)}")
    return Path(os.fspath(value)).expanduser()


def output_folder(value: Any, name: str = "out", *, error: Error = ConfigError) -> Path:
    """A folder the caller may write into: created if missing; refused if it is a file or not writable.

    Checked before any work is done, so an unwritable ``--out`` is found in the first
    second instead of after the computation.
    """
    import tempfile

    folder = path(value, name, error=error)
    if folder.exists() and not folder.is_dir():
        raise error(f"{name} {folder} is a file, not a folder; choose a folder name")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise error(f"cannot write into {name} {folder} ({e.strerror or e}); choose a folder you can write") from e
    return folder


def read_text_file(file: Path, what: str, *, error: Error = ConfigError) -> str:
    """The text of a UTF-8 file (a leading byte-order mark dropped); errors name the file."""
    try:
        raw = file.read_bytes()
    except OSError as e:
        raise error(f"cannot read {what} {file} ({e.strerror or e})") from e
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(
            f"{what} {file} is not UTF-8 text (byte {e.start}: {raw[e.start : e.start + 1]!r}); "
            "save it as UTF-8 (in Excel: 'CSV UTF-8')"
        ) from e


# ---------------------------------------------------------------------------------------
# dataclass fields against their annotations
# ---------------------------------------------------------------------------------------
@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    module = sys.modules.get(cls.__module__)
    namespace = dict(vars(module)) if module else {}
    out = {}
    for f in dataclasses.fields(cls):
        hint = f.type
        if isinstance(hint, str):
            try:
                hint = eval(hint, namespace)
            except Exception:  # a name only known to type checkers: not checked
                continue
        out[f.name] = hint
    return out


class _Mismatch(Exception):
    """A value does not match an annotation (internal; turned into the caller's error)."""


def check_fields(obj: Any, *, error: Error = ConfigError, names: Sequence[str] | None = None) -> None:
    """Check (and normalise: lists become tuples where a tuple is declared) ``obj``'s fields.

    Every field whose annotation can be read is checked: ``int`` (not bool, not float),
    ``float`` (int or float), ``bool``, ``str``, ``Literal``, ``X | None``, ``tuple[X, ...]``,
    fixed tuples, ``Sequence[X]``, classes (``isinstance``, which for jaxtyping annotations
    checks dtype and rank). Tensor dimensions named alike in several fields must agree.
    """
    cls = type(obj)
    hints = _hints(cls)
    try:
        import jaxtyping

        context: Any = jaxtyping.jaxtyped("context")
    except ImportError:  # pragma: no cover
        import contextlib

        context = contextlib.nullcontext()
    with context:
        for field_name, hint in hints.items():
            if names is not None and field_name not in names:
                continue
            value = getattr(obj, field_name)
            try:
                fixed = _check(value, hint)
            except _Mismatch as e:
                raise error(f"{cls.__name__}.{field_name} {e}{_disagreement(obj, hints, value, hint)}") from None
            is_seed = field_name == "seed" or field_name.endswith("_seed")
            if is_seed and isinstance(fixed, numbers.Integral) and fixed < 0:
                raise error(f"{cls.__name__}.{field_name} must be a seed >= 0, got {fixed}")
            if fixed is not value:
                object.__setattr__(obj, field_name, fixed)


def _disagreement(obj: Any, hints: dict[str, Any], value: Any, hint: Any) -> str:
    """When a tensor fits its annotation alone, the clash is with another tensor's sizes: list them."""
    shape = getattr(value, "shape", None)
    if shape is None:
        return ""
    import jaxtyping

    try:
        with jaxtyping.jaxtyped("context"):  # a fresh context: this tensor alone
            _check(value, hint)
    except _Mismatch:
        return ""
    shapes = [
        f"{name} {tuple(getattr(obj, name).shape)}" for name in hints if hasattr(getattr(obj, name, None), "shape")
    ]
    return f", which disagrees with the sizes of the other tensors ({', '.join(shapes)})"


def _describe(hint: Any) -> str:
    text = getattr(hint, "__name__", None) if isinstance(hint, type) else None
    return text or str(hint).replace("typing.", "")


def _check(value: Any, hint: Any) -> Any:
    if hint is Any or hint is object or isinstance(hint, typing.TypeVar):
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or (sys.version_info >= (3, 10) and origin is types.UnionType):
        if value is None and type(None) in args:
            return value
        failures = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return _check(value, arm)
            except _Mismatch as e:
                failures.append(str(e))
        raise _Mismatch(failures[0] if len(failures) == 1 else f"must be {_describe(hint)}, got {_kind(value)}")
    if origin is Literal:
        # The type only: which values are valid is the config's own check (check_choice),
        # whose message lists them.
        kinds = {type(a) for a in args}
        if type(value) not in kinds and not (isinstance(value, str) and str in kinds):
            raise _Mismatch(f"must be one of {', '.join(map(repr, args))}; got {_kind(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            extra = f" (write {int(value)})" if isinstance(value, float) and value.is_integer() else ""
            raise _Mismatch(f"must be an integer, got {_kind(value)}{extra}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _Mismatch(f"must be a number, got {_kind(value)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise _Mismatch(f"must be True or False, got {_kind(value)}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise _Mismatch(f"must be a string, got {_kind(value)}")
        return value
    if origin in (tuple, list, Sequence, typing.Sequence) or hint in (tuple, list):
        return _check_sequence(value, hint, origin or hint, args)
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch(f"must be a mapping, got {_kind(value)}")
        return value
    if isinstance(hint, type):
        if not isinstance(value, hint):
            shape = getattr(value, "shape", None)
            got = f"{type(value).__name__} of shape {tuple(shape)}" if shape is not None else _kind(value)
            raise _Mismatch(f"must be {_describe(hint)}, got {got}")
        return value
    return value  # Callable, Protocol, ...: not checked


def _check_sequence(value: Any, hint: Any, origin: Any, args: tuple[Any, ...]) -> Any:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence | range):
        raise _Mismatch(f"must be a list or tuple ({_describe(hint)}), got {_kind(value)}")
    items = list(value)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(items) != len(args):
            raise _Mismatch(f"must have {len(args)} items ({_describe(hint)}), got {_kind(value)}")
        checked = [_check(v, a) for v, a in zip(items, args)]
    else:
        inner = args[0] if args else Any
        checked = []
        for i, v in enumerate(items):
            try:
                checked.append(_check(v, inner))
            except _Mismatch as e:
                raise _Mismatch(f"item {i} {e}") from None
    if origin is tuple:
        same = isinstance(value, tuple) and all(a is b for a, b in zip(checked, items))
        return value if same else tuple(checked)
    return value
