"""The tutorial notebooks: committed without outputs, and every one runs top to bottom.

They run in a fresh Jupyter kernel (nbclient), as a reader would run them, with the small
sizes selected by ``ICL_LENS_FAST=1`` (about two minutes for all six on 2 CPU cores). A
cell that raises fails the test with the cell's source and the error. ``make notebooks``
runs only these.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_and_they_have_no_outputs():
    assert len(NOTEBOOKS) >= 6
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code, path.name
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs committed"
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), path.name


@pytest.mark.slow
@pytest.mark.smollm2
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("ICL_LENS_FAST", "1")
    monkeypatch.setenv("ICL_LENS_PROGRESS", "0")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError naming the cell that failed
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 1, f"{path.name} drew no figure"
    assert os.environ["ICL_LENS_FAST"] == "1"
