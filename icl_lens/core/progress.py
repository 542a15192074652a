"""Progress bars that can be silenced globally or per call."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_ENABLED: bool = os.environ.get("ICL_LENS_PROGRESS", "1") not in {"0", "false", "False", "no"}


def set_progress(enabled: bool) -> None:
    """Show (``True``) or hide (``False``) icl_lens progress bars for this process.

    The environment variable ``ICL_LENS_PROGRESS=0`` sets the default to hidden.
    """
    global _ENABLED
    _ENABLED = bool(enabled)


def progress(
    iterable: Iterable[T], *, total: int | None = None, desc: str = "", enabled: bool | None = None
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar unless progress is switched off."""
    show = _ENABLED if enabled is None else enabled
    if not show:
        yield from iterable
        return
    from tqdm.auto import tqdm

    yield from tqdm(iterable, total=total, desc=desc, leave=False)


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether a bar should show: ``enabled`` if given, else the global setting."""
    return _ENABLED if enabled is None else bool(enabled)
