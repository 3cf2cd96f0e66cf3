import pytest

from datapruning.kernels import _dispatch


@pytest.fixture(autouse=True)
def fresh_probes(request):
    # Probe verdicts live for the process; a test that breaks a kernel must not leave
    # its failure to the next test, nor inherit one.
    _dispatch.reset_probes()
    yield
    # A probe that failed by itself would send the "Triton" side of a comparison to the
    # reference, and the comparison would pass without testing the kernel: only the
    # tests that inject failures (INJECTS_FAILURES in their module) may leave one.
    failed = {key: reason for key, reason in _dispatch._verdicts.items() if reason is not None}
    _dispatch.reset_probes()
    if failed and not getattr(request.module, "INJECTS_FAILURES", False):
        pytest.fail(f"kernel variants fell back to the reference: {failed}")


def pytest_collection_modifyitems(config, items):
    # All 136 AOT compiles take minutes: only when asked for by name (-m aot_all).
    if "aot_all" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="compiles every launch variant; run with -m aot_all")
    for item in items:
        if "aot_all" in item.keywords:
            item.add_marker(skip)
