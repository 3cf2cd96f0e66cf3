"""`datapruning score` for every metric and `select`'s new strategies, in-process.

Bad input prints one line, exits 2 and leaves neither a parquet file nor a
``.parts`` directory behind.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from cli_helper import assert_one_line_error, run_cli

from datapruning.scoring import METRICS

DIGITS_TRAIN = 1347
QUICK = ["--dataset", "digits", "--model", "mlp", "--seeds", "2", "--epochs", "1"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_help_describes_every_metric(capsys):
    code, out, _ = run_cli(capsys, "score", "--help")
    assert code == 0
    text = " ".join(out.split())
    for name in METRICS:
        assert f"{name}:" in text
    # The option's help is generated from the registry's entries.
    from datapruning.cli import _METRIC_HELP

    for name, metric in METRICS.items():
        assert f"{name}: {metric.help}" in _METRIC_HELP


@pytest.mark.parametrize("metric", ["el2n", "grand", "forgetting", "random"])
def test_score_each_metric(capsys, tmp_path, metric):
    out = tmp_path / "s.parquet"
    code, stdout, err = run_cli(capsys, "score", "--metric", metric, *QUICK, "--out", out)
    assert code == 0, err
    table = pd.read_parquet(out)
    assert len(table) == DIGITS_TRAIN
    assert {"index", "score", "label", "score_seed0", "score_seed1"} <= set(table.columns)
    assert f"{metric} scores" in stdout
    assert [p.name for p in tmp_path.iterdir()] == ["s.parquet"]  # the .parts dir is gone


def test_score_sequential_and_grand_layer_options(capsys, tmp_path):
    from datapruning.scores import Scores

    out = tmp_path / "g.parquet"
    args = ["score", "--metric", "grand", *QUICK, "--grand-layer", "last", "--sequential"]
    assert run_cli(capsys, *args, "--out", out)[0] == 0
    params = Scores.load(out).metadata["params"]
    assert params["layer"] == "last" and params["batched"] is False


def test_score_proto_with_embeddings(capsys, tmp_path):
    from datapruning.data.sources import load_dataset
    from datapruning.scores import Scores

    np.save(tmp_path / "emb.npy", load_dataset("digits").x_train)
    out = tmp_path / "p.parquet"
    code, _, err = run_cli(
        capsys,
        "score",
        "--metric",
        "proto",
        "--dataset",
        "digits",
        "--embeddings",
        tmp_path / "emb.npy",
        "--k",
        "12",
        "--out",
        out,
    )
    assert code == 0, err
    meta = Scores.load(out).metadata
    assert meta["params"]["k"] == 12 and meta["params"]["encoder"]["name"] == "user"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--metric", "proto", "--k", "5000"], ["k=5000", "larger than the 1347"]),
        (["--metric", "proto", "--embeddings", "rows.npy"], ["10 rows", "1347"]),
        (["--metric", "proto", "--embeddings", "nan.npy"], ["NaN or inf"]),
        (["--metric", "proto", "--embeddings", "absent.npy"], ["absent.npy", "not found"]),
        (["--metric", "el2n", "--seeds", "0"], ["scoring.seeds", "greater than or equal to 1"]),
        (
            ["--metric", "grand", "--grand-layer", "middle"],
            ["scoring.params.grand.layer", "'all' or 'last'"],
        ),
        (["--metric", "proto", "--k", "0"], ["scoring.params.proto.k"]),
    ],
    ids=["k>N", "rows", "nan", "missing", "seeds-0", "layer", "k-0"],
)
def test_score_bad_input_exits_2_and_leaves_nothing(capsys, tmp_path, args, fragments):
    np.save(tmp_path / "rows.npy", np.ones((10, 4)))
    bad = np.ones((DIGITS_TRAIN, 4))
    bad[5, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    before = set(tmp_path.iterdir())
    out = tmp_path / "s.parquet"
    code, _, err = run_cli(capsys, "score", "--dataset", "digits", *args, "--out", out)
    assert_one_line_error(code, err, *fragments)
    assert set(tmp_path.iterdir()) == before


def test_select_strategies_and_dataset_check(capsys, tmp_path):
    scores = tmp_path / "s.parquet"
    assert run_cli(capsys, "score", "--metric", "random", *QUICK, "--out", scores)[0] == 0
    table = pd.read_parquet(scores)
    for strategy, extra in [
        ("balanced", []),
        ("ccs", ["--offset", "0.1", "--bins", "5"]),
        ("auto", []),
    ]:
        out = tmp_path / f"{strategy}.npy"
        code, _, err = run_cli(
            capsys,
            "select",
            "--scores",
            scores,
            "--keep",
            "0.3",
            "--strategy",
            strategy,
            *extra,
            "--dataset",
            "digits",
            "--out",
            out,
        )
        assert code == 0, err
        kept = np.load(out)
        assert len(kept) == round(0.3 * DIGITS_TRAIN)
    # balanced: each class keeps about 30% of its examples.
    kept = np.load(tmp_path / "balanced.npy")
    shares = (
        pd.Series(table["label"].to_numpy()[kept]).value_counts() / table["label"].value_counts()
    )
    assert shares.between(0.29, 0.31).all()
    # auto: 404 kept < 100 per class x 10 classes, so the easiest are kept.
    np.testing.assert_array_equal(
        np.load(tmp_path / "auto.npy"),
        np.sort(np.argsort(table["score"].to_numpy(), kind="stable")[:404]),
    )

    out = tmp_path / "other.npy"
    code, _, err = run_cli(
        capsys,
        "select",
        "--scores",
        scores,
        "--keep",
        "0.3",
        "--dataset",
        "mnist1d",
        "--set",
        "dataset.params.num_samples=200",
        "--out",
        out,
    )
    assert_one_line_error(code, err, "scores belong to dataset")
    assert not out.exists()


def test_score_refuses_nan_features(capsys, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    x[7, 2] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(60) % 3)
    before = set(tmp_path.iterdir())
    code, _, err = run_cli(
        capsys, "score", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--out", tmp_path / "s.parquet"
    )
    assert_one_line_error(code, err, "NaN or inf")
    assert set(tmp_path.iterdir()) == before


@pytest.mark.slow
def test_proto_on_mnist1d_end_to_end(capsys, tmp_path, monkeypatch):
    """The documented command: default encoder, k = 10 classes, 4000 rows, no label read."""
    import inspect

    import datapruning.scoring.prototypes as prototypes

    readers: list[str] = []

    class LabelWatch:
        """The dataset the metric sees: records who reads its labels."""

        def __init__(self, dataset):
            self._dataset = dataset

        def __getattr__(self, name):
            return getattr(self._dataset, name)

        @property
        def y_train(self):
            frame = inspect.stack()[1]
            readers.append(f"{frame.frame.f_globals['__name__']}.{frame.function}")
            return self._dataset.y_train

        @property
        def y_test(self):
            readers.append("y_test")
            return self._dataset.y_test

    real = prototypes.score_proto
    monkeypatch.setattr(
        prototypes,
        "score_proto",
        lambda job: real(dataclasses.replace(job, dataset=LabelWatch(job.dataset))),
    )
    out = tmp_path / "p.parquet"
    code, stdout, err = run_cli(
        capsys, "score", "--metric", "proto", "--dataset", "mnist1d", "--out", out
    )
    assert code == 0, err
    # Labels are read once, after scoring, to fill the table's label column.
    assert readers == ["datapruning.scoring._common.build_scores"]
    table = pd.read_parquet(out)
    assert len(table) == 4000
    assert table["score"].std() > 0
    assert "4000 proto scores" in stdout
