"""Plotting helpers shared by every result: matplotlib imported lazily, never the network.

matplotlib is an optional dependency (``icl_lens[plot]``); nothing here imports it until
a figure is asked for, and the Agg backend is chosen when no backend was set, so plots
work in scripts, CI and notebooks alike.
"""

from __future__ import annotations

import base64
import io
import os
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot``, with a clear error when matplotlib is not installed."""
    try:
        import matplotlib

        if "MPLBACKEND" not in os.environ:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("plotting needs matplotlib: pip install 'icl_lens[plot]'") from e
    return plt


def figure_and_axes(ax: Any = None, figsize: tuple[float, float] = (6.4, 4.0)) -> tuple[Any, Any]:
    """``(figure, axes)``: ``ax`` and its figure, or a new figure of ``figsize``."""
    if ax is not None:
        return ax.figure, ax
    return pyplot().subplots(figsize=figsize)


def png_bytes(fig: Any, dpi: int = 100) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    return buf.getvalue()


def img_tag(png: bytes, alt: str = "") -> str:
    """An ``<img>`` with the PNG inlined as a data URI (renders offline)."""
    import html

    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'
