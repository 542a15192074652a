"""Public names imported on first use, so that ``import icl_lens`` costs nothing.

Each layer package's ``__init__`` is the one place its public names are listed: as usual
re-exports, inside ``if TYPE_CHECKING:`` (type checkers, IDEs and ``scripts/api_reference.py``
read them there), and it ends with::

    __getattr__, __dir__ = lazy_exports(__name__, __file__)

A package above re-exports a whole layer with ``from icl_lens.<layer> import *`` in its own
``if TYPE_CHECKING:`` block: the star stands for that layer's table, so ``icl_lens`` lists
no name a second time. ``__all__`` is served from the same table on first use.

The first ``il.load_model`` imports ``icl_lens.core.models`` (and torch); until then nothing
heavy is loaded. That is what lets ``icl-lens`` check its arguments and answer a bad one
in a fraction of a second instead of after torch and transformers have loaded.

A lazily exported name must not be the name of a module of the same package: once that
module is imported, Python sets the package attribute to the module and the export is
shadowed (why the ICL score's module is ``icl_scoring``, not ``icl_score``;
tests/core/test_lazy.py checks every layer).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any


def exported_names(init_file: str | Path) -> dict[str, tuple[str, str]]:
    """``{public name: (module, name in that module)}`` from the imports under ``if TYPE_CHECKING:``.

    ``from icl_lens.<layer> import *`` contributes that package's own table (followed to the
    module that defines each name), in the order it lists them.
    """
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"))
    found: dict[str, tuple[str, str]] = {}
    for block in tree.body:
        if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING":
            for node in block.body:
                if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
                    continue
                if [alias.name for alias in node.names] == ["*"]:
                    found.update(exported_names(package_init(node.module)))
                    continue
                for alias in node.names:
                    found[alias.asname or alias.name] = (node.module, alias.name)
    return found


def package_init(package: str) -> str:
    """The ``__init__.py`` of ``package``, found without running it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None or not spec.origin.endswith("__init__.py"):
        raise ImportError(f"{package!r} is not a package: a star re-export must name a layer package")
    return spec.origin


def lazy_exports(package: str, init_file: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` that import each re-exported name on first use."""
    table: dict[str, tuple[str, str]] | None = None

    def names() -> dict[str, tuple[str, str]]:
        nonlocal table
        if table is None:
            table = exported_names(init_file)
        return table

    def __getattr__(name: str) -> Any:
        if name == "__all__":
            value: Any = sorted(names())
        else:
            entry = names().get(name)
            if entry is None:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            value = getattr(importlib.import_module(entry[0]), entry[1])
        module = importlib.import_module(package)
        setattr(module, name, value)  # the next access is a plain attribute
        return value

    def __dir__() -> list[str]:
        module = importlib.import_module(package)
        return sorted(set(vars(module)) | set(names()))

    return __getattr__, __dir__


def import_everything(package: str = "icl_lens") -> None:
    """Import every module of ``package`` (so that every saved result type is registered)."""
    import pkgutil

    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
