"""Shared test set-up.

Prefect reads its settings when first imported, so its home and telemetry are
pointed at a throw-away directory here, before any test imports it. Tests that
need a Prefect API use the session-scoped ``prefect_server`` fixture: one
``prefect server start`` (SQLite) for the whole run, started only if asked for
(tests/server_helper.py).
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="datapruning-prefect-"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MPLBACKEND", "Agg")
# Generated datasets and betons are cached; one throw-away cache per test session
# keeps tests from depending on (or filling) the user's ~/.cache.
os.environ.setdefault("DATAPRUNING_CACHE_DIR", tempfile.mkdtemp(prefix="datapruning-cache-"))

import pytest
import torch
from hypothesis import settings

# HYPOTHESIS_PROFILE=ci: ten times the default examples (tests/test_fuzz.py scales its own
# counts by it) and no deadline, for a CI run that can afford minutes of fuzzing.
settings.register_profile("ci", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Without a GPU, Triton kernels run in Triton's CPU interpreter; it is read when a
# kernel module is imported, so it is set before any test imports one.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def prefect_server():
    from server_helper import prefect_server

    with prefect_server() as api:
        yield api


@pytest.fixture
def one_thread():
    # Tiny models train fastest on one thread; more only contend on a busy machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_collection_modifyitems(config, items):
    if any("prefect_server" in getattr(item, "fixturenames", ()) for item in items):
        from server_helper import start_early

        start_early()  # boots while the tests before the first that needs it run
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
