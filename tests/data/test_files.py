"""File sources on small files written in each real format."""

import pickle

import numpy as np
import pytest
from PIL import Image

from datapruning.data.sources import get_source, load_dataset
from datapruning.errors import ConfigError, DataPruningError, UnknownNameError


def write_cifar_batch(path, images, labels, label_key=b"labels"):
    # The released files: a pickled dict with bytes keys, rows of 3072 uint8
    # (1024 red, 1024 green, 1024 blue, each a row-major 32x32 plane).
    batch = {
        b"batch_label": b"testing batch",
        b"data": images.reshape(len(images), -1),
        label_key: list(map(int, labels)),
        b"filenames": [f"{i}.png".encode() for i in range(len(images))],
    }
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [int(y) // 5 for y in labels]
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def random_images(rng, n):
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


@pytest.fixture
def cifar10_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = []
    for i in range(1, 6):
        images, labels = random_images(rng, 4), rng.integers(0, 10, 4)
        write_cifar_batch(folder / f"data_batch_{i}", images, labels)
        batches.append((images, labels))
    write_cifar_batch(folder / "test_batch", random_images(rng, 3), [0, 1, 2])
    return folder, batches


def test_cifar10_reads_the_pickle_batches_in_order(cifar10_dir):
    folder, batches = cifar10_dir
    ds = load_dataset("cifar10", {"root": str(folder)})
    assert ds.x_train.shape == (20, 3, 32, 32)
    assert ds.x_test.shape == (3, 3, 32, 32)
    assert ds.num_classes == 10
    assert ds.x_train.dtype == np.float32
    expected = np.concatenate([images for images, _ in batches]).astype(np.float32) / 255
    np.testing.assert_array_equal(ds.x_train, expected)
    np.testing.assert_array_equal(ds.y_train, np.concatenate([labels for _, labels in batches]))
    assert ds.y_test.tolist() == [0, 1, 2]
    # Channel planes are decoded as such: pixel (0, 0) of image 0 is bytes 0, 1024, 2048.
    flat = batches[0][0].reshape(4, -1)
    assert (ds.x_train[0, :, 0, 0] * 255).round().tolist() == flat[0, [0, 1024, 2048]].tolist()


def test_cifar_root_may_be_the_parent_folder_or_given_as_name_suffix(cifar10_dir):
    folder, _ = cifar10_dir
    by_parent = load_dataset("cifar10", {"root": str(folder.parent)})
    by_name = load_dataset(f"cifar10:{folder}")
    assert by_parent.fingerprint == by_name.fingerprint
    assert by_name.params["root"] == str(folder)


def test_cifar100_fine_and_coarse_labels(tmp_path):
    rng = np.random.default_rng(1)
    write_cifar_batch(
        tmp_path / "train", random_images(rng, 6), [0, 7, 99, 5, 6, 50], b"fine_labels"
    )
    write_cifar_batch(tmp_path / "test", random_images(rng, 2), [1, 98], b"fine_labels")
    fine = load_dataset("cifar100", {"root": str(tmp_path)})
    assert fine.num_classes == 100
    assert fine.y_train.tolist() == [0, 7, 99, 5, 6, 50]
    coarse = load_dataset("cifar100", {"root": str(tmp_path), "coarse": True})
    assert coarse.num_classes == 20
    assert coarse.y_train.tolist() == [0, 1, 19, 1, 1, 10]


def test_cifar_missing_batch_file_is_named(cifar10_dir):
    folder, _ = cifar10_dir
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataPruningError, match="data_batch_3' is missing"):
        load_dataset("cifar10", {"root": str(folder)})


def test_cifar_truncated_batch_file_is_named(cifar10_dir):
    folder, _ = cifar10_dir
    data = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataPruningError, match="data_batch_2' is truncated"):
        load_dataset("cifar10", {"root": str(folder)})


class RunsACommand:
    """What a crafted pickle does: unpickling calls ``os.system`` with its command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


class EvalsCode:
    def __reduce__(self):
        return eval, ("1 + 1",)


@pytest.mark.parametrize("payload", ["reduce_at_top", "inside_the_dict", "eval"])
def test_cifar_batch_naming_any_other_global_is_refused_without_running_it(
    cifar10_dir, tmp_path, payload
):
    folder, _ = cifar10_dir
    marker = tmp_path / "pwned"
    attack = RunsACommand(f"touch {marker}")
    crafted = {
        "reduce_at_top": attack,
        "inside_the_dict": {b"data": np.zeros((1, 3072), np.uint8), b"labels": [attack]},
        "eval": EvalsCode(),
    }[payload]
    (folder / "data_batch_4").write_bytes(pickle.dumps(crafted, protocol=2))
    with pytest.raises(DataPruningError) as info:
        load_dataset("cifar10", {"root": str(folder)})
    message = str(info.value)
    assert "\n" not in message
    assert "data_batch_4" in message and "refusing to unpickle" in message
    # Protocol 2 names builtins by their Python 2 module, __builtin__.
    assert ("posix.system" if payload != "eval" else "__builtin__.eval") in message
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_and_numpy_scalars_load(tmp_path, protocol):
    # Labels as numpy scalars and data as an array, under the protocols Python and numpy
    # write (protocol 5 rebuilds arrays through numpy's _frombuffer).
    rng = np.random.default_rng(protocol)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = random_images(rng, 2)
        labels = [np.int64(v) for v in rng.integers(0, 10, 2)]
        batch = {b"data": images.reshape(2, -1), b"labels": labels, b"batch_label": "x"}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        written[name] = (images, labels)
    ds = load_dataset("cifar10", {"root": str(folder)})
    np.testing.assert_array_equal((ds.x_test * 255).round(), written["test_batch"][0])
    assert ds.y_test.tolist() == [int(v) for v in written["test_batch"][1]]


def test_cifar_needs_a_root():
    with pytest.raises(ConfigError, match="--root DIR"):
        load_dataset("cifar10")
    with pytest.raises(DataPruningError, match="not found"):
        load_dataset("cifar10", {"root": "/nonexistent/cifar"})


def write_png(path, color, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_image_folder_reads_classes_resizes_and_splits(tmp_path):
    colors = {"cat": (255, 0, 0), "dog": (0, 0, 255)}
    for name, color in colors.items():
        for i in range(5):
            write_png(tmp_path / name / f"{i}.png", color, size=(8 + i, 8))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = load_dataset("imagefolder", {"root": str(tmp_path), "size": 4, "test_fraction": 0.2})
    assert ds.num_classes == 2
    assert ds.input_shape == (3, 4, 4)
    assert ds.num_train + len(ds.y_test) == 10
    assert sorted(ds.y_test.tolist()) == [0, 1]  # one of each class held out
    # Solid red cats, solid blue dogs, whatever the resize did.
    for x, y in zip(ds.x_train, ds.y_train, strict=True):
        expected = np.array(colors[["cat", "dog"][y]], dtype=np.float32) / 255
        np.testing.assert_allclose(x[:, 2, 2], expected, atol=1e-6)
    again = load_dataset("imagefolder", {"root": str(tmp_path), "size": 4, "test_fraction": 0.2})
    assert again.fingerprint == ds.fingerprint


def test_image_folder_keeps_a_given_train_test_split(tmp_path):
    for split, count in (("train", 3), ("val", 2)):
        for name in ("a", "b", "c"):
            for i in range(count):
                write_png(tmp_path / split / name / f"{i}.jpg", (10, 20, 30))
    ds = load_dataset(f"imagefolder:{tmp_path}", {"size": 8})
    assert (ds.num_train, len(ds.y_test), ds.num_classes) == (9, 6, 3)


def test_image_folder_without_classes_or_images_is_refused(tmp_path):
    with pytest.raises(DataPruningError, match="has no class folders"):
        load_dataset("imagefolder", {"root": str(tmp_path)})
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataPruningError, match="empty_class' holds no images"):
        load_dataset("imagefolder", {"root": str(tmp_path)})
    write_png(tmp_path / "empty_class" / "ok.png", (0, 0, 0))
    (tmp_path / "empty_class" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataPruningError, match=r"broken\.png' is not a readable image"):
        load_dataset("imagefolder", {"root": str(tmp_path)})


def test_npz_with_its_own_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 5)), np.arange(30) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x[:6], y_test=y[:6])
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert ds.name == "npz"
    assert (ds.num_train, len(ds.y_test), ds.num_classes) == (30, 6, 3)
    np.testing.assert_array_equal(ds.x_train, x.astype(np.float32))
    assert ds.default_model == "mlp"


def test_npz_without_test_split_holds_out_a_stratified_fraction(tmp_path):
    y = np.repeat(np.arange(4), 10)
    np.savez(tmp_path / "d.npz", x=np.arange(40.0).reshape(40, 1), y=y)
    ds = load_dataset(
        "npz", {"path": str(tmp_path / "d.npz"), "test_fraction": 0.2, "num_classes": 5}
    )
    assert ds.num_classes == 5
    assert np.bincount(ds.y_test).tolist() == [2, 2, 2, 2]
    # Every example lands in exactly one split.
    seen = np.concatenate([ds.x_train[:, 0], ds.x_test[:, 0]])
    assert sorted(seen.tolist()) == list(range(40))


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.zeros((4, 2))}, "has no array 'y'"),
        ({"y": np.zeros(4, dtype=int)}, "has no array 'x'"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(3, dtype=int)}, "one label per example (4)"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(4)}, "integer class labels"),
        ({"x": np.full((4, 2), np.nan), "y": np.zeros(4, dtype=int)}, "NaN or inf"),
        ({"x": np.zeros(4), "y": np.zeros(4, dtype=int)}, "one row per example"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(4, dtype=int), "x_test": np.zeros((2, 2))}, "both"),
        (
            {
                "x": np.zeros((4, 2)),
                "y": np.zeros(4, dtype=int),
                "x_test": np.zeros((2, 3)),
                "y_test": np.zeros(2, dtype=int),
            },
            "must match",
        ),
        ({"x": np.zeros((4, 2)), "y": np.array([0, 1, -1, 0])}, "labels must lie in"),
    ],
)
def test_bad_npz_is_refused_with_a_reason(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataPruningError, match=match.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")


def test_npz_labels_beyond_num_classes_are_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 2)), y=np.array([0, 1, 2, 3, 0, 1]))
    with pytest.raises(DataPruningError, match=r"labels must lie in 0\.\.2"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}", {"num_classes": 3})


def test_npz_file_problems(tmp_path):
    with pytest.raises(DataPruningError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataPruningError, match=r"not a readable \.npz"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")
    with pytest.raises(ConfigError, match="npz:PATH"):
        load_dataset("npz")


def test_dataset_specs():
    assert get_source("npz:/some/where.npz").name == "npz"
    with pytest.raises(UnknownNameError, match="unknown dataset 'nope'"):
        get_source("nope:x")
    with pytest.raises(ConfigError, match="reads no files"):
        get_source("mnist1d:/tmp/x")


def test_fingerprint_tells_file_datasets_apart(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((10, 2)), y=np.arange(10) % 2)
    np.savez(tmp_path / "b.npz", x=np.ones((10, 2)), y=np.arange(10) % 2)
    a = load_dataset(f"npz:{tmp_path / 'a.npz'}")
    b = load_dataset(f"npz:{tmp_path / 'b.npz'}")
    assert a.fingerprint != b.fingerprint
    assert load_dataset(f"npz:{tmp_path / 'a.npz'}").fingerprint == a.fingerprint


def test_image_datasets_default_to_the_cifar_resnet(tmp_path):
    write_png(tmp_path / "a" / "0.png", (1, 2, 3))
    write_png(tmp_path / "a" / "1.png", (1, 2, 3))
    write_png(tmp_path / "b" / "0.png", (4, 5, 6))
    write_png(tmp_path / "b" / "1.png", (4, 5, 6))
    assert load_dataset("imagefolder", {"root": str(tmp_path)}).default_model == "resnet18"
