"""The public names: each layer lists its own once; ``icl_lens`` re-exports every layer whole."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import icl_lens as il
from icl_lens.core.lazy import exported_names, package_init

LAYERS = ("core", "prompting", "patching", "induction", "vectors", "hypotheses", "worlds", "studies")


def test_the_top_level_is_the_union_of_the_layer_tables():
    top = exported_names(il.__file__)
    union: dict[str, tuple[str, str]] = {}
    for layer in LAYERS:
        table = exported_names(package_init(f"icl_lens.{layer}"))
        assert table, layer
        # every name of a layer is defined in that layer, and listed by no other layer
        assert all(module.startswith(f"icl_lens.{layer}.") for module, _ in table.values()), layer
        assert not set(table) & set(union), (layer, sorted(set(table) & set(union)))
        union |= table
    assert top == union | {"__version__": ("icl_lens.core.version", "__version__")}
    assert il.__all__ == sorted(top)


def test_a_layer_name_is_the_same_object_at_both_levels():
    for layer in LAYERS:
        package = importlib.import_module(f"icl_lens.{layer}")
        assert package.__all__ == sorted(exported_names(package.__file__))
        for name in package.__all__:
            assert getattr(il, name) is getattr(package, name), (layer, name)
    assert il.icl_score.__module__ == "icl_lens.induction.icl_scoring" and callable(il.icl_score)


def test_no_export_is_shadowed_by_a_module_of_its_name():
    # Importing `icl_lens.x.name` sets the package attribute `name` to that module, after
    # which the export of the same name would be unreachable from the package.
    for layer in LAYERS:
        package = importlib.import_module(f"icl_lens.{layer}")
        modules = {info.name for info in pkgutil.iter_modules(package.__path__)}
        assert not modules & set(package.__all__), layer
    importlib.import_module("icl_lens.induction.icl_scoring")
    from icl_lens.induction import icl_score

    assert callable(icl_score)
    assert "head_sweep" in dir(importlib.import_module("icl_lens.patching"))


def test_importing_loads_nothing_heavy():
    code = "import icl_lens, icl_lens.core, icl_lens.patching, sys; icl_lens.__all__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_star_import_must_name_a_package(tmp_path):
    init = tmp_path / "__init__.py"
    init.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from icl_lens.core.stats import *\n")
    try:
        exported_names(init)
    except ImportError as err:
        assert "icl_lens.core.stats" in str(err)
    else:
        raise AssertionError("a star import of a module was accepted")
