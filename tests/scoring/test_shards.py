"""Sharded scoring and the proxy scoring model.

Scoring split into shards (``score(..., shard="i/n")``, ``datapruning score
--shard i/n`` then ``--merge``) must give the scores file that scoring in one
pass gives: bit for bit here, since every shard evaluates the same saved models
(or encoder and centroids) on its rows and the per-row arithmetic is the same;
only ``seconds`` (and proto's encoder training time) differ, and the merged
file says how many shards it came from.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cli_helper import assert_one_line_error, run_cli

from datapruning.config import ModelConfig, ScoringConfig, TrainConfig, parse_config
from datapruning.errors import DataPruningError
from datapruning.pipeline import keys, score_cells
from datapruning.scores import Scores
from datapruning.scoring import driver, score
from datapruning.scoring._common import Shard, load_shards, merge_shards
from datapruning.scoring.prototypes import sample_rows
from datapruning.user import as_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

MLP = ModelConfig(name="mlp", params={"hidden": 16})
TRAIN = TrainConfig(batch_size=32, lr=0.1)
# Three seeds in groups of two: shards must read both groups, one of them partial.
SCORING = ScoringConfig(seeds=3, epochs=2, ensemble_size=2)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 60)
    x = (rng.normal(size=(240, 12)) + y[:, None] * 0.5).astype(np.float32)
    return as_dataset((x, y))


def changed(scoring: ScoringConfig, **changes) -> ScoringConfig:
    """``scoring`` with ``changes``, validated (model_copy would leave nested dicts raw)."""
    return ScoringConfig.model_validate(scoring.model_dump() | changes)


def timeless(metadata: dict) -> dict:
    """The provenance without what differs between runs by nature (time, shard count)."""
    metadata = {k: v for k, v in metadata.items() if k not in ("seconds", "shards")}
    params = dict(metadata.get("params") or {})
    if isinstance(params.get("encoder"), dict):
        params["encoder"] = {k: v for k, v in params["encoder"].items() if k != "seconds"}
    return metadata | {"params": params}


def assert_same_scores(merged: Scores, whole: Scores) -> None:
    pd.testing.assert_frame_equal(merged.table, whole.table, check_exact=True)
    assert timeless(merged.metadata) == timeless(whole.metadata)


def sharded(data, metric, count, work_dir, scoring=SCORING, **kwargs) -> Scores:
    shards = [
        score(
            data,
            metric,
            scoring,
            MLP,
            TRAIN,
            progress=False,
            work_dir=work_dir,
            shard=f"{number}/{count}",
            **kwargs,
        )
        for number in range(1, count + 1)
    ]
    return merge_shards(shards)


@pytest.mark.parametrize(
    ("metric", "scoring"),
    [
        ("el2n", SCORING),
        ("grand", changed(SCORING, params={"grand": {"layer": "last"}})),
    ],
)
def test_shards_merge_to_the_unsharded_scores(data, metric, scoring, tmp_path, monkeypatch):
    whole = score(data, metric, scoring, MLP, TRAIN, progress=False)
    trained = []
    real = driver.train_group

    def counting(*args, **kwargs):
        trained.append(list(args[4]))
        return real(*args, **kwargs)

    monkeypatch.setattr(driver, "train_group", counting)
    merged = sharded(data, metric, 3, tmp_path, scoring)
    assert_same_scores(merged, whole)
    # Each seed group trained once, by the first shard; the others read its saved models.
    assert trained == [[0, 1], [2]]
    assert merged.metadata["shards"] == 3
    # Charged: the groups' training once plus each shard's own pass.
    assert merged.metadata["seconds"] > 0


def test_shards_cover_contiguous_blocks(data, tmp_path):
    first = score(data, "el2n", SCORING, MLP, TRAIN, progress=False, work_dir=tmp_path, shard="1/7")
    assert data.num_train == 192  # 240 less the 20% test split
    assert first.table["index"].tolist() == list(range(0, 192 // 7))
    assert first.metadata["shard"]["rows"] == [0, 192 // 7]
    assert [len(Shard(i, 7).rows(240)) for i in range(1, 8)] == [34, 34, 34, 35, 34, 34, 35]


def test_prepared_models_are_read_by_every_shard(data, tmp_path, monkeypatch):
    from datapruning.scoring import prepare

    seconds = prepare(data, "el2n", SCORING, MLP, TRAIN, progress=False, work_dir=tmp_path)
    assert seconds > 0
    assert len(list(tmp_path.glob("models-*/group-*.pt"))) == 2

    def refuse(*args, **kwargs):
        raise AssertionError("a shard trained although the groups were prepared")

    monkeypatch.setattr(driver, "train_group", refuse)
    merged = sharded(data, "el2n", 2, tmp_path)
    assert merged.metadata["seconds"] >= seconds  # the preparation is charged once


def test_seeds_restrict_a_scoring_and_the_full_one_reuses_what_they_saved(data, tmp_path):
    # A fan-out cell scores with seeds=...: only those seeds are computed and saved; the full
    # scoring afterwards finds them in the work dir and computes only the others.
    args = (data, "el2n", SCORING, MLP, TRAIN)
    part = score(*args, progress=False, work_dir=tmp_path, seeds=[2])
    assert [c for c in part.table.columns if c.startswith("score_seed")] == ["score_seed2"]
    whole = score(*args, progress=False, work_dir=tmp_path)
    assert whole.metadata["reused_seeds"] == [2]
    pd.testing.assert_frame_equal(whole.table, score(*args, progress=False).table, check_exact=True)


@pytest.mark.parametrize("embeddings", [False, True])
def test_proto_shards_merge_to_the_unsharded_scores(data, embeddings, tmp_path):
    proto = {"encoder_epochs": 2, "k": 4}
    if embeddings:
        path = tmp_path / "emb.npy"
        np.save(path, np.random.default_rng(1).normal(size=(data.num_train, 6)).astype(np.float32))
        # k=3 clusters a seeded sample when there are more than 3 x 256 rows: not here.
        proto = {"embeddings": str(path), "k": 3}
    scoring = changed(SCORING, params={"proto": proto})
    whole = score(data, "proto", scoring, MLP, TRAIN, progress=False)
    merged = sharded(data, "proto", 3, tmp_path / "work", scoring)
    assert_same_scores(merged, whole)
    assert sum(merged.metadata["params"]["cluster_sizes"]) == data.num_train


def test_proto_clusters_a_seeded_sample_when_the_set_is_large():
    assert np.array_equal(sample_rows(500, 2, 0), np.arange(500))
    sample = sample_rows(1000, 2, 0)
    assert len(sample) == 512 and np.all(np.diff(sample) > 0)
    assert np.array_equal(sample, sample_rows(1000, 2, 0))  # seeded: every shard agrees


def test_proto_shards_of_a_sampled_clustering(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(800, 5)).astype(np.float32)
    data = as_dataset((x, rng.integers(0, 2, 800)))
    path = tmp_path / "emb.npy"
    np.save(path, data.x_train)
    scoring = ScoringConfig(params={"proto": {"embeddings": str(path), "k": 2}})
    whole = score(data, "proto", scoring, progress=False)
    assert whole.metadata["params"]["clustered_rows"] == 512  # 2 x 256 of 640 rows
    merged = sharded(data, "proto", 4, tmp_path / "work", scoring)
    assert_same_scores(merged, whole)


# ------------------------------------------------------------------ proxy scoring model


def test_proxy_scoring_model_scores_and_is_recorded(data):
    proxy = ModelConfig(name="mlp", params={"hidden": 8})
    student = ModelConfig(name="mlp", params={"hidden": 64})
    scoring = changed(SCORING, model=proxy, seeds=1)
    by_proxy = score(data, "el2n", scoring, student, TRAIN, progress=False)
    direct = score(data, "el2n", changed(scoring, model=None), proxy, TRAIN, progress=False)
    pd.testing.assert_frame_equal(by_proxy.table, direct.table, check_exact=True)
    assert by_proxy.metadata["model"] == {"name": "mlp", "params": {"hidden": 8}}
    assert by_proxy.metadata["model_source"] == "scoring.model"
    assert direct.metadata["model_source"] == "model"
    # Without scoring.model the student's model scores, as before.
    own = score(data, "el2n", changed(scoring, model=None), student, TRAIN, progress=False)
    assert own.metadata["model"]["params"] == {"hidden": 64}


def test_scores_key_follows_the_scoring_model_not_the_shards():
    base = {
        "dataset": {"name": "mnist1d", "params": {"num_samples": 200}},
        "model": {"name": "mlp", "params": {"hidden": 32}},
    }
    plain = parse_config(base)
    proxy = parse_config(base | {"scoring": {"model": {"name": "mlp", "params": {"hidden": 8}}}})
    other_student = parse_config(
        base
        | {
            "model": {"name": "mlp", "params": {"hidden": 64}},
            "scoring": {"model": {"name": "mlp", "params": {"hidden": 8}}},
        }
    )
    same_as_student = parse_config(base | {"scoring": {"model": base["model"]}})
    sharded_cfg = parse_config(base | {"scoring": {"shards": 4}})
    key = keys.scores_key
    assert key(proxy, "el2n") != key(plain, "el2n")
    # With a proxy, the student's model does not change what scoring computes.
    assert key(other_student, "el2n") == key(proxy, "el2n")
    assert key(same_as_student, "el2n") == key(plain, "el2n")
    assert key(sharded_cfg, "el2n") == key(plain, "el2n")


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0/4", "0/4"),
        ("5/4", "5/4"),
        ("1/0", "1/0"),
        ("x", "'x'"),
        ("2", "'2'"),
        ("-1/4", "'-1/4'"),
        ("1/4/2", "'1/4/2'"),
        ("", "''"),
    ],
)
def test_bad_shard_specs(text, fragment):
    with pytest.raises(DataPruningError, match="i/n") as info:
        Shard.parse(text)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_shards_refused_where_they_cannot_split(data, tmp_path):
    with pytest.raises(DataPruningError, match="forgetting is counted while its models train"):
        score(data, "forgetting", SCORING, MLP, TRAIN, work_dir=tmp_path, shard="1/2")
    with pytest.raises(DataPruningError, match="random has no per-example pass"):
        score(data, "random", SCORING, work_dir=tmp_path, shard="1/2")
    with pytest.raises(DataPruningError, match="at most 192 shards"):
        score(data, "el2n", SCORING, MLP, TRAIN, work_dir=tmp_path, shard="1/193")


def test_merge_names_a_missing_shard_and_refuses_mixed_ones(data, tmp_path):
    fingerprint = data.fingerprint
    with pytest.raises(DataPruningError, match="no shard files"):
        load_shards(tmp_path, fingerprint)
    scoring = changed(SCORING, seeds=1)
    for number in (1, 3):
        scores = score(
            data,
            "el2n",
            scoring,
            MLP,
            TRAIN,
            progress=False,
            work_dir=tmp_path,
            shard=f"{number}/3",
        )
        scores.save(tmp_path / Shard(number, 3).file_name)
    with pytest.raises(DataPruningError, match="shard 2/3 is missing") as info:
        load_shards(tmp_path, fingerprint)
    assert "shard-2-of-3.parquet" in str(info.value)
    # A shard of other settings (here: another epoch count) is refused, naming what differs.
    other = score(
        data,
        "el2n",
        changed(scoring, epochs=1),
        MLP,
        TRAIN,
        progress=False,
        work_dir=tmp_path,
        shard="2/3",
    )
    first, third = (Scores.load(tmp_path / Shard(n, 3).file_name) for n in (1, 3))
    with pytest.raises(DataPruningError, match="shard 2/3 was scored with other settings"):
        merge_shards([first, other, third])
    score(data, "el2n", scoring, MLP, TRAIN, progress=False, work_dir=tmp_path, shard="1/2").save(
        tmp_path / Shard(1, 2).file_name
    )
    with pytest.raises(DataPruningError, match="shards of 2 and 3 shard runs"):
        load_shards(tmp_path, fingerprint)


# ------------------------------------------------------------------ CLI and orchestration


def test_cli_shards_then_merge_equal_one_pass(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(3)
    np.savez(
        tmp_path / "d.npz",
        x=rng.normal(size=(150, 6)).astype(np.float32),
        y=rng.integers(0, 3, 150),
    )
    common = [
        "score",
        "--dataset",
        f"npz:{tmp_path / 'd.npz'}",
        "--model",
        "mlp",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--set",
        "model.params.hidden=8",
    ]
    code, _, err = run_cli(capsys, *common, "--out", "whole.parquet")
    assert code == 0, err
    code, out, err = run_cli(capsys, *common, "--out", "s.parquet", "--shard", "2/2")
    assert code == 0 and "1 of 2 shards to go" in out, err
    code, _, err = run_cli(capsys, *common, "--out", "s.parquet", "--merge")
    assert_one_line_error(code, err, "shard 1/2 is missing", "shard-1-of-2.parquet")
    code, out, err = run_cli(capsys, *common, "--out", "s.parquet", "--shard", "1/2")
    assert code == 0 and "all 2 shards are done" in out, err
    code, out, err = run_cli(capsys, *common, "--out", "s.parquet", "--merge")
    assert code == 0, err
    assert not (tmp_path / "s.parquet.parts").exists()
    assert_same_scores(Scores.load(tmp_path / "s.parquet"), Scores.load(tmp_path / "whole.parquet"))
    code, _, err = run_cli(capsys, *common, "--out", "s.parquet", "--shard", "3/2")
    assert_one_line_error(code, err, "--shard 3/2")
    code, _, err = run_cli(capsys, *common, "--out", "s.parquet", "--shard", "1/2", "--merge")
    assert_one_line_error(code, err, "--shard", "--merge")


def test_cli_proxy_scoring_model(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(4)
    np.savez(
        tmp_path / "d.npz",
        x=rng.normal(size=(100, 6)).astype(np.float32),
        y=rng.integers(0, 3, 100),
    )
    (tmp_path / "c.yaml").write_text(
        f"dataset: {{name: 'npz:{tmp_path / 'd.npz'}'}}\n"
        "model: {name: mlp, params: {hidden: 32}}\n"
        "scoring: {seeds: 1, epochs: 1, model: {name: convnet1d, params: {channels: 4}}}\n"
    )
    code, _, err = run_cli(capsys, "score", "--config", "c.yaml", "--out", "p.parquet")
    assert code == 0, err
    metadata = Scores.load(tmp_path / "p.parquet").metadata
    assert metadata["model"] == {"name": "convnet1d", "params": {"channels": 4}}
    assert metadata["model_source"] == "scoring.model"
    # With a proxy in the config, --model names the proxy (the model that scores).
    argv = ["score", "--config", "c.yaml", "--model", "mlp", "--set", "scoring.model.params={}"]
    code, _, err = run_cli(capsys, *argv, "--out", "q.parquet")
    assert code == 0, err
    # Not the student's mlp (hidden 32): the proxy renamed, with its params.
    assert Scores.load(tmp_path / "q.parquet").metadata["model"] == {"name": "mlp", "params": {}}


def test_orchestration_shards_and_merges_with_the_cache_key(tmp_path):
    raw = {
        "name": "sharded",
        "output_dir": str(tmp_path / "a"),
        "dataset": {"name": "mnist1d", "params": {"num_samples": 300}},
        "model": {"name": "mlp", "params": {"hidden": 16}},
        "scoring": {
            "seeds": 2,
            "epochs": 1,
            "ensemble_size": 1,
            "shards": 3,
            "model": {"name": "mlp", "params": {"hidden": 8}},
        },
    }
    cfg = parse_config(raw)
    assert (
        score_cells.shard_count(cfg, "el2n") == 3
        and score_cells.shard_count(cfg, "forgetting") == 1
    )
    for group in score_cells.seed_groups(cfg, "el2n"):
        score_cells.prepare_shards(cfg, "el2n", group)
    for number in (1, 2, 3):
        score_cells.score_shard(cfg, "el2n", number, 3)
    record = score_cells.merge_scores(cfg, "el2n")
    assert score_cells.reusable_scores(cfg, "el2n") is not None
    unsharded = parse_config(
        raw | {"output_dir": str(tmp_path / "b"), "scoring": raw["scoring"] | {"shards": 1}}
    )
    whole = score_cells.merge_scores(unsharded, "el2n")
    merged, one = Scores.load(record["path"]), Scores.load(whole["path"])
    assert_same_scores(merged, one)
    assert merged.metadata["model"] == {"name": "mlp", "params": {"hidden": 8}}


@pytest.mark.slow
def test_score_flow_fans_out_groups_then_shards_and_merges(tmp_path, prefect_server):
    import yaml

    from datapruning.flows.score import score as score_flow

    raw = {
        "name": "flow-shards",
        "output_dir": str(tmp_path / "runs"),
        "dataset": {"name": "mnist1d", "params": {"num_samples": 300}},
        "model": {"name": "mlp", "params": {"hidden": 16}},
        "scoring": {"metric": "el2n", "seeds": 2, "epochs": 1, "ensemble_size": 1, "shards": 3},
        "sweep": {"metrics": ["el2n", "proto"]},
    }
    raw["scoring"]["params"] = {"proto": {"encoder_epochs": 1}}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    records = {r["metric"]: r for r in score_flow(str(config))["scores"]}
    assert set(records) == {"el2n", "proto"} and not any(r["reused"] for r in records.values())
    for metric, record in records.items():
        merged = Scores.load(record["path"])
        assert merged.metadata["shards"] == 3
        path = score_cells.scores_path(parse_config(raw), metric)
        assert not path.with_name(path.name + ".parts").exists()
        one_pass = parse_config(raw | {"output_dir": str(tmp_path / "one")})
        one_pass = one_pass.model_copy(update={"scoring": changed(one_pass.scoring, shards=1)})
        assert_same_scores(merged, Scores.load(score_cells.merge_scores(one_pass, metric)["path"]))
    again = score_flow(str(config))["scores"]
    assert all(r["reused"] for r in again)


@pytest.mark.slow
def test_pipeline_flow_scores_in_shards_before_its_students(tmp_path, prefect_server):
    import yaml

    from datapruning.flows.pipeline import pipeline

    raw = {
        "name": "pipe-shards",
        "output_dir": str(tmp_path / "runs"),
        "dataset": {"name": "mnist1d", "params": {"num_samples": 300}},
        "model": {"name": "mlp", "params": {"hidden": 16}},
        "train": {"epochs": 1, "batch_size": 50, "targets": [0.2]},
        "scoring": {"metric": "el2n", "seeds": 2, "epochs": 1, "ensemble_size": 1, "shards": 2},
        "students": {"fractions": [0.5], "strategies": ["hard"], "kd": [False], "seeds": [0]},
    }
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = pipeline(str(config))
    assert result["counts"] == {"trained": 2, "reused": 0, "failed": 0}
    scores = Scores.load(score_cells.scores_path(parse_config(raw), "el2n"))
    assert scores.metadata["shards"] == 2
    assert scores.metadata[keys.SCORES_KEY] == keys.scores_key(parse_config(raw), "el2n")
