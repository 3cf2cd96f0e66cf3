"""Datasets read from the user's files: CIFAR pickle batches, image folders, npz arrays.

Each reader returns plain arrays; ``datapruning.data.sources`` wraps them in a
``Dataset``. Images are read as uint8 arrays of shape ``(N, 3, H, W)``, the
layout torch models take; the source keeps them as uint8 (streaming) or makes
them float32 in [0, 1] (``p / 255``). An image folder can also be listed without
decoding (:func:`list_image_folder`), its images decoded one by one when read
(:func:`decode_image`). Every malformed input raises ``DataPruningError``
naming the file and what to change.
"""

from __future__ import annotations

import os
import pickle
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from datapruning.errors import DataPruningError

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp"}
)

# What a CIFAR batch pickle may name: numpy's array (and scalar) reconstructors under their
# numpy 1 and 2 module names, and _codecs.encode, which protocol-2 pickles written by
# Python 3 use for bytes. Dicts, lists, str, bytes and int need no global. Anything else
# (os.system, builtins.eval, subprocess.Popen, ...) is refused before it is called.
_CIFAR_PICKLE_GLOBALS = frozenset(
    {
        *(
            (module, name)
            for module in ("numpy.core.multiarray", "numpy._core.multiarray")
            for name in ("_reconstruct", "scalar")
        ),
        *((module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _ForbiddenGlobalError(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        self.qualname = f"{module}.{name}"
        super().__init__(self.qualname)


class _CifarUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that builds only numpy arrays, dicts, lists, bytes, str and numbers.

    The CIFAR folder is user-given, and a plain ``pickle.load`` runs whatever a
    crafted file names (``os.system`` through ``__reduce__``); this refuses any
    global outside ``_CIFAR_PICKLE_GLOBALS`` instead of importing it.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_PICKLE_GLOBALS:
            raise _ForbiddenGlobalError(module, name)
        return super().find_class(module, name)


# The standard python-pickle releases of CIFAR: folder name, train batches, test batch, label key.
CIFAR_LAYOUTS = {
    10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels"),
    100: ("cifar-100-python", ["train"], "test", b"fine_labels"),
}


def read_cifar(root: str | os.PathLike[str], num_classes: int, coarse: bool = False) -> Arrays:
    """Read a CIFAR-10/100 python-pickle folder (the extracted ``*-python.tar.gz``).

    ``root`` is the folder holding the batch files, or its parent. Images are uint8.
    """
    folder, train_names, test_name, label_key = CIFAR_LAYOUTS[num_classes]
    if coarse:
        label_key = b"coarse_labels"
    path = Path(root).expanduser()
    if not (path / test_name).exists() and (path / folder / test_name).exists():
        path = path / folder
    if not path.is_dir():
        raise DataPruningError(f"CIFAR folder {str(path)!r} not found; pass --root DIR")
    x_parts, y_parts = zip(
        *(_read_cifar_batch(path / name, label_key) for name in train_names), strict=True
    )
    x_test, y_test = _read_cifar_batch(path / test_name, label_key)
    return np.concatenate(x_parts), np.concatenate(y_parts), x_test, y_test


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataPruningError(
            f"CIFAR batch file {str(path)!r} is missing; extract the whole archive into "
            f"{str(path.parent)!r}"
        )
    try:
        with path.open("rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except _ForbiddenGlobalError as exc:
        raise DataPruningError(
            f"CIFAR batch file {str(path)!r} names {exc.qualname!r}, which a CIFAR batch never "
            "holds; refusing to unpickle it (only numpy arrays, dicts, lists, bytes, str and "
            "int are read): use the original archive's files"
        ) from None
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError):
        raise DataPruningError(
            f"CIFAR batch file {str(path)!r} is truncated or not a CIFAR pickle batch; "
            "extract it again from the original archive"
        ) from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataPruningError(
            f"CIFAR batch file {str(path)!r} holds data of shape {data.shape} and "
            f"{len(labels)} labels; expected (N, 3072) and N labels"
        )
    # Rows are 1024 red, then green, then blue values of a 32x32 image, row-major.
    return data.reshape(-1, 3, 32, 32), labels


def read_image_folder(
    root: str | os.PathLike[str], size: int, test_fraction: float, seed: int
) -> tuple[Arrays, list[str]]:
    """Read a class-per-folder tree of images, resized to ``size`` x ``size`` RGB, as uint8.

    The layout and split are :func:`list_image_folder`'s.
    """
    train_files, y_train, test_files, y_test, classes = list_image_folder(root, test_fraction, seed)
    return (
        read_images(train_files, size, "train"),
        y_train,
        read_images(test_files, size, "test"),
        y_test,
    ), classes


def list_image_folder(
    root: str | os.PathLike[str], test_fraction: float, seed: int
) -> tuple[list[Path], np.ndarray, list[Path], np.ndarray, list[str]]:
    """The image files of a class-per-folder tree and their labels, train and test.

    ``root/<class>/<image>`` is split into train and test with a stratified,
    seeded draw of ``test_fraction``; a tree with ``root/train/<class>/...`` and
    ``root/test/<class>/...`` (or ``val``) keeps that split instead. Classes are
    the sorted folder names, as in torchvision's ImageFolder.
    """
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataPruningError(f"image folder {str(path)!r} not found; pass --root DIR")
    test_dir = next((path / n for n in ("test", "val") if (path / n).is_dir()), None)
    if (path / "train").is_dir() and test_dir is not None:
        classes = _classes(path / "train")
        train_files, y_train = _list_images(path / "train", classes)
        test_files, y_test = _list_images(test_dir, classes)
        return train_files, y_train, test_files, y_test, classes
    classes = _classes(path)
    found, y = _list_images(path, classes)
    train, y_train, test, y_test = split_arrays(np.arange(len(found)), y, test_fraction, seed)
    return [found[i] for i in train], y_train, [found[i] for i in test], y_test, classes


def _classes(path: Path) -> list[str]:
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataPruningError(
            f"image folder {str(path)!r} has no class folders; "
            "lay it out as ROOT/<class name>/<image file>"
        )
    return classes


def _list_images(path: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        folder = path / name
        found = (
            sorted(
                p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if folder.is_dir()
            else []
        )
        if not found:
            raise DataPruningError(
                f"class folder {str(folder)!r} holds no images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}); add some or remove the folder"
            )
        files += [(p, label) for p in found]
    return [p for p, _ in files], np.array([label for _, label in files], dtype=np.int64)


def decode_image(file: Path, size: int) -> np.ndarray:
    """One image file as (3, size, size) uint8 RGB (resized bilinearly when it differs)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            rgb = image.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError):
        raise DataPruningError(
            f"{str(file)!r} is not a readable image; remove or replace it"
        ) from None
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def read_images(files: list[Path], size: int, what: str = "images") -> np.ndarray:
    """Every image of ``files`` decoded, as (N, 3, size, size) uint8."""
    images = np.empty((len(files), 3, size, size), dtype=np.uint8)
    for i, file in enumerate(tqdm(files, desc=f"reading {what}", unit="img", disable=None)):
        images[i] = decode_image(file, size)
    return images


def read_npz(path: str | os.PathLike[str], test_fraction: float, seed: int) -> Arrays:
    """Read arrays ``x``, ``y`` and optionally ``x_test``, ``y_test`` from an .npz file.

    Without a test split, ``test_fraction`` of the examples are held out
    (stratified, seeded). ``x`` is used as given, cast to float32.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataPruningError(f"npz file {str(file)!r} not found")
    try:
        loaded = np.load(file, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # a .npy: one array, not named ones
            raise ValueError("it holds one unnamed array (a .npy)")
        with loaded as npz:
            arrays: dict[str, Any] = {key: npz[key] for key in npz.files}
    # EOFError: an empty file; BadZipFile, zlib.error: a truncated or damaged archive.
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise DataPruningError(
            f"{str(file)!r} is not a readable .npz file ({reason}); save it with "
            "np.savez(path, x=..., y=...)"
        ) from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataPruningError(
                f"npz file {str(file)!r} has no array {key!r} (it has: "
                f"{', '.join(sorted(arrays)) or 'none'}); save it with np.savez(path, x=..., y=...)"
            )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataPruningError(
            f"npz file {str(file)!r} must hold both x_test and y_test, or neither"
        )
    x = _features(arrays["x"], "x", file)
    y = _labels(arrays["y"], len(x), "y", file)
    if "x_test" not in arrays:
        return split_arrays(x, y, test_fraction, seed)
    x_test = _features(arrays["x_test"], "x_test", file)
    if x_test.shape[1:] != x.shape[1:]:
        raise DataPruningError(
            f"npz file {str(file)!r}: x_test examples have shape {x_test.shape[1:]}, "
            f"x examples {x.shape[1:]}; they must match"
        )
    return x, y, x_test, _labels(arrays["y_test"], len(x_test), "y_test", file)


def _features(array: np.ndarray, key: str, file: Path) -> np.ndarray:
    if array.ndim < 2 or len(array) == 0:
        raise DataPruningError(
            f"npz file {str(file)!r}: {key!r} must have one row per example, got shape {array.shape}"
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataPruningError(
            f"npz file {str(file)!r}: {key!r} must be numeric, got {array.dtype}"
        )
    x = array.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataPruningError(
            f"npz file {str(file)!r}: {key!r} contains NaN or inf; clean it first"
        )
    return x


def _labels(array: np.ndarray, count: int, key: str, file: Path) -> np.ndarray:
    if array.ndim != 1 or len(array) != count:
        raise DataPruningError(
            f"npz file {str(file)!r}: {key!r} must hold one label per example ({count}), "
            f"got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise DataPruningError(
            f"npz file {str(file)!r}: {key!r} must hold integer class labels, got {array.dtype}"
        )
    return array.astype(np.int64)


def split_arrays(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> Arrays:
    """Hold out ``test_fraction`` of each class (at least one example when it has two)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        count = min(len(members) - 1, max(1, round(test_fraction * len(members))))
        test[rng.choice(members, size=max(count, 0), replace=False)] = True
    if test.all() or not test.any():
        raise DataPruningError(
            f"cannot hold out a test split from {len(y)} examples; add examples or give x_test/y_test"
        )
    return x[~test], y[~test], x[test], y[test]


def infer_num_classes(*labels: Iterable[int] | np.ndarray) -> int:
    return int(max(int(np.max(y)) for y in labels if len(np.asarray(y)))) + 1
