"""The tutorial notebooks are committed without outputs and start with a title.

Running them top to bottom is `make notebooks` (scripts/run_notebooks_test.py); it is
not yet part of `make test` (see the README).
"""

from __future__ import annotations

from pathlib import Path

import nbformat

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_and_they_have_no_outputs():
    assert len(NOTEBOOKS) >= 2
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code, path.name
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs committed"
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), path.name


