"""Saving and loading results: exact round trip, no pickle, nothing half-written."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import icl_lens as il
from icl_lens.core.results import Config, Result, results_equal


@dataclasses.dataclass(frozen=True)
class _DemoConfig(Config):
    k: int = 3
    names: tuple[str, ...] = ("a", "b")


@dataclasses.dataclass(frozen=True)
class _DemoResult(Result):
    title = "demo"
    scores: torch.Tensor
    per_layer: dict
    heads: tuple
    note: str
    config: _DemoConfig

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame({"score": self.scores.flatten().tolist()})

    def _plot(self, ax):
        ax.plot(self.scores.flatten().tolist())


def _demo():
    return _DemoResult(
        scores=torch.arange(6, dtype=torch.float64).reshape(2, 3) / 7,
        per_layer={0: torch.ones(2, dtype=torch.int32), "x": [1.5, None]},
        heads=((0, 1), (2, 3)),
        note="ok",
        config=_DemoConfig(k=5),
    )


def test_round_trip_is_exact_and_typed(tmp_path):
    r = _demo()
    path = r.save(tmp_path / "r")
    assert sorted(p.name for p in path.iterdir()) == ["result.json", "tensors.safetensors"]
    back = _DemoResult.load(path)
    assert results_equal(r, back)
    assert back.heads == ((0, 1), (2, 3)) and isinstance(back.config, _DemoConfig) and back.config.k == 5
    assert back.scores.dtype == torch.float64
    doc = json.loads((path / "result.json").read_text())
    assert doc["type"] == "_DemoResult" and doc["fields"]["note"] == "ok"


def test_saving_over_an_existing_result_replaces_it(tmp_path):
    _demo().save(tmp_path / "r")
    r2 = dataclasses.replace(_demo(), note="second")
    r2.save(tmp_path / "r")
    assert _DemoResult.load(tmp_path / "r").note == "second"


def test_failed_save_leaves_nothing_behind(tmp_path):
    bad = dataclasses.replace(_demo(), per_layer={"f": object()})
    with pytest.raises(il.ConfigError, match="cannot serialise"):
        bad.save(tmp_path / "r")
    assert list(tmp_path.iterdir()) == []


def test_loading_wrong_or_missing_files_says_what_is_wrong(tmp_path):
    with pytest.raises(il.ResultFileError, match="not a saved icl_lens result"):
        il.load_result(tmp_path)
    _demo().save(tmp_path / "r")
    with pytest.raises(il.ResultFileError, match="not a IclAccuracyResult"):
        il.IclAccuracyResult.load(tmp_path / "r")


def test_configs_validate_and_round_trip():
    cfg = il.IclEvalConfig(shots=[0, 2], n_prompts=3)
    assert cfg.shots == (0, 2)
    assert il.IclEvalConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(il.ConfigError):
        il.IclEvalConfig(shots=(-1,))
    with pytest.raises(il.ConfigError, match="no field 'shotz' \\(did you mean 'shots'\\?\\); valid fields: shots, "):
        il.IclEvalConfig.from_dict({"shotz": (1,)})
    with pytest.raises(il.ConfigError, match="no field 'n_promts'.*valid fields: shots, n_prompts"):
        cfg.replace(n_promts=4)
    with pytest.raises(il.ConfigError, match="config must be a IclEvalConfig"):
        il.IclEvalConfig.resolve(il.FunctionVectorConfig(), {})
    assert il.IclEvalConfig.resolve(None, {"n_prompts": 4}) == il.IclEvalConfig(n_prompts=4)
    assert il.IclEvalConfig.resolve(cfg, {}) is cfg
