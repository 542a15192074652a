"""Fixtures shared by the toy-world tests."""

import pytest


@pytest.fixture(scope="module", autouse=True)
def _worlds_on_one_thread(one_thread):
    """Every toy-world test module runs on one thread (``one_thread`` in tests/conftest.py)."""
