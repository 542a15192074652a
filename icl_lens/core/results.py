"""Typed, frozen result objects and configs, saved as safetensors + JSON (never pickle).

Every analysis returns a subclass of :class:`Result`: a frozen dataclass holding tensors,
plain values and the config that produced it. Subclasses implement ``to_dataframe()`` and
``_plot(ax)``; this module gives them ``plot()``, ``_repr_html_`` (an HTML table and an
inline PNG, nothing fetched from the network), and ``save(path)`` / ``load(path)``.

A saved result is a directory holding ``result.json`` (type, config and every non-tensor
field, human readable) and ``tensors.safetensors``. It is written to a temporary sibling
directory and renamed into place, so an interrupted save never leaves a directory that
looks complete.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from icl_lens.core.errors import ConfigError, ResultFileError
from icl_lens.core.plotting import pyplot
from icl_lens.core.registry import register, registered
from icl_lens.core.result_files import read_result_files, write_result_files
from icl_lens.core.validate import check_fields, path as validate_path

FORMAT_VERSION = 1

R = TypeVar("R", bound="Result")
C = TypeVar("C", bound="Config")


# ---------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every analysis config: frozen, validated, round-trips through a dict."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register(cls)
        # Every field is checked against its annotation before the config's own checks, so
        # `seed=1.0` or `shots=5` fails here, naming the field, in every config alike.
        own = cls.__dict__.get("__post_init__")
        if own is None:
            return  # the inherited __post_init__ checks this class's fields too

        def __post_init__(self: Config) -> None:
            check_fields(self)
            own(self)

        cls.__post_init__ = __post_init__  # type: ignore[attr-defined]

    def __post_init__(self) -> None:
        check_fields(self)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _encode_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(_unknown_fields_message(cls.__name__, unknown, [f.name for f in dataclasses.fields(cls)]))
        return cls(**{k: _decode_plain(v) for k, v in data.items()})

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again).

        Raises:
            ConfigError: a name that is not a field of this config, naming the valid ones.
        """
        names = [f.name for f in dataclasses.fields(self)]
        unknown = [k for k in changes if k not in names]
        if unknown:
            raise ConfigError(_unknown_fields_message(type(self).__name__, unknown, names))
        return dataclasses.replace(self, **changes)

    @classmethod
    def resolve(cls: type[C], config: C | None, overrides: dict[str, Any]) -> C:
        """The config an analysis runs with: ``config`` (default: ``cls()``) with ``overrides`` applied.

        Every analysis calls this with its ``config`` argument and its keyword overrides,
        so ``analysis(model, task, n_shots=5)`` and ``analysis(model, task,
        Config(n_shots=5))`` are the same call, and a misspelt override fails naming the
        valid fields instead of being ignored.
        """
        if config is not None and not isinstance(config, cls):
            raise ConfigError(f"config must be a {cls.__name__}, got {type(config).__name__}")
        base = config if config is not None else cls()
        return base.replace(**overrides) if overrides else base


def _unknown_fields_message(cls_name: str, unknown: list[str], names: list[str]) -> str:
    import difflib

    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, names, n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"{cls_name} has no field {', '.join(hints)}; valid fields: {', '.join(names)}"


def _encode_plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"__tuple__": [_encode_plain(v) for v in value]}
    if isinstance(value, list):
        return [_encode_plain(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[_encode_plain(k), _encode_plain(v)] for k, v in value.items()]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            "__dataclass__": type(value).__name__,
            "fields": {f.name: _encode_plain(getattr(value, f.name)) for f in dataclasses.fields(value)},
        }
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    if isinstance(value, torch.Tensor):
        raise ConfigError("tensors belong in result fields, not in configs or metadata")
    raise ConfigError(f"cannot serialise {type(value).__name__} ({value!r}) to JSON")


def _decode_plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_plain(v) for v in value]
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(_decode_plain(v) for v in value["__tuple__"])
        if "__dict__" in value:
            return {_decode_plain(k): _decode_plain(v) for k, v in value["__dict__"]}
        if "__dataclass__" in value:
            name = value["__dataclass__"]
            cls = registered(name)
            if cls is None:
                raise ResultFileError(
                    f"saved file refers to {name!r}, which this version of icl_lens does not "
                    "know; load it with the icl_lens version that wrote it."
                )
            return cls(**{k: _decode_plain(v) for k, v in value["fields"].items()})
        return {k: _decode_plain(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Result:
    """Base class of every analysis result.

    Subclasses are frozen dataclasses whose fields are tensors, plain JSON values,
    tuples/lists/dicts of those, or registered dataclasses (configs, prompt metadata).
    """

    title: ClassVar[str] = "Result"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Keep the short repr: @dataclass does not replace a __repr__ already in the class.
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = Result.__repr__  # type: ignore[method-assign]
        register(cls)

    # -- tables and pictures --------------------------------------------------------
    def to_dataframe(self) -> Any:
        """The result as a tidy pandas DataFrame."""
        raise NotImplementedError

    def _plot(self, ax: Any) -> None:
        raise NotImplementedError

    def plot(self, ax: Any = None) -> Any:
        """Draw the result with matplotlib; returns the figure."""
        plt = pyplot()
        if ax is None:
            fig, ax = plt.subplots(figsize=(6.4, 4.0))
        else:
            fig = ax.figure
        self._plot(ax)
        fig.tight_layout()
        return fig

    def summary(self) -> str:
        """One or two lines for humans (used in ``repr`` and reports)."""
        return self.title

    def _repr_html_(self) -> str:
        parts = [f"<h4>{_escape(self.title)}</h4>", f"<p>{_escape(self.summary())}</p>"]
        try:
            df = self.to_dataframe()
            parts.append(df.head(30).to_html(float_format=lambda x: f"{x:.4g}", index=False))
            if len(df) > 30:
                parts.append(f"<p>... {len(df)} rows; use .to_dataframe() for all.</p>")
        except NotImplementedError:
            pass
        png = self.to_png()
        if png is not None:
            parts.append(f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}"/>')
        return "\n".join(parts)

    def to_png(self, dpi: int = 100) -> bytes | None:
        """The plot as PNG bytes, or ``None`` if matplotlib is missing or nothing to plot."""
        try:
            plt = pyplot()
            fig = self.plot()
        except (ImportError, NotImplementedError):
            return None
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        plt.close(fig)
        return buf.getvalue()

    # -- persistence ------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the result to folder ``path`` (created; a previous result there is replaced).

        Never deletes anything icl_lens did not write: a folder holding other files keeps
        them, and a ``result.json`` or ``tensors.safetensors`` that is not an icl_lens
        result is refused (see :mod:`icl_lens.core.result_files`).

        Raises:
            ResultFileError: ``path`` is the working directory, a file, not writable, or
                holds result-named files icl_lens did not write.
        """
        target = validate_path(path, "path", error=ResultFileError)
        tensors: dict[str, torch.Tensor] = {}
        fields = {f.name: _encode_field(getattr(self, f.name), f.name, tensors) for f in dataclasses.fields(self)}
        doc = {"format": "icl_lens.result", "version": FORMAT_VERSION, "type": type(self).__name__, "fields": fields}
        plain = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        return write_result_files(target, doc, plain)

    @classmethod
    def load(cls: type[R], path: str | os.PathLike[str]) -> R:
        """Load a result saved with :meth:`save`; checks that it is of this type."""
        obj = load_result(path)
        if cls is not Result and not isinstance(obj, cls):
            raise ResultFileError(
                f"{path} holds a {type(obj).__name__}, not a {cls.__name__}; "
                f"use il.load_result(path) to load any result."
            )
        return obj  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.summary()}>"


def load_result(path: str | os.PathLike[str]) -> Result:
    """Load any saved result, whatever its type.

    Raises:
        ResultFileError: the folder is missing, incomplete, truncated, edited by hand, or
            holds tensors of another result; the message names the file and the problem.
    """
    folder = validate_path(path, "path", error=ResultFileError)
    doc, tensors = read_result_files(folder)
    meta = folder / "result.json"
    if int(doc.get("version", 0)) > FORMAT_VERSION:
        raise ResultFileError(f"{meta} was written by a newer icl_lens (format {doc['version']}); upgrade icl_lens.")
    name = doc["type"]
    cls = registered(name)
    if cls is None or not (isinstance(cls, type) and issubclass(cls, Result)):
        raise ResultFileError(f"{meta} holds a {name!r}, which is not a result type this icl_lens knows.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    missing = [k for k, f in fields.items() if k not in doc["fields"] and _required(f)]
    unknown = [k for k in doc["fields"] if k not in fields]
    if missing or unknown:
        problems = ([f"lacks {', '.join(missing)}"] if missing else []) + (
            [f"has unknown {', '.join(unknown)}"] if unknown else []
        )
        raise ResultFileError(f"{meta}: the {name} {' and '.join(problems)}; the file is incomplete or edited by hand.")
    used: set[str] = set()
    try:
        kwargs = {k: _decode_field(v, tensors, used) for k, v in doc["fields"].items()}
    except KeyError as e:
        raise ResultFileError(
            f"{folder / 'tensors.safetensors'} lacks the tensor {e.args[0]!r} that {meta} refers to: "
            "the tensors come from another result."
        ) from None
    extra = sorted(set(tensors) - used)
    if extra:
        raise ResultFileError(
            f"{folder / 'tensors.safetensors'} holds tensors {extra[:3]} that {meta} does not refer to: "
            "the tensors come from another result."
        )
    try:
        obj = cls(**kwargs)
        check_fields(obj, error=ResultFileError)
    except ResultFileError as e:
        raise ResultFileError(f"{meta}: {e}; the saved values do not fit a {name}.") from None
    except (TypeError, ValueError, IndexError, RuntimeError) as e:
        raise ResultFileError(f"{meta}: the saved values do not make a valid {name} ({type(e).__name__}: {e}).") from e
    return obj


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _encode_field(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[key] = value
        return {"__tensor__": key}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode_field(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode_field(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            "__dict__": [[_encode_plain(k), _encode_field(v, f"{key}.{_keystr(k)}", tensors)] for k, v in value.items()]
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            "__dataclass__": type(value).__name__,
            "fields": {
                f.name: _encode_field(getattr(value, f.name), f"{key}.{f.name}", tensors)
                for f in dataclasses.fields(value)
            },
        }
    return _encode_plain(value)


def _keystr(k: Any) -> str:
    return "_".join(map(str, k)) if isinstance(k, tuple) else str(k)


def _decode_field(value: Any, tensors: dict[str, torch.Tensor], used: set[str] | None = None) -> Any:
    used = set() if used is None else used
    if isinstance(value, dict):
        if "__tensor__" in value:
            used.add(value["__tensor__"])
            return tensors[value["__tensor__"]]
        if "__tuple__" in value:
            return tuple(_decode_field(v, tensors, used) for v in value["__tuple__"])
        if "__dict__" in value:
            return {_decode_plain(k): _decode_field(v, tensors, used) for k, v in value["__dict__"]}
        if "__dataclass__" in value:
            cls = registered(value["__dataclass__"])
            if cls is None:
                raise ResultFileError(f"unknown saved type {value['__dataclass__']!r}")
            return cls(**{k: _decode_field(v, tensors, used) for k, v in value["fields"].items()})
        return {k: _decode_field(v, tensors, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_field(v, tensors, used) for v in value]
    return value


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def results_equal(a: Result, b: Result) -> bool:
    """True when two results hold the same values (tensors compared exactly; NaN, "not measured", equals NaN)."""
    if type(a) is not type(b):
        return False
    return _equal(dataclasses.asdict(a), dataclasses.asdict(b))


def _equal(x: Any, y: Any) -> bool:
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        return (
            isinstance(x, torch.Tensor)
            and isinstance(y, torch.Tensor)
            and x.dtype == y.dtype
            and x.shape == y.shape
            and _same_values(x.cpu(), y.cpu())
        )
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_equal(x[k], y[k]) for k in x)
    if isinstance(x, list | tuple) and isinstance(y, list | tuple):
        return type(x) is type(y) and len(x) == len(y) and all(_equal(a, b) for a, b in zip(x, y, strict=True))
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True  # "not measured" in both
    return x == y


def _same_values(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Exactly equal, NaN (not measured) included where both have it."""
    if torch.equal(x, y):
        return True
    if not x.is_floating_point():
        return False
    return bool(((x == y) | (torch.isnan(x) & torch.isnan(y))).all())
