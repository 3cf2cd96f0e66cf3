"""What the fuzz tests (tests/test_fuzz.py, tests/data/test_sampler_fuzz.py) share."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from datapruning.errors import DataPruningError


def budget(examples: int) -> settings:
    """``examples`` per test, scaled by the loaded profile (``ci`` asks for ten times more)."""
    scale = max(1, settings.default.max_examples // 100)
    return settings(
        max_examples=examples * scale,
        deadline=None,  # a loaded, shared CI machine must not fail these on time
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def assert_one_line(exc: DataPruningError) -> None:
    message = str(exc)
    assert message.strip(), "an empty error message"
    assert "\n" not in message and "\r" not in message, message


# Anything a caller might pass where a number or a flag belongs.
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, -1),
    st.floats(),
    st.text(max_size=3),
    st.sampled_from([np.float32(0.5), np.bool_(True), np.array([1, 2]), [1], "3", b"1", 2.0]),
)
