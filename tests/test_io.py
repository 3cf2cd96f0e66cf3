import os

import pytest

from datapruning._io import atomic_path, check_output_path, write_json, write_npy
from datapruning.errors import DataPruningError


def test_atomic_files_get_the_umask_mode_not_mkstemps_private_one(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_write_npy_keeps_the_exact_name(tmp_path):
    import numpy as np

    write_npy(tmp_path / "idx.npy", np.arange(3))
    write_npy(tmp_path / "noext", np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx.npy", "noext"]
    assert np.load(tmp_path / "noext").tolist() == [0, 1, 2]


def test_output_path_checks(tmp_path):
    with pytest.raises(DataPruningError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "x.parquet")
    with pytest.raises(DataPruningError, match="is a directory"):
        check_output_path(tmp_path)
