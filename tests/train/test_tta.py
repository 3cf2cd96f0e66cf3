import time

import pytest

from datapruning.train.tta import Stopwatch, format_target, time_to_accuracy


def test_time_to_accuracy_on_a_synthetic_curve():
    curve = [(1.0, 0.5), (2.5, 0.82), (4.0, 0.79), (6.0, 0.91), (7.0, 0.95)]
    got = time_to_accuracy(curve, [0.8, 0.9, 0.95, 0.99])
    assert got == {"0.8": 2.5, "0.9": 6.0, "0.95": 7.0, "0.99": None}


def test_time_to_accuracy_edge_cases():
    assert time_to_accuracy([], [0.5]) == {"0.5": None}
    assert time_to_accuracy([(1.0, 0.5)], []) == {}
    # Reaching the target exactly counts; a generator works as the curve.
    assert time_to_accuracy(((t, a) for t, a in [(3.0, 0.9)]), [0.9]) == {"0.9": 3.0}


@pytest.mark.parametrize(
    ("target", "key"),
    [(0.9, "0.9"), (0.925, "0.925"), (1.0, "1"), (0.5, "0.5"), (0.12345, "0.1235")],
)
def test_format_target(target, key):
    assert format_target(target) == key


def test_stopwatch_accumulates(monkeypatch):
    ticks = iter([10.0, 12.5, 100.0, 101.0, 200.0, 200.25])
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    watch = Stopwatch()
    assert watch.seconds == 0.0
    with watch.running():
        pass
    assert watch.seconds == pytest.approx(2.5)
    with watch.running():
        pass
    assert watch.seconds == pytest.approx(3.5)
    # Time is counted even when the block raises.
    with pytest.raises(RuntimeError), watch.running():
        raise RuntimeError("boom")
    assert watch.seconds == pytest.approx(3.75)


def test_stopwatch_measures_real_time():
    watch = Stopwatch()
    with watch.running():
        time.sleep(0.02)
    first = watch.seconds
    assert first >= 0.015
    with watch.running():
        time.sleep(0.02)
    assert watch.seconds >= first + 0.015
