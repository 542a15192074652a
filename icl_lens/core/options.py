"""Option strings as ``Literal`` types, checked at run time with the list of valid values.

Each layer declares its options as ``Literal`` aliases next to the code that uses them
(``Method = Literal["auto", "fast", "plain"]`` in patching, ``TemplateName`` in prompting);
:func:`check_choice` turns a typo into a :class:`~icl_lens.core.errors.ConfigError` that
lists what is valid, as TransformerLens's ``head_detector`` does with ``get_args``.
"""

from __future__ import annotations

from typing import Any, TypeVar, get_args

from icl_lens.core.errors import ConfigError, IclLensError

T = TypeVar("T")


def choices(alias: Any) -> tuple[Any, ...]:
    """The values a ``Literal`` alias admits (flattening unions of literals)."""
    out: list[Any] = []
    for arg in get_args(alias):
        out.extend(choices(arg) if get_args(arg) else [arg])
    return tuple(out)


def check_choice(value: T, alias: Any, what: str, *, error: type[IclLensError] = ConfigError) -> T:
    """``value`` if it is one of the ``Literal`` alias's values, else an ``error`` listing them.

    ``error`` is :class:`ConfigError` unless the option belongs to another kind of request
    (``build_prompts(kind=...)`` raises a :class:`~icl_lens.core.errors.PromptError`).
    """
    allowed = choices(alias)
    if isinstance(value, bool) or value not in allowed:
        listed = ", ".join(repr(a) for a in allowed)
        raise error(f"{what} must be one of {listed}; got {value!r}")
    return value
