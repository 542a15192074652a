"""Toy training (data, checkpoints, bit-identical resume) and the phase change.

The phase-change test uses a small 2-layer attention-only model (and its 1-layer
control) trained for a few hundred steps (``small_runs`` in conftest.py): the smallest
set-up found that still forms an induction head. The documented default run
(docs/induction.md) is larger.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

import icl_lens as il
from icl_lens.induction.phase import crossing_step, principal_components, steepest_drop_step
from icl_lens.induction.toy import toy_batch

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = il.ToyConfig(d_model=32, d_head=8, d_vocab=16, seq_len=16, batch_size=4, n_steps=12, checkpoint_every=4)


def test_toy_batch_has_repeats_of_random_length_at_random_offsets():
    config = il.ToyConfig(seq_len=64, min_repeat=6, max_repeat=6, repeats_per_sequence=1, adjacent_fraction=0.0)
    tokens = toy_batch(config, 64, torch.Generator().manual_seed(0))
    assert tokens.shape == (64, 64) and (tokens[:, 0] == 0).all() and (tokens[:, 1:] >= 1).all()
    seconds = []
    for row in tokens.tolist():
        found = [b for b in range(7, 59) for a in range(1, b - 5) if row[a : a + 6] == row[b : b + 6]]
        assert found, "every row holds a 6-token segment twice"
        seconds.append(found[0])
    assert len(set(seconds)) > 10  # the second copy is not at a fixed place
    adjacent = il.ToyConfig(seq_len=64, min_repeat=6, max_repeat=6, repeats_per_sequence=1, adjacent_fraction=1.0)
    for row in toy_batch(adjacent, 16, torch.Generator().manual_seed(1)).tolist():
        assert any(row[a : a + 6] == row[a + 6 : a + 12] for a in range(1, 53))
    lengths = il.ToyConfig(seq_len=64, repeats_per_sequence=1)
    assert lengths.repeat_max == 31
    with pytest.raises(il.ConfigError):
        il.ToyConfig(seq_len=64, max_repeat=40)


def test_checkpoints_and_bit_identical_resume(tmp_path):
    straight = il.train_toy_model(TINY, tmp_path / "straight", show_progress=False)
    assert straight.checkpoint_steps == (0, 4, 8, 12) and len(straight.train_loss) == 12
    meta = json.loads((tmp_path / "straight" / "checkpoints" / "step_000008.json").read_text())
    assert meta["step"] == 8
    assert meta["train_loss_since_previous_checkpoint"] == pytest.approx(float(straight.train_loss[4:8].mean()))

    partial = il.train_toy_model(TINY, tmp_path / "resumed", stop_after=6, show_progress=False)
    assert partial.checkpoint_steps == (0, 4, 6)
    resumed = il.train_toy_model(TINY, tmp_path / "resumed", show_progress=False)
    assert resumed.checkpoint_steps == (0, 4, 6, 8, 12)
    for step in (8, 12):
        a = load_file(str(straight.checkpoint_path(step)))
        b = load_file(str(resumed.checkpoint_path(step)))
        assert all(torch.equal(a[k], b[k]) for k in a), f"step {step} differs after resume"
    assert torch.equal(straight.train_loss, resumed.train_loss)

    again = il.train_toy_model(TINY, tmp_path / "straight", show_progress=False)  # finished: reused
    assert again.checkpoint_steps == straight.checkpoint_steps
    with pytest.raises(il.ConfigError, match="different ToyConfig"):
        il.train_toy_model(TINY.replace(seed=1), tmp_path / "straight", show_progress=False)
    model = straight.model(12)
    assert not model.training and il.load_toy_run(tmp_path / "straight").checkpoint_steps == (0, 4, 8, 12)


def test_detection_helpers_on_planted_curves():
    steps = (0, 100, 200, 300, 400)
    assert crossing_step(steps, torch.tensor([0.0, 0.1, 0.3, 0.7, 0.8]), 0.5) == pytest.approx(250.0)
    assert crossing_step(steps, torch.tensor([0.0, 0.1, 0.3, 0.4, 0.45]), 0.5) is None
    assert steepest_drop_step(steps, torch.tensor([0.0, -0.1, -1.5, -1.7, -1.8])) == pytest.approx(150.0)
    # three points on a line: one component explains everything
    vectors = torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]])
    coords, explained = principal_components(vectors, 2)
    assert explained[0] == pytest.approx(1.0, abs=1e-6)
    assert coords[0, 0] < 0 and coords[:, 0].tolist() == sorted(coords[:, 0].tolist())


def test_two_layer_phase_change_and_one_layer_control(small_runs, small_phase_config, tmp_path):
    two = il.phase_change(small_runs[2], small_phase_config, show_progress=False)
    one = il.phase_change(small_runs[1], small_phase_config, show_progress=False)
    # 2 layers: an induction head forms abruptly, at every tested repeat length
    assert two.phase_change_step is not None and 300 < two.phase_change_step < 600
    assert two.induction_strength[0] < 0.1 and two.induction_strength[-1] >= 0.5
    final = two.final_heads()
    assert final["induction_head"][0] == 1 and min(final["induction_by_length"].values()) >= 0.5
    assert final["previous_token_head"][0] == 0 and final["previous_token_score"] > 0.2
    assert two.icl_score[-1] < two.icl_score[0] - 1.0  # in-context loss improvement
    assert abs(two.icl_drop_step - two.phase_change_step) <= 100  # both signals agree
    # 1 layer: no induction head, no phase change
    assert one.phase_change_step is None and one.induction_strength.max() < 0.3
    assert two.pca.shape == (len(two.steps), 3) and 0 < float(two.explained_variance.sum()) <= 1
    assert len(two.to_dataframe()) == 7 and two.plot_overview() is not None
    both = il.ClassicExperimentResult(two_layer=two, one_layer=one)
    assert both.plot_side_by_side() is not None and "no phase change" in both.summary()
    loaded = il.load_result(both.save(tmp_path / "classic"))
    assert loaded.two_layer.phase_change_step == two.phase_change_step
    assert torch.equal(loaded.one_layer.induction, one.induction)


def test_phase_change_is_deterministic(small_runs, small_phase_config):
    run = small_runs[2]
    last_two = dataclasses.replace(run, checkpoint_steps=run.checkpoint_steps[-2:])
    a = il.phase_change(last_two, small_phase_config, show_progress=False)
    b = il.phase_change(last_two, small_phase_config, show_progress=False)
    assert torch.equal(a.induction, b.induction) and torch.equal(a.eval_loss, b.eval_loss)
    assert torch.equal(a.loss_by_position, b.loss_by_position)
