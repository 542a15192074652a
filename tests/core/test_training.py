"""The run plumbing shared by the toys and the worlds (core.training)."""

from __future__ import annotations

import pytest

from icl_lens.core import training
from icl_lens.core.errors import ConfigError
from icl_lens.induction.toy import ToyConfig


def test_default_run_directory_is_named_by_the_config(tmp_path):
    a, b = ToyConfig(n_steps=10), ToyConfig(n_steps=11)
    assert training.run_directory(tmp_path / "mine", a, "toy_runs") == tmp_path / "mine"
    da, db = training.run_directory(None, a, "toy_runs"), training.run_directory(None, b, "toy_runs")
    assert da.parent.name == "toy_runs" and da.name == training.fingerprint(a) and len(da.name) == 12
    assert da != db and training.run_directory(None, ToyConfig(n_steps=10), "toy_runs") == da


def test_pick_checkpoint_names_the_saved_steps():
    assert training.pick_checkpoint((0, 50, 100), None) == 100
    assert training.pick_checkpoint((0, 50, 100), 50) == 50
    with pytest.raises(ConfigError, match=r"no checkpoint at step 60; saved steps: \(0, 50, 100\)"):
        training.pick_checkpoint((0, 50, 100), 60)
