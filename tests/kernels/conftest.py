import pytest

from datapruning.kernels import _dispatch


@pytest.fixture(autouse=True)
def fresh_probes():
    # Probe verdicts live for the process; a test that breaks a kernel must not leave
    # its failure to the next test, nor inherit one.
    _dispatch.reset_probes()
    yield
    _dispatch.reset_probes()


def pytest_collection_modifyitems(config, items):
    # All 136 AOT compiles take minutes: only when asked for by name (-m aot_all).
    if "aot_all" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="compiles every launch variant; run with -m aot_all")
    for item in items:
        if "aot_all" in item.keywords:
            item.add_marker(skip)
