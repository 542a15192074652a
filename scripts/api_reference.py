"""Write docs/api.md: every public name of ``import icl_lens as il``, grouped by layer.

The groups and their order come from ``icl_lens/__init__.py`` (one star re-export per
layer, each introduced by a ``# <layer>: <what it holds>`` comment), and each group's names
from that layer's own ``__init__``, so the reference follows the package. Run ``python scripts/api_reference.py`` after changing the public surface;
``tests/test_docs.py`` fails while a public name is missing from docs/api.md.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from icl_lens.core.lazy import exported_names, package_init

ROOT = Path(__file__).resolve().parent.parent

INTRO = """# API reference

Everything public is exported by `icl_lens` (`import icl_lens as il`), grouped below by
layer, bottom to top (see [the architecture](architecture.md)). Each entry is built from
the docstring of the module that defines it. The concept pages explain the measurements;
the [errors](errors/index.md) pages say what to do about each error.
"""


def layers() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """``(layer, description, [(module, name), ...])`` in the order of ``icl_lens/__init__.py``.

    There each layer is one ``from icl_lens.<layer> import *`` introduced by a
    ``# <layer>: <what it holds>`` comment; its names are that layer package's own table
    (``icl_lens.core.lazy.exported_names``), in the order the package lists them.
    """
    source = (ROOT / "icl_lens" / "__init__.py").read_text()
    lines = source.splitlines()
    out: list[tuple[str, str, list[tuple[str, str]]]] = []
    # The re-exports sit under `if TYPE_CHECKING:` (they are imported on first use).
    body = [n for top in ast.parse(source).body for n in (top.body if isinstance(top, ast.If) else [top])]
    for node in body:
        if (
            not isinstance(node, ast.ImportFrom)
            or not node.module
            or node.module.startswith(("typing", "icl_lens.core.lazy"))
        ):
            continue
        above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
        match = re.match(r"#\s*([a-z]+):\s*(.+)", above)
        if match:
            out.append((match.group(1), match.group(2), []))
        if not out:
            continue
        if [alias.name for alias in node.names] == ["*"]:
            names = list(exported_names(package_init(node.module)).values())
        else:
            names = [(node.module, alias.name) for alias in node.names]
        out[-1][2].extend((module, name) for module, name in names if name != "__version__")
    return out


MODULES = (
    ("icl_lens.core.hooks", "The model contract: hook names, shapes under grouped-query attention, per-head W_O"),
    ("icl_lens.core.stats", "Intervals, paired tests and verdicts behind every reported number"),
    ("icl_lens.core.options", "Option strings as Literal types"),
)
"""Modules whose helpers users extend the package with (custom metrics, hooks, analyses)."""


def render() -> str:
    parts = [INTRO]
    for layer, what, names in layers():
        parts.append(f"\n## {layer}\n\n{what[0].upper() + what[1:]}.\n")
        for module, name in names:
            parts.append(f"\n::: {module}.{name}\n    options:\n      heading_level: 3\n")
    parts.append("\n## Modules for extending icl_lens\n")
    for module, what in MODULES:
        parts.append(
            f"\n### {what}\n\n::: {module}\n    options:\n      heading_level: 4\n      show_root_heading: false\n"
        )
    return "".join(parts)


if __name__ == "__main__":
    (ROOT / "docs" / "api.md").write_text(render())
