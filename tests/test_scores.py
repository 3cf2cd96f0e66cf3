import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datapruning.errors import DataPruningError, FingerprintMismatchError, UnknownNameError
from datapruning.scores import SCORES_FORMAT, STRATEGIES, Scores, select_positions

METADATA = {
    "metric": "el2n",
    "params": {"epochs": 3, "seeds": 2},
    "dataset": {"name": "digits", "fingerprint": "v2:0123456789abcdef", "num_train": 6},
    "model": {"name": "mlp", "params": {"hidden": 8}},
    "seeds": [0, 1],
    "seconds": 1.5,
}


def make_scores(n=6, seed=0, metadata=METADATA):
    rng = np.random.default_rng(seed)
    seed0 = rng.random(n)
    seed1 = rng.random(n)
    table = pd.DataFrame(
        {
            "index": np.arange(n, dtype=np.int64),
            "score": (seed0 + seed1) / 2,
            "label": rng.integers(0, 10, n),
            "score_seed0": seed0,
            "score_seed1": seed1,
        }
    )
    return Scores(table, dict(metadata))


def leftovers(directory, keep):
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def test_round_trip(tmp_path):
    scores = make_scores()
    path = scores.save(tmp_path / "scores.parquet")
    assert path == tmp_path / "scores.parquet"
    loaded = Scores.load(path)
    pd.testing.assert_frame_equal(loaded.table, scores.table)
    assert loaded.metadata == METADATA
    assert loaded.fingerprint == "v2:0123456789abcdef"
    assert len(loaded) == 6
    np.testing.assert_array_equal(loaded.values, scores.table["score"].to_numpy())
    # It is real parquet with the metadata in the schema.
    raw = pq.read_table(path)
    assert raw.column_names == ["index", "score", "label", "score_seed0", "score_seed1"]
    assert b"datapruning" in raw.schema.metadata


def _rewrite_metadata(path, change):
    """Rewrite a scores file's datapruning metadata record with ``change`` applied."""
    import json

    table = pq.read_table(path)
    metadata = dict(table.schema.metadata)
    record = json.loads(metadata[b"datapruning"])
    change(record)
    metadata[b"datapruning"] = json.dumps(record).encode()
    pq.write_table(table.replace_schema_metadata(metadata), path)


def test_scores_files_record_their_format_version(tmp_path):
    import json

    path = make_scores().save(tmp_path / "s.parquet")
    record = json.loads(pq.read_table(path).schema.metadata[b"datapruning"])
    assert record["format_version"] == SCORES_FORMAT == 1
    # Files from before the version was recorded have the same layout: read as version 1.
    _rewrite_metadata(path, lambda record: record.pop("format_version"))
    assert Scores.load(path).metadata == METADATA


@pytest.mark.parametrize(
    ("version", "match"),
    [
        (2, "format version 2, newer than this datapruning reads (1); upgrade"),
        (0, "unknown format version 0"),
        ("1", "unknown format version '1'"),
        (None, "unknown format version None"),
    ],
)
def test_scores_of_an_unknown_format_version_are_refused(tmp_path, version, match):
    path = make_scores().save(tmp_path / "s.parquet")
    _rewrite_metadata(path, lambda record: record.update(format_version=version))
    with pytest.raises(DataPruningError, match=re.escape(match)):
        Scores.load(path)


def test_scores_with_unreadable_metadata_are_refused(tmp_path):
    path = make_scores().save(tmp_path / "s.parquet")
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({b"datapruning": b"{not json"}), path)
    with pytest.raises(DataPruningError, match="unreadable datapruning metadata"):
        Scores.load(path)


def test_save_leaves_no_temp_files(tmp_path):
    make_scores().save(tmp_path / "scores.parquet")
    make_scores(seed=1).save(tmp_path / "scores.parquet")  # overwrite
    assert leftovers(tmp_path, keep=set()) == ["scores.parquet"]
    np.testing.assert_array_equal(
        Scores.load(tmp_path / "scores.parquet").values, make_scores(seed=1).values
    )


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "scores.parquet"
    make_scores(seed=0).save(path)
    before = path.read_bytes()

    def broken_write(table, where, *args, **kwargs):
        with open(where, "wb") as handle:
            handle.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        make_scores(seed=1).save(path)
    assert path.read_bytes() == before
    assert leftovers(tmp_path, keep=set()) == ["scores.parquet"]
    monkeypatch.undo()
    np.testing.assert_array_equal(Scores.load(path).values, make_scores(seed=0).values)


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    def broken_write(table, where, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken_write)
    with pytest.raises(OSError):
        make_scores().save(tmp_path / "scores.parquet")
    assert list(tmp_path.iterdir()) == []


def test_save_into_missing_directory(tmp_path):
    with pytest.raises(DataPruningError, match="does not exist"):
        make_scores().save(tmp_path / "missing" / "scores.parquet")


def test_fingerprint_mismatch(tmp_path):
    path = make_scores().save(tmp_path / "scores.parquet")
    assert Scores.load(path, fingerprint="v2:0123456789abcdef").fingerprint == "v2:0123456789abcdef"
    with pytest.raises(FingerprintMismatchError) as info:
        Scores.load(path, fingerprint="v2:ffffffffffffffff")
    assert "v2:ffffffffffffffff" in str(info.value)
    assert "v2:0123456789abcdef" in str(info.value)
    assert isinstance(info.value, DataPruningError)
    with pytest.raises(FingerprintMismatchError):
        make_scores(metadata={}).check_dataset("v2:0123456789abcdef")


def test_load_missing_file(tmp_path):
    with pytest.raises(DataPruningError, match="not found"):
        Scores.load(tmp_path / "nope.parquet")


def test_load_non_parquet(tmp_path):
    path = tmp_path / "scores.parquet"
    path.write_text("index,score,label\n0,0.5,1\n")
    with pytest.raises(DataPruningError, match="not a parquet"):
        Scores.load(path)


def test_load_parquet_without_metadata(tmp_path):
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"index": [0, 1], "score": [0.1, 0.2], "label": [0, 1]}), path)
    with pytest.raises(DataPruningError, match="no datapruning metadata"):
        Scores.load(path)


def test_table_needs_columns_and_finite_scores():
    with pytest.raises(DataPruningError, match="label"):
        Scores(pd.DataFrame({"index": [0], "score": [0.1]}))
    for bad in (np.nan, np.inf):
        with pytest.raises(DataPruningError, match="NaN"):
            Scores(pd.DataFrame({"index": [0, 1], "score": [0.1, bad], "label": [0, 1]}))


def test_select_refuses_nan_scores():
    with pytest.raises(DataPruningError, match="NaN"):
        select_positions(np.array([0.3, np.nan, 0.1, 0.2]), 0.5, "hard")


def top_positions(scores, count, largest):
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i] if largest else scores[i], i))
    return sorted(ranked[:count])


@pytest.mark.parametrize("keep", [0.1, 0.25, 0.5, 0.73, 1.0])
def test_hard_and_easy(keep):
    scores = np.random.default_rng(3).random(40)
    count = max(1, round(keep * 40))
    hard = select_positions(scores, keep, "hard")
    easy = select_positions(scores, keep, "easy")
    assert hard.tolist() == top_positions(scores.tolist(), count, largest=True)
    assert easy.tolist() == top_positions(scores.tolist(), count, largest=False)
    assert hard.dtype == easy.dtype == np.int64
    if count < 40:
        assert scores[hard].min() > np.delete(scores, hard).max()
        assert scores[easy].max() < np.delete(scores, easy).min()


def test_ties_are_broken_by_position():
    assert select_positions(np.ones(6), 0.5, "hard").tolist() == [0, 1, 2]
    assert select_positions(np.ones(6), 0.5, "easy").tolist() == [0, 1, 2]
    assert select_positions(np.array([1.0, 2.0, 2.0, 0.0]), 0.25, "hard").tolist() == [1]


@pytest.mark.parametrize(
    ("n", "keep", "count"), [(10, 0.3, 3), (7, 0.5, 4), (3, 0.01, 1), (5, 1, 5)]
)
def test_counts(n, keep, count):
    scores = np.linspace(0, 1, n)
    for strategy in STRATEGIES:
        chosen = select_positions(scores, keep, strategy, labels=np.arange(n) % 3)
        assert len(chosen) == count
        assert len(set(chosen.tolist())) == count


def test_random():
    scores = np.arange(100, dtype=float)
    first = select_positions(scores, 0.3, "random", seed=1)
    assert len(first) == 30
    assert len(np.unique(first)) == 30
    assert first.min() >= 0
    assert first.max() < 100
    assert np.all(np.diff(first) > 0)  # sorted
    np.testing.assert_array_equal(first, select_positions(scores, 0.3, "random", seed=1))
    assert not np.array_equal(first, select_positions(scores, 0.3, "random", seed=2))
    # Not the hardest or easiest block.
    assert not np.array_equal(first, select_positions(scores, 0.3, "hard"))
    assert not np.array_equal(first, select_positions(scores, 0.3, "easy"))
    # Independent of the scores' values.
    np.testing.assert_array_equal(first, select_positions(-scores, 0.3, "random", seed=1))


@pytest.mark.parametrize("keep", [0, -0.5, 1.01, 2])
def test_keep_outside_unit_interval(keep):
    with pytest.raises(DataPruningError, match="must lie in"):
        select_positions(np.ones(5), keep)


def test_unknown_strategy():
    with pytest.raises(UnknownNameError) as info:
        select_positions(np.ones(5), 0.5, "middle")
    assert "'middle'" in str(info.value)
    for name in STRATEGIES:
        assert name in str(info.value)


def test_scores_select_returns_dataset_indices():
    table = pd.DataFrame(
        {"index": [10, 11, 12, 13], "score": [0.9, 0.1, 0.5, 0.7], "label": [0, 1, 0, 1]}
    )
    scores = Scores(table)
    assert scores.select(0.5, "hard").tolist() == [10, 13]
    assert scores.select(0.5, "easy").tolist() == [11, 12]
    assert set(scores.select(0.5, "random", seed=3).tolist()) <= {10, 11, 12, 13}


# ------------------------------------------------- balanced, ccs and auto


def test_balanced_keeps_each_class_share_hardest_first():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    # Class 0 is much harder overall: "hard" would take almost only class 0.
    scores = rng.random(100) + np.where(labels == 0, 10.0, 0.0)
    chosen = select_positions(scores, 0.2, "balanced", labels=labels)
    assert len(chosen) == 20
    assert np.bincount(labels[chosen], minlength=3).tolist() == [10, 6, 4]
    for cls in range(3):
        members = np.flatnonzero(labels == cls)
        kept = np.intersect1d(chosen, members)
        assert (
            scores[kept].min()
            >= np.delete(scores, chosen)[labels[np.delete(np.arange(100), chosen)] == cls].max()
        )
    hardest = select_positions(scores, 0.2, "hard")
    assert np.bincount(labels[hardest], minlength=3).tolist() == [20, 0, 0]


def test_balanced_rounds_by_largest_remainder():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    chosen = select_positions(np.arange(10.0), 0.5, "balanced", labels=labels)
    # Exact shares 2.5, 1.5, 1.0: five slots, the first remainder tie to class 0.
    assert np.bincount(labels[chosen], minlength=3).tolist() == [3, 1, 1]


def test_balanced_needs_labels():
    with pytest.raises(DataPruningError, match="labels"):
        select_positions(np.ones(4), 0.5, "balanced")
    with pytest.raises(DataPruningError, match="labels"):
        select_positions(np.ones(4), 0.5, "balanced", labels=np.array([-1, -1, 0, 1]))


def test_ccs_covers_the_score_range_and_drops_the_hardest():
    rng = np.random.default_rng(1)
    # Most examples are easy; a thin tail is hard.
    scores = np.concatenate([rng.random(900) * 0.1, 0.1 + rng.random(100) * 0.9])
    chosen = select_positions(scores, 0.1, "ccs", seed=0, bins=10)
    assert len(chosen) == 100 and len(np.unique(chosen)) == 100
    # Equal-width bins: the sparse hard tail is kept far above its 10% share,
    # and the dense easy bin does not take the whole budget.
    assert np.mean(scores[chosen] > 0.1) > 0.5
    assert np.mean(scores[chosen] <= 0.1) > 0.05
    np.testing.assert_array_equal(chosen, select_positions(scores, 0.1, "ccs", seed=0, bins=10))
    hardest = np.argsort(-scores)[:50]
    with_offset = select_positions(scores, 0.1, "ccs", seed=0, bins=10, offset=0.05)
    assert len(with_offset) == 100
    assert not set(with_offset.tolist()) & set(hardest.tolist())
    assert set(chosen.tolist()) & set(hardest.tolist())


def test_ccs_small_bins_are_kept_whole():
    # Bin sizes 2, 8 and 90 over [0, 3): a budget of 30 takes both small bins whole.
    scores = np.concatenate([np.full(2, 2.9), np.full(8, 1.5), np.linspace(0, 0.9, 90)])
    chosen = select_positions(scores, 0.3, "ccs", bins=3)
    assert set(range(10)) <= set(chosen.tolist())
    assert len(chosen) == 30


def test_ccs_bad_offset():
    for offset in (-0.1, 1.0):
        with pytest.raises(DataPruningError, match="offset"):
            select_positions(np.ones(10), 0.5, "ccs", offset=offset)
    with pytest.raises(DataPruningError, match="too few"):
        select_positions(np.arange(10.0), 0.9, "ccs", offset=0.5)


def test_auto_keeps_hard_when_abundant_easy_when_scarce():
    from datapruning.scores import AUTO_HARD_MIN_PER_CLASS

    n = 40 * AUTO_HARD_MIN_PER_CLASS  # 2 classes
    scores = np.random.default_rng(2).random(n)
    labels = np.arange(n) % 2
    abundant = 2 * AUTO_HARD_MIN_PER_CLASS / n
    np.testing.assert_array_equal(
        select_positions(scores, abundant, "auto", labels=labels),
        select_positions(scores, abundant, "hard"),
    )
    scarce = (2 * AUTO_HARD_MIN_PER_CLASS - 2) / n
    np.testing.assert_array_equal(
        select_positions(scores, scarce, "auto", labels=labels),
        select_positions(scores, scarce, "easy"),
    )
    # The dataset's class count from the metadata wins over the labels seen.
    np.testing.assert_array_equal(
        select_positions(scores, abundant, "auto", num_classes=4),
        select_positions(scores, abundant, "easy"),
    )


def test_scores_select_uses_table_labels_and_metadata():
    table = pd.DataFrame(
        {
            "index": [10, 11, 12, 13, 14, 15],
            "score": [0.9, 0.8, 0.7, 0.1, 0.2, 0.3],
            "label": [0, 0, 0, 1, 1, 1],
        }
    )
    scores = Scores(table, {"dataset": {"num_classes": 2}})
    assert scores.select(2 / 6, "balanced").tolist() == [10, 15]
    assert scores.select(0.5, "auto").tolist() == [13, 14, 15]  # 3 kept < 100 per class: easy
