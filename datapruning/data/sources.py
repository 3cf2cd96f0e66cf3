"""Dataset sources behind a name registry.

Machines this project runs on may have no internet, so every default dataset is
generated on the machine or ships inside an installed package:

- ``mnist1d``: the MNIST-1D benchmark, generated from the ``mnist1d`` package's
  templates by ``make_dataset`` with a seed (its download path is never used).
- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images).

A source returns a :class:`Dataset`: train and test arrays plus a fingerprint
that identifies the training set, so scores can be checked against it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from datapruning.errors import (
    ConfigError,
    DataPruningError,
    UnknownNameError,
    describe_validation_error,
)


@dataclass(frozen=True)
class Dataset:
    """Train/test arrays of one dataset, in memory.

    ``x_*`` are float32 arrays of shape ``(N, *input_shape)``; ``y_*`` are int64
    class labels in ``0..num_classes-1``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    params: Mapping[str, Any] = field(default_factory=dict)
    default_model: str = "mlp"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the training set's shape, values and labels (16 hex digits)."""
        return fingerprint_arrays(self.x_train, self.y_train)

    def describe(self) -> str:
        return (
            f"{self.name}: {self.num_train} train / {len(self.y_test)} test, "
            f"input {self.input_shape}, {self.num_classes} classes"
        )


def fingerprint_arrays(x: np.ndarray, y: np.ndarray) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for array in (np.ascontiguousarray(x), np.ascontiguousarray(y)):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


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


def _load_mnist1d(params: Mnist1dParams) -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = params.num_samples
    args.train_split = params.train_split
    args.seed = params.seed
    # make_dataset seeds numpy's and python's global RNGs; restore them so that
    # loading a dataset has no effect on the caller's random streams.
    import random

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
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


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    params_model: type[_Params]
    load: Callable[[Any], Dataset]


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source(
            "mnist1d",
            "MNIST-1D, generated on this machine (4000 train / 1000 test, length 40, 10 classes)",
            Mnist1dParams,
            _load_mnist1d,
        ),
        Source(
            "digits",
            "scikit-learn's bundled 8x8 digits (1347 train / 450 test, 64 features, 10 classes)",
            DigitsParams,
            _load_digits,
        ),
    )
}


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise UnknownNameError("dataset", name, SOURCES) from None


def load_dataset(name: str, params: Mapping[str, Any] | None = None) -> Dataset:
    """Load a registered dataset; ``params`` are checked against the source's options."""
    source = get_source(name)
    try:
        validated = source.params_model(**dict(params or {}))
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
