"""Every tutorial notebook runs top to bottom (small sizes: ICL_LENS_FAST=1): `make notebooks`.

A cell that raises fails the test with the cell's source and the error. nbclient runs
them in a fresh Jupyter kernel, like a reader.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


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
