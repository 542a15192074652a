"""Fixtures shared by the toy-world tests."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The world's models are too small to gain from threads; on a shared CPU extra threads only spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
