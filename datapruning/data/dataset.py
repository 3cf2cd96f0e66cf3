"""The :class:`Dataset` every source returns and every loader, metric and run reads.

In a module of its own, below the sources and the beton format: a source builds
one and the beton reader returns one, so neither imports the other for it (the
sources registry reads betons, and before this module the beton code imported the
registry for the class: a circle).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from datapruning.data.fingerprint import fingerprint_arrays
from datapruning.data.stream import ExampleSource


@dataclass(frozen=True)
class Dataset:
    """Train/test data of one dataset.

    ``x_train`` is a float32 array of shape ``(N, *input_shape)`` in memory, or an
    :class:`~datapruning.data.stream.ExampleSource` that reads examples on demand
    (a beton, an image folder, uint8 CIFAR batches, a user torch Dataset); read it
    through :func:`~datapruning.data.stream.train_rows` or :meth:`read_train`.
    ``x_test`` is always a float32 array in memory (the test split is small).
    ``y_*`` are int64 class labels in ``0..num_classes-1``, in memory.
    """

    name: str
    x_train: np.ndarray | ExampleSource
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    params: Mapping[str, Any] = field(default_factory=dict)
    default_model: str = "mlp"
    # The augmentation ``train.augment: auto`` picks (datapruning.train.augment): on for
    # natural images, as people expect for them; off for generated signals and features.
    default_augment: str = "none"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    @property
    def streaming(self) -> bool:
        """Whether the training inputs are read on demand rather than held as float32."""
        return isinstance(self.x_train, ExampleSource)

    def read_train(self, indices: np.ndarray) -> np.ndarray:
        """Training inputs ``indices`` as float32, from memory or from the source."""
        if isinstance(self.x_train, ExampleSource):
            return self.x_train.read_float(indices)
        return self.x_train[indices]

    @cached_property
    def fingerprint(self) -> str:
        """``v2:`` + a hash of the training inputs' float32 values, shape and labels
        (:mod:`datapruning.data.fingerprint`): the same for every way of storing them."""
        if isinstance(self.x_train, ExampleSource):
            return self.x_train.fingerprint(self.y_train)
        return fingerprint_arrays(self.x_train, self.y_train)

    def describe(self) -> str:
        return (
            f"{self.name}: {self.num_train} train / {len(self.y_test)} test, "
            f"input {self.input_shape}, {self.num_classes} classes"
        )


def dataset_record(dataset: Any) -> dict[str, Any]:
    """What a scores file's provenance says about the data it scored (any object with a
    Dataset's attributes)."""
    return {
        "name": dataset.name,
        "params": dict(dataset.params),
        "fingerprint": dataset.fingerprint,
        "num_train": dataset.num_train,
        "num_classes": dataset.num_classes,
    }
