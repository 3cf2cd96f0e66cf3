"""The cache of generated arrays: reused when the key matches, remade otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from datapruning._io import cache_dir, cached_arrays
from datapruning.data.sources import load_dataset


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAPRUNING_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_made_once_then_read_back(cache):
    calls = []

    def make():
        calls.append(1)
        return {"x": np.arange(6.0).reshape(2, 3)}

    first = cached_arrays("demo", {"n": 2}, make)
    second = cached_arrays("demo", {"n": 2}, make)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["x"], second["x"])
    cached_arrays("demo", {"n": 3}, make)  # another key: made again
    assert len(calls) == 2


def test_truncated_or_foreign_file_is_remade(cache):
    make = lambda: {"x": np.ones(4)}  # noqa: E731
    cached_arrays("demo", {"n": 1}, make)
    (path,) = (cache_dir() / "demo").glob("*.npz")
    path.write_bytes(path.read_bytes()[:40])
    assert cached_arrays("demo", {"n": 1}, make)["x"].tolist() == [1.0] * 4
    np.savez(path, __key__=np.array("someone else's"), x=np.zeros(4))
    assert cached_arrays("demo", {"n": 1}, make)["x"].tolist() == [1.0] * 4


def test_unwritable_cache_still_returns_the_arrays(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("DATAPRUNING_CACHE_DIR", str(blocker / "below"))
    assert cached_arrays("demo", {"n": 1}, lambda: {"x": np.ones(2)})["x"].sum() == 2


def test_mnist1d_from_the_cache_equals_a_fresh_generation(cache, monkeypatch):
    params = {"num_samples": 200, "seed": 3}
    fresh = load_dataset("mnist1d", params)
    assert list((cache / "mnist1d").glob("*.npz"))
    import mnist1d.data

    def refuse(args):
        raise AssertionError("generated again instead of read from the cache")

    monkeypatch.setattr(mnist1d.data, "make_dataset", refuse)
    cached = load_dataset("mnist1d", params)
    assert cached.fingerprint == fresh.fingerprint
    np.testing.assert_array_equal(cached.x_test, fresh.x_test)
    np.testing.assert_array_equal(cached.y_test, fresh.y_test)
