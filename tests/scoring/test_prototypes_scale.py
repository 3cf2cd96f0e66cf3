"""Proto at scale: the encoder budget, encoders the user already has, the assignment
index, progress lines off a terminal, shards, and the interrupt message."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helper import run_cli
from torch import nn

from datapruning.config import ModelConfig, ScoringConfig, TrainConfig, parse_config
from datapruning.errors import DataPruningError, Interrupted
from datapruning.scoring import prototypes, score
from datapruning.scoring._common import merge_shards
from datapruning.scoring.params import DEFAULT_ENCODER_STEPS, ProtoParams
from datapruning.scoring.prototypes import (
    Assigner,
    Penultimate,
    assign,
    chunks,
    normalised,
    prototype_scores,
)
from datapruning.user import as_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

MLP = ModelConfig(name="mlp", params={"hidden": 16})


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 150)
    x = (rng.normal(size=(600, 12)) + y[:, None] * 0.5).astype(np.float32)
    return as_dataset((x, y))


def scoring(**proto) -> ScoringConfig:
    return ScoringConfig(params={"proto": ProtoParams(**proto)})


def proto_score(data, progress=False, **proto):
    return score(data, "proto", scoring(**proto), MLP, progress=progress)


# ------------------------------------------------------------------ encoder budget


def test_the_step_budget_does_not_grow_with_the_data(data):
    small = as_dataset((data.x_train[:200], data.y_train[:200]))
    for dataset in (data, small):
        record = proto_score(dataset, encoder_steps=7, batch_size=32).metadata["params"]["encoder"]
        assert record["budget"] == "steps" and record["steps"] == 7
        assert record["examples_seen"] == 7 * 32 and record["epochs"] is None


def test_the_step_budget_walks_fresh_permutations_past_one_epoch(data):
    # 480 rows in batches of 200: 3 batches a pass (the last of 80); 7 steps take 3 passes.
    generator = torch.Generator().manual_seed(0)
    batches = prototypes.Batches(480, 200, ProtoParams(encoder_steps=7), generator)
    sizes = [len(batch) for batch in batches]
    assert batches.total == 7 and sizes == [200, 200, 80, 200, 200, 80, 200]
    # Each pass is a permutation of every row.
    again = prototypes.Batches(480, 200, ProtoParams(encoder_steps=6), generator.manual_seed(0))
    rows = torch.cat(list(again))
    assert sorted(rows[:480].tolist()) == list(range(480)) == sorted(rows[480:].tolist())


def test_the_default_budget_is_capped_at_the_old_epochs_on_a_small_set(data):
    # 480 rows in batches of 256: 2 batches an epoch, 30 epochs = 60 steps < the default.
    default = proto_score(data).metadata["params"]["encoder"]
    assert default["budget"] == "steps" and default["steps"] == 60 < DEFAULT_ENCODER_STEPS
    old = proto_score(data, encoder_epochs=30)
    assert old.metadata["params"]["encoder"]["steps"] == 60
    # The same batches in the same order: the same scores.
    np.testing.assert_array_equal(proto_score(data).values, old.values)
    # An explicit budget is not capped.
    assert proto_score(data, encoder_steps=70).metadata["params"]["encoder"]["steps"] == 70


def test_the_epochs_budget_is_kept(data):
    record = proto_score(data, encoder_epochs=2, batch_size=128).metadata["params"]["encoder"]
    # ceil(480 / 128) = 4 batches per epoch.
    assert record["budget"] == "epochs" and record["epochs"] == 2 and record["steps"] == 8
    assert record["examples_seen"] == 2 * data.num_train


def test_steps_and_epochs_together_are_refused():
    with pytest.raises(DataPruningError, match=r"encoder_steps .* or encoder_epochs, not both"):
        parse_config({"scoring": {"params": {"proto": {"encoder_steps": 5, "encoder_epochs": 2}}}})
    with pytest.raises(DataPruningError, match="embeddings or encoder, not both"):
        parse_config({"scoring": {"params": {"proto": {"embeddings": "e.npy", "encoder": "c.pt"}}}})


def test_the_params_survive_a_round_trip_through_their_dump():
    for proto in (ProtoParams(), ProtoParams(encoder_epochs=2), ProtoParams(encoder_steps=9)):
        again = ProtoParams.model_validate(proto.model_dump())
        assert again == proto and again.steps == proto.steps
    assert ProtoParams().steps == DEFAULT_ENCODER_STEPS
    assert ProtoParams(encoder_epochs=2).steps is None


def test_the_budget_is_part_of_the_scoring_key():
    from datapruning.pipeline.keys import scores_key

    base = {"dataset": {"name": "mnist1d", "params": {"num_samples": 200}}}
    keys = {
        scores_key(parse_config(base | {"scoring": {"params": {"proto": proto}}}), "proto")
        for proto in ({}, {"encoder_steps": 10}, {"encoder_epochs": 10}, {"encoder": "c.pt"})
    }
    assert len(keys) == 4


# ------------------------------------------------------------------ encoders you already have


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.layer(x))


def test_a_user_module_embeds_without_training(data, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an encoder was trained although one was given")

    monkeypatch.setattr(prototypes, "train_encoder", refuse)
    torch.manual_seed(3)
    module = Tiny()
    scores = proto_score(data, encoder=module, k=4)
    with torch.no_grad():
        want = prototype_scores(module(torch.from_numpy(data.x_train)).numpy(), 4)[0]
    np.testing.assert_allclose(scores.values, want, atol=1e-6)
    record = scores.metadata["params"]["encoder"]
    assert record["name"] == "module" and record["class"].endswith("Tiny")
    assert record["embedding_dim"] == 5 and len(record["weights"]) == 16
    assert scores.metadata["model"] is None
    # In the key: another module's weights change the params' JSON form.
    other = Tiny()
    dumps = {ProtoParams(encoder=m).model_dump_json() for m in (module, other)}
    assert len(dumps) == 2


def test_a_checkpoint_embeds_with_its_penultimate_features(data, tmp_path):
    from datapruning.train.checkpoint import load_model
    from datapruning.train.loop import train

    train(data, MLP, TrainConfig(epochs=1, batch_size=64), run_dir=tmp_path / "run", progress=False)
    path = tmp_path / "run" / "checkpoint.pt"
    scores = proto_score(data, encoder=str(tmp_path / "run"), k=4)  # the run directory works
    model = load_model(path)
    with torch.no_grad():
        features = Penultimate(model)(torch.from_numpy(data.x_train)).numpy()
    assert features.shape == (data.num_train, 16)  # the mlp's hidden layer, not its 4 logits
    np.testing.assert_allclose(scores.values, prototype_scores(features, 4)[0], atol=1e-6)
    record = scores.metadata["params"]["encoder"]
    assert record["name"] == "checkpoint" and record["path"] == str(path)
    assert record["model"] == "mlp" and record["trained_on"] == data.fingerprint
    assert record["embedding_dim"] == 16 and len(record["blake2b"]) == 32
    # A checkpoint of another input shape is refused in one line.
    narrow = as_dataset((data.x_train[:, :6], data.y_train))
    with pytest.raises(DataPruningError, match=r"inputs of shape \(12,\).*\(6,\)"):
        proto_score(narrow, encoder=str(path))
    with pytest.raises(DataPruningError, match="not found"):
        proto_score(data, encoder=str(tmp_path / "none.pt"))


def test_an_encoder_that_is_no_module_is_refused():
    with pytest.raises(ValueError, match=r"checkpoint path .* or an nn.Module, not int"):
        ProtoParams(encoder=3)


# ------------------------------------------------------------------ shards


def assert_merged_equal(data, work, **proto):
    whole = proto_score(data, **proto)
    shards = [
        score(data, "proto", scoring(**proto), MLP, progress=False, work_dir=work, shard=f"{i}/3")
        for i in (1, 2, 3)
    ]
    merged = merge_shards(shards)
    pd.testing.assert_frame_equal(merged.table, whole.table, check_exact=True)
    return merged, whole


def test_shards_of_the_step_budget_merge_to_one_pass(data, tmp_path):
    # Chunks of 64 rows: shard bounds (160, 320) fall inside chunks.
    merged, whole = assert_merged_equal(
        data, tmp_path, encoder_steps=6, k=4, embed_batch_size=64, batch_size=64
    )
    assert merged.metadata["params"]["encoder"]["steps"] == 6
    assert merged.metadata["params"]["cluster_sizes"] == whole.metadata["params"]["cluster_sizes"]


def test_shards_of_a_given_module_merge_to_one_pass(data, tmp_path):
    torch.manual_seed(4)
    assert_merged_equal(data, tmp_path, encoder=Tiny(), k=3, embed_batch_size=100)


def test_chunks_are_cut_where_one_pass_cuts_them():
    assert list(chunks(range(0, 10), 4)) == [(0, 4), (4, 8), (8, 10)]
    assert list(chunks(range(3, 10), 4)) == [(3, 4), (4, 8), (8, 10)]
    assert list(chunks(range(5, 6), 4)) == [(5, 6)]


# ------------------------------------------------------------------ assignment index


def test_the_exact_index_is_the_plain_flat_search():
    rng = np.random.default_rng(5)
    x = normalised(rng.normal(size=(300, 8)).astype(np.float32))
    centroids = normalised(rng.normal(size=(6, 8)).astype(np.float32))
    default = Assigner(centroids)
    assert default.kind == "exact" and ProtoParams().index == "exact"
    distances, nearest = default(x)
    want_d, want_n = assign(x, centroids)
    assert np.array_equal(distances, want_d) and np.array_equal(nearest, want_n)
    similarity = x @ centroids.T
    assert np.array_equal(nearest, similarity.argmax(axis=1))


def test_hnsw_finds_the_nearest_centroid_of_clustered_rows():
    rng = np.random.default_rng(6)
    centroids = normalised(rng.normal(size=(64, 16)).astype(np.float32))
    x = normalised(centroids[rng.integers(0, 64, 500)] + 0.05 * rng.normal(size=(500, 16)))
    exact, hnsw = Assigner(centroids, "exact"), Assigner(centroids, "hnsw")
    assert hnsw.kind == "hnsw" and hnsw.record()["faiss"] == "IndexHNSWFlat"
    assert np.mean(exact(x)[1] == hnsw(x)[1]) > 0.99
    with pytest.raises(DataPruningError, match="give exact or hnsw"):
        Assigner(centroids, "ivf")


def test_scores_through_hnsw_record_the_index(data):
    scores = proto_score(data, encoder_steps=3, k=4, index="hnsw")
    assert scores.metadata["params"]["assignment"]["kind"] == "hnsw"
    exact = proto_score(data, encoder_steps=3, k=4)
    assert exact.metadata["params"]["assignment"] == {"kind": "exact", "faiss": "IndexFlatIP"}
    # Four centroids: the graph finds the nearest one for every row.
    np.testing.assert_allclose(scores.values, exact.values, atol=1e-6)


# ------------------------------------------------------------------ progress and interrupts


def test_progress_lines_off_a_terminal(data, capsys):
    capsys.readouterr()
    proto_score(data, progress=None, encoder_steps=20, batch_size=64, embed_batch_size=100)
    lines = capsys.readouterr().err.strip().splitlines()
    encoder = [line for line in lines if line.startswith("proto encoder: ")]
    embedded = [line for line in lines if line.startswith("proto embed: ")]
    # A line per tenth of the steps (blocks of 2) and of the rows (chunks of 100: 5 of them).
    assert len(encoder) == 10 and encoder[-1].startswith("proto encoder: 20/20 steps (100%, loss ")
    assert len(embedded) == 5 and embedded[-1].startswith("proto embed: 480/480 rows (100%")
    capsys.readouterr()
    proto_score(data, progress=False, encoder_steps=5)
    assert capsys.readouterr().err == ""


def interrupt_at(monkeypatch, target: str, calls: int, signum: int = signal.SIGINT) -> None:
    """Send ``signum`` to this process at the ``calls``-th call of ``prototypes.<target>``."""
    real = getattr(prototypes, target)
    count = [0]

    def wrapped(*args, **kwargs):
        count[0] += 1
        if count[0] == calls:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(prototypes, target, wrapped)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_while_training_says_nothing_is_saved(data, tmp_path, monkeypatch, signum):
    interrupt_at(monkeypatch, "nt_xent", 2, signum)  # before the first resume point
    cfg = scoring(encoder_steps=30)
    with pytest.raises(Interrupted) as info:
        score(data, "proto", cfg, MLP, progress=False, work_dir=tmp_path)
    assert info.value.signum == signum
    assert str(info.value) == (
        f"proto stopped while training the encoder; nothing saved yet in {str(tmp_path)!r}"
    )


def test_an_interrupted_encoder_resumes_from_its_last_tenth_bit_for_bit(
    data, tmp_path, monkeypatch
):
    cfg = scoring(encoder_steps=30, batch_size=64)  # a resume point every 3 steps
    whole = score(data, "proto", cfg, MLP, progress=False)
    interrupt_at(monkeypatch, "nt_xent", 15)  # during step 15: the last point is step 12
    with pytest.raises(Interrupted) as info:
        score(data, "proto", cfg, MLP, progress=False, work_dir=tmp_path)
    assert str(info.value) == (
        "proto stopped while training the encoder; encoder step 12 of 30 saved in "
        f"{str(tmp_path)!r}, the rerun continues from it"
    )
    assert len(list(tmp_path.glob("proto-*.encoder.pt"))) == 1
    monkeypatch.undo()
    resumed = score(data, "proto", cfg, MLP, progress=False, work_dir=tmp_path)
    pd.testing.assert_frame_equal(resumed.table, whole.table, check_exact=True)
    record = resumed.metadata["params"]["encoder"]
    assert record["resumed_at_step"] == 12 and record["steps"] == 30
    assert record["examples_seen"] == whole.metadata["params"]["encoder"]["examples_seen"]
    assert record["final_loss"] == whole.metadata["params"]["encoder"]["final_loss"]
    # The resume point is gone once the encoder and centroids are saved.
    assert not list(tmp_path.glob("proto-*.encoder.pt"))
    assert len(list(tmp_path.glob("proto-*.pt"))) == 1


def test_an_interrupt_after_the_encoder_is_saved_resumes_from_it(
    data, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "d.npz", x=data.x_train, y=data.y_train)
    args = [
        "score", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--metric", "proto", "--model", "mlp",
        "--set", "model.params.hidden=8", "--set", "scoring.params.proto.encoder_steps=5",
        "--set", "scoring.params.proto.embed_batch_size=50",
    ]  # fmt: skip
    code, _, err = run_cli(capsys, *args, "--out", "whole.parquet")
    assert code == 0, err
    interrupt_at(monkeypatch, "normalised", 3)  # the 1st clusters, then the 2nd chunk
    code, _, err = run_cli(capsys, *args, "--out", "s.parquet")
    assert code == 130
    assert err[-1] == (
        "interrupted by SIGINT: proto stopped while embedding and assigning; encoder and "
        "centroids saved in 's.parquet.parts', the rerun only embeds and assigns; to continue, "
        f"run: datapruning {' '.join(args)} --out s.parquet"
    )
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)

    def refuse(*a, **k):
        raise AssertionError("the rerun trained the encoder again")

    monkeypatch.setattr(prototypes, "train_encoder", refuse)
    code, _, err = run_cli(capsys, *args, "--out", "s.parquet")
    assert code == 0, err
    resumed, whole = (pd.read_parquet(tmp_path / n) for n in ("s.parquet", "whole.parquet"))
    pd.testing.assert_frame_equal(resumed, whole, check_exact=True)


def test_a_streamed_uint8_set_scores_as_its_float_copy(tmp_path):
    from dataclasses import replace

    from datapruning.data.stream import ArrayExamples

    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(300, 3, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 3, 300)
    memory = as_dataset((pixels.astype(np.float32) / 255, y))
    streamed = replace(
        memory, x_train=ArrayExamples((memory.x_train * 255).round().astype(np.uint8))
    )
    assert streamed.streaming and streamed.fingerprint == memory.fingerprint
    conv = ModelConfig(name="mlp", params={"hidden": 8})
    cfg = scoring(encoder_steps=4, batch_size=32, k=3, embed_batch_size=50)
    a = score(memory, "proto", cfg, conv, progress=False)
    b = score(streamed, "proto", cfg, conv, progress=False)
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)


def test_permuted_labels_leave_the_scores_unchanged(data):
    from dataclasses import replace

    permuted = replace(data, y_train=np.random.default_rng(8).permutation(data.y_train))
    assert permuted.fingerprint != data.fingerprint  # the labels are part of it
    torch.manual_seed(9)
    module = Tiny()
    for proto in ({"encoder_steps": 6}, {"encoder": module, "k": 4}):
        a, b = (proto_score(d, **proto).values for d in (data, permuted))
        np.testing.assert_array_equal(a, b)


def test_the_cli_scores_with_a_checkpoint_encoder(data, tmp_path, capsys, monkeypatch):
    from datapruning.scores import Scores
    from datapruning.train.loop import train

    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "d.npz", x=data.x_train, y=data.y_train)
    train(data, MLP, TrainConfig(epochs=1, batch_size=64), run_dir=tmp_path / "run", progress=False)
    args = ["score", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--metric", "proto", "--k", "3"]
    code, _, err = run_cli(
        capsys, *args, "--set", "scoring.params.proto.encoder=run", "--out", "p.parquet"
    )
    assert code == 0, err
    record = Scores.load(tmp_path / "p.parquet").metadata["params"]["encoder"]
    assert record["name"] == "checkpoint" and record["path"] == str(Path("run") / "checkpoint.pt")
    code, _, err = run_cli(
        capsys, *args, "--set", "scoring.params.proto.encoder=nowhere.pt", "--out", "q.parquet"
    )
    assert code == 2 and len(err) == 1 and "nowhere.pt" in err[0] and "not found" in err[0]
