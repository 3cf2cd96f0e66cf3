import pytest


@pytest.fixture(autouse=True)
def _models_train_on_one_thread(one_thread):
    """Every model test runs on one torch thread (tests/conftest.py)."""
