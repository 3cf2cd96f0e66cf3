"""Streaming sources read the same data as memory: batches, fingerprints, scores and weights.

One small image set (3 classes, 8x8 RGB PNGs the test writes) in five forms: float32
in memory, uint8 in memory (ArrayExamples), an image folder decoded per image, a beton
read through its memory map, and a torch Dataset read item by item.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from weights_helper import assert_same_weights

from datapruning.config import ModelConfig, ScoringConfig, TrainConfig
from datapruning.data.beton import meta_path, to_beton
from datapruning.data.fingerprint import fingerprint_arrays
from datapruning.data.loaders import make_batches, make_source_batches
from datapruning.data.samplers import SubsetSampler
from datapruning.data.sources import load_dataset
from datapruning.data.stream import ArrayExamples, SourceRows
from datapruning.errors import DataPruningError, FingerprintMismatchError
from datapruning.scores import Scores
from datapruning.scoring import score
from datapruning.train.checkpoint import load_model
from datapruning.train.loop import train
from datapruning.user import as_dataset

MLP = ModelConfig(name="mlp", params={"hidden": 32})
SIZE = 8


def _write_images(root, rng, per_class):
    for label in range(3):
        folder = root / str(label)
        folder.mkdir(parents=True)
        for i in range(per_class):
            # Class-dependent brightness plus noise: learnable, and every pixel 8-bit.
            base = np.full((SIZE, SIZE, 3), 60 + 60 * label, dtype=np.int16)
            pixels = np.clip(base + rng.integers(-50, 50, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(0)
    _write_images(tmp / "images" / "train", rng, 30)
    _write_images(tmp / "images" / "test", rng, 4)
    params = {"root": str(tmp / "images"), "size": SIZE}
    memory = load_dataset("imagefolder", {**params, "stream": False})
    folder = load_dataset("imagefolder", {**params, "stream": True})
    beton = to_beton(folder, tmp / "train.beton", num_workers=1)
    pixels = np.rint(memory.x_train * 255).astype(np.uint8)
    return {
        "memory": memory,
        "uint8": replace(memory, x_train=ArrayExamples(pixels)),
        "folder": folder,
        "beton": load_dataset(f"beton:{beton}"),
    }


def test_every_storage_has_one_fingerprint(forms):
    memory = forms["memory"]
    assert not memory.streaming and all(forms[k].streaming for k in ("uint8", "folder", "beton"))
    assert memory.fingerprint.startswith("v2:")
    assert {form.fingerprint for form in forms.values()} == {memory.fingerprint}
    pixels = forms["uint8"].x_train.array
    assert fingerprint_arrays(pixels, memory.y_train) == memory.fingerprint
    changed = pixels.copy()
    changed[3, 1, 2, 2] ^= 1
    assert fingerprint_arrays(changed, memory.y_train) != memory.fingerprint
    relabelled = memory.y_train.copy()
    relabelled[0] = (relabelled[0] + 1) % 3
    assert fingerprint_arrays(pixels, relabelled) != memory.fingerprint


def test_folder_fingerprint_is_cached_by_file_identity(forms, monkeypatch, tmp_path):
    import shutil

    from datapruning.data import stream

    shutil.copytree(forms["folder"].params["root"], tmp_path / "images")
    params = {**forms["folder"].params, "root": str(tmp_path / "images")}
    folder = load_dataset("imagefolder", params)
    assert folder.fingerprint == forms["memory"].fingerprint

    def no_pass(*args, **kwargs):
        raise AssertionError("the fingerprint was recomputed")

    monkeypatch.setattr(stream, "fingerprint_chunks", no_pass)
    assert load_dataset("imagefolder", params).fingerprint == folder.fingerprint
    monkeypatch.undo()
    # A file rewritten with other pixels: the cache key changes, so does the fingerprint.
    first = folder.x_train.files[0]
    Image.fromarray(np.zeros((SIZE, SIZE, 3), dtype=np.uint8)).save(first)
    assert load_dataset("imagefolder", params).fingerprint != folder.fingerprint


def test_streams_read_the_same_rows_and_batches(forms):
    memory = forms["memory"]
    index = np.array([7, 0, 89, 45, 45])
    x = torch.as_tensor(memory.x_train)
    y = torch.as_tensor(memory.y_train)
    expected = [
        tuple(t.clone() for t in batch)
        for batch in make_batches("memory", x, y, SubsetSampler(np.arange(90), seed=3), 16)
    ]
    for name in ("uint8", "folder", "beton"):
        dataset = forms[name]
        assert np.array_equal(dataset.read_train(index), memory.x_train[index])
        rows = SourceRows(dataset.x_train)
        assert torch.equal(rows[torch.as_tensor(index).view(1, -1)][0], x[index])
        assert torch.equal(torch.cat(list(rows.split(32))), x)
        for kind in ("memory", "torch", "ffcv"):
            sampler = SubsetSampler(np.arange(90), seed=3)
            got = list(make_source_batches(kind, dataset, sampler, 16, device=torch.device("cpu")))
            assert len(got) == len(expected), (name, kind)
            for a, b in zip(got, expected, strict=True):
                assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True)), (name, kind)


@pytest.mark.parametrize(
    "metric",
    ["el2n", "forgetting", *(pytest.param(m, marks=pytest.mark.slow) for m in ("grand", "proto"))],
)
def test_scores_are_the_same_bit_for_bit(forms, metric):
    scoring = ScoringConfig(seeds=2, epochs=1)
    recipe = TrainConfig(batch_size=16, lr=0.1)
    expected = score(forms["memory"], metric, scoring, MLP, recipe, progress=False)
    for name in ("beton", "folder"):
        got = score(forms[name], metric, scoring, MLP, recipe, progress=False)
        assert np.array_equal(got.values, expected.values), name
        assert got.fingerprint == expected.fingerprint


def test_trained_weights_are_the_same_bit_for_bit(forms):
    # crop_flip: the image folder's default augmentation, seeded per batch.
    recipe = TrainConfig(epochs=2, batch_size=16, lr=0.1, seed=1, targets=[], augment="crop_flip")
    expected = train(forms["memory"], MLP, recipe).model
    for name, loader in (("beton", "memory"), ("folder", "torch"), ("beton", "ffcv")):
        got = train(forms[name], MLP, recipe.model_copy(update={"loader": loader})).model
        assert_same_weights(got, expected)
    # KD from cached teacher logits, computed batch by batch from the stream.
    plain = recipe.model_copy(update={"augment": "none"})
    teacher = expected
    assert_same_weights(
        train(forms["beton"], MLP, plain, teacher=teacher).model,
        train(forms["memory"], MLP, plain, teacher=teacher).model,
    )


def test_user_torch_dataset_streams(forms):
    memory = forms["memory"]
    pixels = forms["uint8"].x_train.array

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return len(pixels)

        def __getitem__(self, i):
            return torch.from_numpy(pixels[i]), int(memory.y_train[i])

    test = (memory.x_test, memory.y_test)
    streamed = as_dataset(Items(), test=test, stream=True)
    assert streamed.streaming and streamed.x_train.dtype == np.uint8
    assert streamed.fingerprint == memory.fingerprint
    assert np.array_equal(streamed.read_train(np.arange(90)), memory.x_train)
    with pytest.raises(DataPruningError, match="give test="):
        as_dataset(Items(), stream=True)
    assert not as_dataset(Items(), test=test).streaming  # small: in memory by default


def test_old_fingerprints_are_refused_with_the_fix(forms, tmp_path):
    memory = forms["memory"]
    old = "0123456789abcdef"  # version 1: 16 hex digits, no prefix
    scores = score(memory, "random", ScoringConfig(seeds=1), MLP, TrainConfig(), progress=False)
    scores.metadata["dataset"]["fingerprint"] = old
    scores.save(tmp_path / "old.parquet")
    with pytest.raises(FingerprintMismatchError, match=r"old-style .*`datapruning score`"):
        Scores.load(tmp_path / "old.parquet", memory.fingerprint)

    run = train(memory, MLP, TrainConfig(epochs=1, targets=[]), run_dir=tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=False)
    state["dataset_fingerprint"] = old
    torch.save(state, checkpoint)
    with pytest.raises(FingerprintMismatchError, match=r"old-style .*`datapruning train`"):
        load_model(checkpoint, fingerprint=memory.fingerprint)
    assert run.model is not None

    beton = tmp_path / "old.beton"
    to_beton(memory, beton, num_workers=1)
    meta = json.loads(meta_path(beton).read_text())
    meta["format"] = "datapruning-beton/1"
    meta_path(beton).write_text(json.dumps(meta))
    with pytest.raises(DataPruningError, match="datapruning convert"):
        load_dataset(f"beton:{beton}")


def test_cifar_batches_stay_uint8_when_streamed(tmp_path):
    import pickle

    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    memory = load_dataset("cifar10", {"root": str(tmp_path), "stream": False})
    streamed = load_dataset("cifar10", {"root": str(tmp_path), "stream": True})
    assert isinstance(streamed.x_train, ArrayExamples) and streamed.x_train.dtype == np.uint8
    assert memory.x_train.dtype == np.float32 and not memory.streaming
    assert streamed.fingerprint == memory.fingerprint
    assert np.array_equal(streamed.read_train(np.arange(20)), memory.x_train)
    assert np.array_equal(streamed.x_test, memory.x_test)


@pytest.mark.parametrize("metric", ["el2n", "proto"])
def test_shards_of_a_streaming_set_merge_to_the_in_memory_scores(forms, metric, tmp_path):
    from datapruning.scoring._common import merge_shards

    scoring = ScoringConfig(seeds=1, epochs=1)
    recipe = TrainConfig(batch_size=16, lr=0.1)
    expected = score(forms["memory"], metric, scoring, MLP, recipe, progress=False)
    shards = [
        score(
            forms["beton"],
            metric,
            scoring,
            MLP,
            recipe,
            progress=False,
            work_dir=tmp_path,
            shard=f"{number}/3",
        )
        for number in (1, 2, 3)
    ]
    assert np.array_equal(merge_shards(shards).values, expected.values)
