import pytest

from datapruning.kernels import _dispatch


@pytest.fixture(autouse=True)
def fresh_probes():
    # Probe verdicts live for the process; a test that breaks a kernel must not leave
    # its failure to the next test, nor inherit one.
    _dispatch.reset_probes()
    yield
    _dispatch.reset_probes()
