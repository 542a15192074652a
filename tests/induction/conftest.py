"""A small toy run that still goes through the phase change, shared by the phase-change
and token-class tests (trained once per session, about 15 s on one thread)."""

from __future__ import annotations

import pytest
import torch

import icl_lens as il

# The phase change comes at about step 470 of 600 here; the documented default
# (docs/induction.md) is twice as long, on 64-token sequences.
SMALL = il.ToyConfig(
    d_vocab=32, seq_len=32, batch_size=32, n_steps=600, checkpoint_every=100, lr=5e-3, repeats_per_sequence=3
)


@pytest.fixture(scope="session")
def small_phase_config():
    return il.PhaseConfig(repeat_lengths=(4, 8, 15), prefix_length=7, n_sequences=8, n_eval=64, early=4, late=25)


@pytest.fixture(scope="session")
def small_runs(tmp_path_factory):
    """The 2-layer run and its 1-layer control, trained on one thread (toy models gain
    nothing from more, and the run is bit-identical only for a fixed thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("phase")
        return {n: il.train_toy_model(SMALL.replace(n_layers=n), root / f"L{n}", show_progress=False) for n in (2, 1)}
    finally:
        torch.set_num_threads(before)
