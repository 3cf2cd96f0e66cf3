"""Dataset sources behind a name registry.

Machines this project runs on may have no internet, so every default dataset is
generated on the machine or ships inside an installed package:

- ``mnist1d``: the MNIST-1D benchmark, generated from the ``mnist1d`` package's
  templates by ``make_dataset`` with a seed (its download path is never used).
- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images).

and the user's own files (``datapruning.data.files``):

- ``cifar10`` / ``cifar100``: the python-pickle batch folder (``--root DIR``);
- ``imagefolder``: a class-per-folder tree of images (``--root DIR``);
- ``npz``: arrays ``x``, ``y`` and optionally ``x_test``, ``y_test``;
- ``beton``: a training set written by ``datapruning convert`` (``beton:PATH``),
  read through a memory map, with the test split ``convert`` wrote beside it.

Image sources stream when asked (``stream: true``) or, by default, when their
training set would take more than 512 MiB as float32 (CIFAR-10 takes 614 MB;
kept as uint8 it takes 154 MB): CIFAR batches stay uint8 in memory, an image
folder is decoded image by image when read (:mod:`datapruning.data.stream`).

A file source may also be named with its location, ``npz:PATH`` or
``cifar10:DIR``: the part after the colon fills its ``path``/``root`` parameter.

A source returns a :class:`~datapruning.data.dataset.Dataset`: train and test
arrays plus a fingerprint that identifies the training set, so scores can be
checked against it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import version as _version
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from datapruning._io import cached_arrays
from datapruning.data import files
from datapruning.data.dataset import Dataset
from datapruning.data.fingerprint import canonical
from datapruning.data.stream import ArrayExamples, ExampleSource, ImageFileExamples
from datapruning.errors import (
    ConfigError,
    DataPruningError,
    UnknownNameError,
    describe_validation_error,
)

# The model image datasets get when the config names none, and its width by device.
# ResNet-18 at its full width 64 (11.2 M parameters) took 6.0-7.2 s a training step of
# 100 32x32 images on one core of the shared 2-core CPU machine: about an hour an epoch
# of a CIFAR-sized set (50,000 images); `score --metric el2n` ran 11 minutes without an
# epoch done. Width 8 (176 k parameters) took 0.24-0.29 s: about 2.5 min an epoch
# (width 16: 5.4 min, width 32: 16.5 min; bench/results/image_width.json, load 5).
# On a GPU the full width, the standard CIFAR ResNet-18.
IMAGE_MODEL = "resnet18"
IMAGE_WIDTH_CPU = 8
IMAGE_WIDTH_ACCELERATOR = 64
# The image model as `datapruning datasets` and the Datasets table state it.
IMAGE_MODEL_TEXT = f"{IMAGE_MODEL} (width {IMAGE_WIDTH_CPU} cpu, {IMAGE_WIDTH_ACCELERATOR} cuda)"
# The augmentation natural-image sources default to (npz arrays may be anything: none).
NATURAL_IMAGE_AUGMENT = "crop_flip"


def default_model_params(model: str, device: str) -> dict[str, Any]:
    """The params of a dataset's default ``model`` when a run on ``device`` names none.

    Only the image model depends on the device: width 8 on a CPU, 64 elsewhere
    (CUDA, MPS). It is a function of the config's ``train.device``, never of the
    hardware found, so a config always means the same model; runs record it in
    their model params (run key, checkpoint, scores' provenance).
    """
    if model != IMAGE_MODEL:
        return {}
    on_cpu = str(device).split(":")[0] == "cpu"
    return {"width": IMAGE_WIDTH_CPU if on_cpu else IMAGE_WIDTH_ACCELERATOR}


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Mnist1dParams(_Params):
    # The package's defaults: 5000 samples split 80/20 gives 4000 train / 1000 test.
    num_samples: int = Field(5000, ge=20, description="train + test examples")
    train_split: float = Field(0.8, gt=0, lt=1)
    seed: int = 42

    @field_validator("num_samples")
    @classmethod
    def _whole_classes(cls, num_samples: int) -> int:
        # make_dataset draws num_samples // 10 per class and silently drops the rest.
        if num_samples % 10:
            raise ValueError(
                f"num_samples {num_samples} must be a multiple of 10 (one tenth per class)"
            )
        return num_samples


class DigitsParams(_Params):
    test_fraction: float = Field(0.25, gt=0, lt=1)
    seed: int = 0


# Image sets larger than this as float32 stream by default (stream: null).
STREAM_ABOVE_BYTES = 512 << 20


class _StreamParam(_Params):
    # True: read examples on demand (uint8 until the batch); False: float32 in memory;
    # None: stream when the float32 training set would exceed STREAM_ABOVE_BYTES.
    stream: bool | None = None

    def streams(self, count: int, example_shape: tuple[int, ...]) -> bool:
        if self.stream is not None:
            return self.stream
        return 4 * count * int(np.prod(example_shape)) > STREAM_ABOVE_BYTES


class CifarParams(_StreamParam):
    root: str = Field(description="folder holding the batch files, or its parent")


class Cifar100Params(CifarParams):
    # The 20 superclasses instead of the 100 fine classes.
    coarse: bool = False


class ImageFolderParams(_StreamParam):
    root: str = Field(description="ROOT/<class>/<image>, or ROOT/train|test/<class>/<image>")
    size: int = Field(32, ge=1, description="images are resized to size x size RGB")
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0


class BetonParams(_Params):
    path: str = Field(description="a .beton written by `datapruning convert`")


class NpzParams(_Params):
    path: str
    # None: the largest label + 1.
    num_classes: int | None = Field(None, ge=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0


def _load_mnist1d(params: Mnist1dParams) -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = params.num_samples
    args.train_split = params.train_split
    args.seed = params.seed
    # make_dataset seeds numpy's and python's global RNGs; restore them so that
    # loading a dataset has no effect on the caller's random streams.
    import random

    def generate() -> dict[str, np.ndarray]:
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            made = make_dataset(args)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        return {key: made[key] for key in ("x", "y", "x_test", "y_test")}

    # Generation is pure Python per example (seconds for a few thousand): every
    # process after the first reads the arrays back from the cache instead.
    key = {"source": "mnist1d", "package": _version("mnist1d"), **params.model_dump()}
    data = cached_arrays("mnist1d", key, generate)
    return Dataset(
        name="mnist1d",
        x_train=data["x"].astype(np.float32),
        y_train=data["y"].astype(np.int64),
        x_test=data["x_test"].astype(np.float32),
        y_test=data["y_test"].astype(np.int64),
        num_classes=10,
        params=params.model_dump(),
        default_model="convnet1d",
    )


def _load_digits(params: DigitsParams) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)  # pixel values are 0..16
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=params.test_fraction, random_state=params.seed, stratify=y
    )
    return Dataset(
        name="digits",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=10,
        params=params.model_dump(),
        default_model="mlp",
    )


def _load_cifar10(params: CifarParams) -> Dataset:
    arrays = _cifar_arrays(params, files.read_cifar(params.root, 10))
    return _file_dataset("cifar10", params, arrays, 10, augment=NATURAL_IMAGE_AUGMENT)


def _load_cifar100(params: Cifar100Params) -> Dataset:
    arrays = _cifar_arrays(params, files.read_cifar(params.root, 100, coarse=params.coarse))
    classes = 20 if params.coarse else 100
    return _file_dataset("cifar100", params, arrays, classes, augment=NATURAL_IMAGE_AUGMENT)


def _cifar_arrays(params: CifarParams, arrays: files.Arrays) -> _Arrays:
    x_train, y_train, x_test, y_test = arrays
    train: np.ndarray | ExampleSource = (
        ArrayExamples(x_train)
        if params.streams(len(x_train), x_train.shape[1:])
        else canonical(x_train)
    )
    return train, y_train, canonical(x_test), y_test


def _load_image_folder(params: ImageFolderParams) -> Dataset:
    train_files, y_train, test_files, y_test, classes = files.list_image_folder(
        params.root, params.test_fraction, params.seed
    )
    size = params.size
    train: np.ndarray | ExampleSource
    if params.streams(len(train_files), (3, size, size)):
        train = ImageFileExamples(train_files, size)
    else:
        train = canonical(files.read_images(train_files, size, "train"))
    x_test = canonical(files.read_images(test_files, size, "test"))
    arrays = (train, y_train, x_test, y_test)
    return _file_dataset("imagefolder", params, arrays, len(classes), augment=NATURAL_IMAGE_AUGMENT)


def _load_beton(params: BetonParams) -> Dataset:
    from datapruning.data.beton import load_beton_dataset

    return load_beton_dataset(params.path, params.model_dump())


def _load_npz(params: NpzParams) -> Dataset:
    arrays = files.read_npz(params.path, params.test_fraction, params.seed)
    x, y, _, y_test = arrays
    num_classes = params.num_classes or files.infer_num_classes(y, y_test)
    is_image = x.ndim == 4 and x.shape[1] in (1, 3)
    return _file_dataset("npz", params, arrays, num_classes, IMAGE_MODEL if is_image else "mlp")


# Train inputs (in memory or streamed), train labels, test inputs, test labels.
_Arrays = tuple[np.ndarray | ExampleSource, np.ndarray, np.ndarray, np.ndarray]


def _file_dataset(
    name: str,
    params: _Params,
    arrays: files.Arrays | _Arrays,
    num_classes: int,
    default_model: str = IMAGE_MODEL,
    augment: str = "none",
) -> Dataset:
    x_train, y_train, x_test, y_test = arrays
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        params=params.model_dump(),
        default_model=default_model,
        default_augment=augment,
    )


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    params_model: type[_Params]
    load: Callable[[Any], Dataset]
    # The parameter that ``name:VALUE`` and ``--root`` fill (file sources only).
    location: str | None = None
    # The model a config naming none trains on it, as `datapruning datasets` states it.
    default_model: str = "mlp"


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source(
            "mnist1d",
            "MNIST-1D, generated on this machine (4000 train / 1000 test, length 40, 10 classes)",
            Mnist1dParams,
            _load_mnist1d,
            default_model="convnet1d",
        ),
        Source(
            "digits",
            "scikit-learn's bundled 8x8 digits (1347 train / 450 test, 64 features, 10 classes)",
            DigitsParams,
            _load_digits,
        ),
        Source(
            "cifar10",
            "CIFAR-10 python-pickle batches from --root DIR (50000 / 10000, 3x32x32, 10 classes)",
            CifarParams,
            _load_cifar10,
            location="root",
            default_model=IMAGE_MODEL_TEXT,
        ),
        Source(
            "cifar100",
            "CIFAR-100 python-pickle files from --root DIR (50000 / 10000, 3x32x32, 100 classes)",
            Cifar100Params,
            _load_cifar100,
            location="root",
            default_model=IMAGE_MODEL_TEXT,
        ),
        Source(
            "imagefolder",
            "a class-per-folder tree of images from --root DIR, resized to 32x32 RGB",
            ImageFolderParams,
            _load_image_folder,
            location="root",
            default_model=IMAGE_MODEL_TEXT,
        ),
        Source(
            "beton",
            "a training set written by `datapruning convert`, streamed from beton:PATH",
            BetonParams,
            _load_beton,
            location="path",
            default_model="as when converted",
        ),
        Source(
            "npz",
            "arrays x, y (and x_test, y_test) from npz:PATH",
            NpzParams,
            _load_npz,
            location="path",
            default_model=f"{IMAGE_MODEL_TEXT} if images, else mlp",
        ),
    )
}


def get_source(name: str) -> Source:
    """The source a dataset name refers to; ``npz:PATH`` names the ``npz`` source."""
    base, _, location = name.partition(":")
    try:
        source = SOURCES[base]
    except KeyError:
        error = UnknownNameError("dataset", base, SOURCES)
        kind = _file_kind(base)
        if kind is not None:  # a file given as a name: say how to name its source
            error.args = (f"{error}; to read the file {name!r}, name its source: {kind}:{name}",)
        raise error from None
    if location and source.location is None:
        raise ConfigError(f"dataset {base!r} reads no files; drop {':' + location!r}")
    return source


def _file_kind(name: str) -> str | None:
    """The file source of a dataset name that looks like a path (``x.npz``, ``x.beton``)."""
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return suffix if suffix in ("npz", "beton") else None


def dataset_params(name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The source's parameters, with the location from ``name:LOCATION`` filled in."""
    source = get_source(name)
    merged = dict(params or {})
    _, _, location = name.partition(":")
    if location:
        merged[str(source.location)] = location
    return merged


def load_dataset(name: str, params: Mapping[str, Any] | None = None) -> Dataset:
    """Load a registered dataset; ``params`` are checked against the source's options.

    ``name`` may carry the location of a file source: ``npz:data.npz``.
    """
    source = get_source(name)
    params = dataset_params(name, params)
    if source.location is not None and source.location not in params:
        flag = "--root DIR" if source.location == "root" else f"{source.name}:PATH"
        raise ConfigError(f"dataset {source.name!r} needs a location: give {flag}")
    try:
        validated = source.params_model(**params)
    except ValidationError as exc:
        raise ConfigError(f"dataset {name!r}: {describe_validation_error(exc)}") from None
    dataset = source.load(validated)
    _check_labels(dataset)
    return dataset


def _check_labels(dataset: Dataset) -> None:
    for split, y in (("train", dataset.y_train), ("test", dataset.y_test)):
        if len(y) and (y.min() < 0 or y.max() >= dataset.num_classes):
            raise DataPruningError(
                f"dataset {dataset.name!r}: {split} labels must lie in 0..{dataset.num_classes - 1}"
            )
