import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from datapruning.data.beton import cached_beton, meta_path, read_meta, to_beton
from datapruning.data.dataset import Dataset
from datapruning.data.ffcv import make_loader
from datapruning.data.samplers import RS2Sampler, SubsetSampler
from datapruning.errors import DataPruningError, FingerprintMismatchError

pytest.importorskip("ffcv")


def collect(loader):
    """One epoch as (x, y, index) tensors, batches concatenated."""
    xs, ys, idx = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys), torch.cat(idx)


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    return rng.standard_normal((230, 7)).astype(np.float32), rng.integers(0, 5, 230)


@pytest.fixture(scope="module")
def images():
    # Image sources store uint8 / 255 as float32 (N, 3, H, W).
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (90, 3, 6, 5), dtype=np.uint8)
    return pixels.astype(np.float32) / 255, rng.integers(0, 3, 90)


@pytest.fixture(scope="module")
def vector_beton(tmp_path_factory, vectors):
    return to_beton(vectors, tmp_path_factory.mktemp("ffcv") / "vectors.beton")


@pytest.fixture(scope="module")
def image_beton(tmp_path_factory, images):
    return to_beton(images, tmp_path_factory.mktemp("ffcv") / "images.beton")


def test_round_trip_of_a_vector_subset(vector_beton, vectors):
    x, y = vectors
    subset = np.random.default_rng(2).choice(len(y), size=101, replace=False)
    loader = make_loader(vector_beton, batch_size=16, indices=subset, seed=3)
    assert len(loader) == math.ceil(101 / 16)
    xb, yb, index = collect(loader)
    assert sorted(index.tolist()) == sorted(subset.tolist())
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert torch.equal(xb, torch.from_numpy(x[index.numpy()]))
    assert torch.equal(yb, torch.from_numpy(y[index.numpy()]))


def test_round_trip_of_images_is_exact(image_beton, images):
    x, y = images
    assert read_meta(image_beton)["x_field"] == "rgb_image"
    loader = make_loader(image_beton, batch_size=32, indices=np.arange(10, 80), shuffle=False)
    xb, yb, index = collect(loader)
    assert index.tolist() == list(range(10, 80))
    assert xb.shape == (70, 3, 6, 5)
    assert torch.equal(xb, torch.from_numpy(x[10:80]))
    assert torch.equal(yb, torch.from_numpy(y[10:80]))


def test_batches_stay_valid_after_ffcv_reuses_its_buffers(vector_beton, vectors):
    x, _ = vectors
    # Holding every batch of an epoch outlives FFCV's few rotating buffers.
    batches = list(make_loader(vector_beton, batch_size=8, batches_ahead=1))
    for xb, _, index in batches:
        assert torch.equal(xb, torch.from_numpy(x[index.numpy()]))


def test_rs2_order_draws_the_same_subsets_as_rs2_sampler(vector_beton):
    loader = make_loader(vector_beton, batch_size=10, rs2=0.3, seed=7)
    reference = RS2Sampler(230, 0.3, seed=7)
    assert len(loader) == math.ceil(reference.subset_size / 10)
    seen = []
    for epoch in range(5):
        loader.set_epoch(epoch)
        reference.set_epoch(epoch)
        _, _, index = collect(loader)
        assert index.tolist() == reference.rank_indices().tolist()
        seen.append(set(index.tolist()))
    assert seen[0] != seen[1]
    # Without replacement, ceil(1 / 0.3) = 4 epochs see every example.
    assert set().union(*seen[:4]) == set(range(230))


def test_sampler_order_matches_the_torch_path_under_ddp(vector_beton, vectors):
    x, y = vectors
    subset = np.arange(3, 200, 2)
    shares = []
    for rank in range(3):
        sampler = SubsetSampler(subset, seed=5, num_replicas=3, rank=rank)
        loader = make_loader(vector_beton, batch_size=9, sampler=sampler)
        assert len(loader) == math.ceil(len(sampler) / 9)
        for epoch in (0, 4):
            sampler.set_epoch(epoch)
            xb, yb, index = collect(loader)
            assert index.tolist() == list(sampler)
            assert torch.equal(xb, torch.from_numpy(x[index.numpy()]))
            assert torch.equal(yb, torch.from_numpy(y[index.numpy()]))
        shares.append(set(index.tolist()))
    assert set.union(*shares) == set(subset.tolist())


def test_stratified_rs2_sampler_with_replacement(image_beton, images):
    _, y = images
    sampler = RS2Sampler(90, 0.5, replacement=True, stratify=y, seed=1)
    loader = make_loader(image_beton, batch_size=20, rs2=sampler)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        _, yb, index = collect(loader)
        sampler.set_epoch(epoch)
        assert index.tolist() == sampler.rank_indices().tolist()
        assert torch.equal(yb, torch.from_numpy(y[index.numpy()]))


def test_loader_keeps_the_callers_torch_threads(vector_beton):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loader = make_loader(vector_beton, batch_size=50, num_workers=2)
        collect(loader)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_sidecar_records_the_dataset_fingerprint(tmp_path, vectors):
    x, y = vectors
    dataset = Dataset("toy", x, y, x[:5], y[:5], num_classes=5, params={"k": 1})
    path = to_beton(dataset, tmp_path / "toy.beton")
    meta = json.loads(meta_path(path).read_text())
    assert meta["fingerprint"] == dataset.fingerprint
    assert (meta["dataset"], meta["num_samples"], meta["input_shape"]) == ("toy", 230, [7])
    assert read_meta(path, dataset.fingerprint)["params"] == {"k": 1}
    assert {p.name for p in tmp_path.iterdir()} == {
        "toy.beton",
        "toy.beton.json",
        "toy.beton.test.npz",
    }


def test_sidecar_of_another_format_version_is_refused(tmp_path, vectors):
    path = to_beton(vectors, tmp_path / "v.beton")
    meta = json.loads(meta_path(path).read_text())
    assert meta["format"] == "datapruning-beton/2"
    meta["format"] = "datapruning-beton/1"
    meta_path(path).write_text(json.dumps(meta))
    with pytest.raises(DataPruningError, match="format 'datapruning-beton/1', which this"):
        read_meta(path)
    meta["format"] = "something-else"
    meta_path(path).write_text(json.dumps(meta))
    with pytest.raises(DataPruningError, match="not a datapruning beton sidecar"):
        read_meta(path)


def test_a_beton_of_another_dataset_is_refused(vector_beton, vectors):
    with pytest.raises(FingerprintMismatchError, match="convert this dataset"):
        make_loader(vector_beton, batch_size=4, fingerprint="v2:0123456789abcdef")


def test_missing_or_changed_sidecar_is_refused(tmp_path, vectors):
    path = to_beton(vectors, tmp_path / "v.beton")
    with path.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(DataPruningError, match="does not match its sidecar"):
        read_meta(path)
    meta_path(path).unlink()
    with pytest.raises(DataPruningError, match="datapruning convert"):
        read_meta(path)
    with pytest.raises(DataPruningError, match="not found"):
        make_loader(tmp_path / "missing.beton", batch_size=4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"indices": [0, 230]}, r"must lie in 0\.\.229"),
        ({"indices": [4, 4]}, "duplicates"),
        ({"indices": []}, "empty"),
        ({"rs2": 0.0}, r"must lie in \(0, 1\]"),
        ({"rs2": 1.5}, r"must lie in \(0, 1\]"),
        ({"rs2": RS2Sampler(100, 0.5)}, "the beton holds 230"),
        ({"sampler": SubsetSampler([0, 500])}, "beton holds 230"),
        ({"indices": [1], "rs2": 0.5}, "at most one of indices, rs2, sampler"),
        ({"distributed": True}, "process group"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_loader_arguments(vector_beton, kwargs, message):
    kwargs = {"batch_size": 4, **kwargs}
    with pytest.raises(DataPruningError, match=message):
        make_loader(vector_beton, **kwargs)


def test_non_8bit_images_need_ndarray_mode(tmp_path, images):
    x, y = images
    noisy = x + 1e-3
    with pytest.raises(DataPruningError, match="image_mode='ndarray'"):
        to_beton((noisy, y), tmp_path / "noisy.beton")
    assert not list(tmp_path.iterdir())  # nothing half-written
    path = to_beton((noisy, y), tmp_path / "noisy.beton", image_mode="ndarray")
    xb, _, index = collect(make_loader(path, batch_size=40, shuffle=False))
    assert index.tolist() == list(range(90))
    assert torch.equal(xb, torch.from_numpy(noisy))


def test_bad_writer_input(tmp_path, vectors):
    x, y = vectors
    with pytest.raises(DataPruningError, match="one label per row"):
        to_beton((x, y[:-1]), tmp_path / "a.beton")
    with pytest.raises(DataPruningError, match="image_mode"):
        to_beton((x, y), tmp_path / "a.beton", image_mode="png")  # type: ignore[arg-type]
    with pytest.raises(DataPruningError, match="does not exist"):
        to_beton((x, y), tmp_path / "missing" / "a.beton")


def test_cached_beton_is_written_once_per_dataset(tmp_path, monkeypatch, vectors):
    x, y = vectors
    monkeypatch.setenv("DATAPRUNING_CACHE_DIR", str(tmp_path))
    dataset = Dataset("toy", x, y, x[:5], y[:5], num_classes=5)
    path = cached_beton(dataset)
    assert path.parent == tmp_path / "beton" and dataset.fingerprint.replace(":", "-") in path.name
    written = path.stat().st_mtime_ns
    assert cached_beton(dataset) == path
    assert path.stat().st_mtime_ns == written
    other = Dataset("toy", x[:100], y[:100], x[:5], y[:5], num_classes=5)
    assert cached_beton(other) != path


def test_without_ffcv_the_error_says_how_to_install(monkeypatch, vector_beton):
    monkeypatch.setitem(sys.modules, "ffcv", None)  # what find_spec sees when it is absent
    with pytest.raises(DataPruningError, match=r"pip install 'datapruning-tta\[ffcv\]'"):
        make_loader(vector_beton, batch_size=4)
    from datapruning.config import parse_config
    from datapruning.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train\.loader: loader ffcv needs FFCV"):
        parse_config({"train": {"loader": "ffcv"}})


def test_importing_datapruning_does_not_import_ffcv():
    code = (
        "import sys, datapruning, datapruning.data.ffcv, datapruning.train.loop, "
        "datapruning.cli; from datapruning import SubsetSampler; "
        "assert 'ffcv' not in sys.modules, 'ffcv imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_make_batches_ffcv_matches_the_torch_loader(tmp_path, monkeypatch, vectors):
    from datapruning.data.loaders import make_batches

    x, y = vectors
    monkeypatch.setenv("DATAPRUNING_CACHE_DIR", str(tmp_path))
    dataset = Dataset("toy", x, y, x[:5], y[:5], num_classes=5)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    sampler = SubsetSampler(np.arange(0, 230, 3), seed=2)
    ffcv = make_batches("ffcv", xt, yt, sampler, 11, dataset=dataset)
    reference = make_batches("torch", xt, yt, sampler, 11)
    assert len(ffcv) == len(reference)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for got, want in zip(ffcv, reference, strict=True):
            for a, b in zip(got, want, strict=True):
                assert torch.equal(a, b)


def test_parallel_runs_share_one_cached_beton(tmp_path, monkeypatch, vectors):
    from concurrent.futures import ThreadPoolExecutor

    x, y = vectors
    monkeypatch.setenv("DATAPRUNING_CACHE_DIR", str(tmp_path))
    dataset = Dataset("toy", x, y, x[:5], y[:5], num_classes=5)
    with ThreadPoolExecutor(3) as pool:
        paths = list(pool.map(lambda _: cached_beton(dataset), range(3)))
    assert len(set(paths)) == 1
    assert read_meta(paths[0], dataset.fingerprint)["num_samples"] == 230
