"""Your own model and data in the Python API: what ``train`` and the metrics accept.

The CLI and configs name registered models and datasets. In Python, people
arrive with an ``nn.Module`` and a ``torch.utils.data.Dataset`` of their own, so
:func:`datapruning.train.loop.train` and :func:`datapruning.scoring.score` also take

- a model: a :class:`~datapruning.train.settings.ModelConfig` (the registry), an
  ``nn.Module``, or a factory (a callable with no arguments returning a fresh
  ``nn.Module``). ``train`` trains a module as given, in place; a factory is
  called under the run's seed, as a registered model is built. Scoring trains
  one model per seed: a factory is called once per seed, a module is copied and
  re-initialised per seed (each submodule's ``reset_parameters``, under the seed);
- data: a :class:`~datapruning.data.sources.Dataset`, ``(x, y)`` arrays, or a
  ``torch.utils.data.Dataset`` whose items are ``(x, y)``; :func:`as_dataset`
  turns the last two into a ``Dataset`` (read into memory once: streaming
  sources are not built yet), with your test split or a stratified held-out one.

A user model is recorded (scores' provenance, a run's config hash and summary)
as ``user:<module.Class>`` with a hash of its initial weights, so a resume or a
reused scoring part never mixes two different models.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from datapruning.data.dataset import Dataset
from datapruning.data.fingerprint import canonical, fingerprint_arrays
from datapruning.errors import DataPruningError
from datapruning.train.settings import ModelConfig

# What the Python API accepts as a model.
ModelSpec = ModelConfig | nn.Module | Callable[[], nn.Module]
# What it accepts as data: a Dataset, (x, y) arrays, or a torch Dataset of (x, y) items.
DataSpec = Any


def is_user_model(model: ModelSpec) -> bool:
    return not isinstance(model, ModelConfig)


def build(model: ModelSpec, dataset: Dataset, num_outputs: int | None = None) -> nn.Module:
    """A fresh model from the current torch RNG: a registered one, a factory's, or the module.

    ``num_outputs`` overrides the dataset's number of classes (registered models only:
    a user model's outputs are its own).
    """
    from datapruning.models import build_model

    if isinstance(model, ModelConfig):
        name = model.name or dataset.default_model
        outputs = num_outputs if num_outputs is not None else dataset.num_classes
        return build_model(name, dataset.input_shape, outputs, **model.params)
    if isinstance(model, nn.Module):
        return model
    if not callable(model):
        raise DataPruningError(
            f"model {model!r} is neither a ModelConfig, an nn.Module nor a factory returning one"
        )
    built = model()
    if not isinstance(built, nn.Module):
        raise DataPruningError(
            f"the model factory {_name(model)} returned {type(built).__name__}, not an nn.Module"
        )
    return built


def resolve_model(model: ModelSpec, dataset: Dataset, device: str | torch.device) -> ModelSpec:
    """``model`` with the dataset's default model filled in when a ModelConfig names none.

    The default comes with its params for the run's device
    (:func:`datapruning.data.sources.default_model_params`: ResNet-18 at width 8 on
    a CPU, 64 on CUDA), under the config's own params, so a run's record, key and
    checkpoint say which width it trained. A named model and a user model pass as given.
    """
    from datapruning.data.sources import default_model_params

    if not isinstance(model, ModelConfig) or model.name is not None:
        return model
    name = dataset.default_model
    params = {**default_model_params(name, str(device)), **model.params}
    return model.model_copy(update={"name": name, "params": params})


def per_seed(model: ModelSpec) -> ModelSpec:
    """``model`` as something that builds a new, differently initialised model per seed.

    A module becomes a factory of re-initialised copies (called under each seed);
    configs and factories already are.
    """
    if not isinstance(model, nn.Module):
        return model
    template = model

    def reinitialised() -> nn.Module:
        fresh = copy.deepcopy(template)
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        return fresh

    reinitialised.__qualname__ = _name(template)
    return reinitialised


def record(model: ModelSpec, dataset: Dataset) -> dict[str, Any]:
    """The model in provenance records: registry name and params, or the user's class and a
    hash of its (seed 0) initial weights."""
    if isinstance(model, ModelConfig):
        return {"name": model.name or dataset.default_model, "params": model.params}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        probe = build(model, dataset)
    return {"name": f"user:{_name(model)}", "params": {"weights": weights_hash(probe)}}


def weights_hash(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in module.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _name(model: Any) -> str:
    kind = model if isinstance(model, type) else type(model)
    if not isinstance(model, nn.Module) and callable(model):
        return getattr(model, "__qualname__", repr(model))
    return f"{kind.__module__}.{kind.__qualname__}"


def as_dataset(
    data: DataSpec,
    *,
    test: DataSpec | None = None,
    num_classes: int | None = None,
    name: str = "user",
    test_fraction: float = 0.2,
    seed: int = 0,
    stream: bool | None = None,
) -> Dataset:
    """A :class:`Dataset` from ``data``: a Dataset (returned as is), ``(x, y)`` arrays, or a
    ``torch.utils.data.Dataset`` whose items are ``(x, y)``.

    A torch Dataset is read into memory, or with ``stream`` read item by item when
    the training inputs are used (:class:`~datapruning.data.stream.TorchExamples`:
    uint8 items stay uint8 until the batch); ``stream=None`` streams when it would
    take more than 512 MiB as float32. A streamed dataset needs ``test=`` (the test
    split is held in memory) and is not split.

    uint8 inputs are pixels: the model sees ``p / 255``, in memory or streamed.
    ``test`` is the test split in the same forms; without it ``test_fraction`` of
    each class is held out (seeded) and a ``UserWarning`` says how many: the
    Dataset's fingerprint (and so its scores) then covers only the rest, not the
    ``data`` you passed. ``num_classes`` defaults to the largest label + 1.

    Example::

        >>> import numpy as np
        >>> from datapruning import as_dataset, fingerprint
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.normal(size=(60, 8)).astype("float32"), np.arange(60) % 3
        >>> data = as_dataset((x, y), test=(x[:12], y[:12]))
        >>> data.num_train, data.num_classes, data.fingerprint == fingerprint((x, y))
        (60, 3, True)
    """
    from datapruning.data import files

    # A Dataset, or an object with its attributes (a view over one), passes through; its
    # labels are not touched here (proto must be able to prove it never reads them).
    if isinstance(data, Dataset) or (hasattr(data, "x_train") and hasattr(data, "num_classes")):
        if test is not None:
            raise DataPruningError("a Dataset carries its own test split; drop test=")
        return data
    if _is_item_dataset(data) and not isinstance(data, tuple | list):
        streamed = _streamed(data, test, num_classes, name, stream)
        if streamed is not None:
            return streamed
    x, y = _arrays(data, "data")
    if test is None:
        total = len(y)
        x, y, x_test, y_test = files.split_arrays(x, y, test_fraction, seed)
        warnings.warn(
            f"as_dataset held out {len(y_test)} of {total} examples ({test_fraction:.0%} of "
            f"each class, seed {seed}) as the test split; the Dataset, its fingerprint and its "
            f"scores cover the other {len(y)}: give test= to keep all {total} for training",
            UserWarning,
            stacklevel=2,
        )
    else:
        x_test, y_test = _arrays(test, "test")
        if x_test.shape[1:] != x.shape[1:]:
            raise DataPruningError(
                f"test inputs have shape {x_test.shape[1:]} per example; the training inputs "
                f"{x.shape[1:]}: give both splits the same shape"
            )
    classes = num_classes or files.infer_num_classes(y, y_test)
    _check_classes(classes, y, y_test)
    if not np.all(np.isfinite(x)):
        raise DataPruningError("training inputs contain NaN or inf; clean them first")
    is_image = x.ndim == 4 and x.shape[1] in (1, 3)
    return Dataset(
        name=name,
        x_train=x,
        y_train=y,
        x_test=x_test,
        y_test=y_test,
        num_classes=classes,
        params={"source": "python", "fingerprint": fingerprint_arrays(x, y)},
        default_model="resnet18" if is_image else "mlp",
    )


def _streamed(
    data: Any, test: DataSpec | None, num_classes: int | None, name: str, stream: bool | None
) -> Dataset | None:
    """``data`` as a streaming Dataset, or None when it is to be read into memory."""
    from datapruning.data import files
    from datapruning.data.sources import STREAM_ABOVE_BYTES
    from datapruning.data.stream import TorchExamples

    if stream is False or len(data) == 0:
        return None
    first = data[0]
    if not (isinstance(first, tuple | list) and len(first) == 2):
        raise DataPruningError("data: dataset items must be (x, y) pairs")
    source = TorchExamples(data, first[0])
    if (
        stream is None
        and 4 * len(source) * int(np.prod(source.example_shape)) <= STREAM_ABOVE_BYTES
    ):
        return None
    if test is None:
        raise DataPruningError(
            "a streamed dataset is not split: give test= (its test split, read into memory), "
            "or stream=False to read it into memory and split it"
        )
    y = _item_labels(data)  # its targets, else one pass over the items
    x_test, y_test = _arrays(test, "test")
    if x_test.shape[1:] != source.example_shape:
        raise DataPruningError(
            f"test inputs have shape {x_test.shape[1:]} per example; the training inputs "
            f"{source.example_shape}: give both splits the same shape"
        )
    classes = num_classes or files.infer_num_classes(y, y_test)
    _check_classes(classes, y, y_test)
    is_image = len(source.example_shape) == 3 and source.example_shape[0] in (1, 3)
    return Dataset(
        name=name,
        x_train=source,
        y_train=y,
        x_test=x_test,
        y_test=y_test,
        num_classes=classes,
        params={"source": "python", "fingerprint": source.fingerprint(y), "streaming": True},
        default_model="resnet18" if is_image else "mlp",
    )


def _check_classes(classes: int, y: np.ndarray, y_test: np.ndarray) -> None:
    for split, labels in (("train", y), ("test", y_test)):
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            raise DataPruningError(
                f"{split} labels must lie in 0..{classes - 1}; found {int(labels.min())}.."
                f"{int(labels.max())} (set num_classes, or relabel)"
            )


def _arrays(data: DataSpec, what: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 inputs (uint8 pixels as p / 255) and int64 labels from (x, y) arrays or a
    torch Dataset of (x, y)."""
    if isinstance(data, tuple | list) and len(data) == 2 and not _is_item_dataset(data):
        x, y = (
            np.asarray(part.detach().cpu() if isinstance(part, torch.Tensor) else part)
            for part in data
        )
    elif _is_item_dataset(data):
        try:
            items = [data[i] for i in range(len(data))]
        except Exception as exc:
            raise DataPruningError(
                f"{what}: reading the dataset's items failed ({exc.__class__.__name__}: {exc})"
            ) from None
        if not items:
            raise DataPruningError(f"{what}: the dataset is empty")
        if not all(isinstance(item, tuple | list) and len(item) == 2 for item in items[:1]):
            raise DataPruningError(f"{what}: dataset items must be (x, y) pairs")
        x = np.stack([np.asarray(_numpy(item[0])) for item in items])
        y = np.asarray([int(_numpy(item[1])) for item in items])
    else:
        raise DataPruningError(
            f"{what} must be a datapruning Dataset, (x, y) arrays, or a torch Dataset of (x, y) "
            f"items; got {type(data).__name__}"
        )
    if len(x) != len(y) or y.ndim != 1:
        raise DataPruningError(
            f"{what}: x has {len(x)} rows and y shape {y.shape}; give one label per example"
        )
    if not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
        raise DataPruningError(f"{what}: labels must be integer class ids, got {y.dtype}")
    # float32 as a batch holds them: uint8 pixels become p / 255, as every source and the
    # streamed path make them (and as the fingerprint reads them).
    return canonical(x), y.astype(np.int64)


def _is_item_dataset(data: Any) -> bool:
    return isinstance(data, torch.utils.data.Dataset) or (
        hasattr(data, "__getitem__")
        and hasattr(data, "__len__")
        and not isinstance(data, tuple | list | str | bytes | dict | np.ndarray)
    )


def _numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def fingerprint(data: DataSpec) -> str:
    """The fingerprint of ``data`` as a training set, as scores files and runs record it.

    ``data`` is a :class:`Dataset` (its own fingerprint), ``(x, y)`` arrays, or a
    ``torch.utils.data.Dataset`` of ``(x, y)`` items: all of it, as
    ``as_dataset(data, test=...)`` would train on it (``as_dataset(data)`` without
    ``test=`` holds out a share, and fingerprints only the rest). A scores file
    belongs to ``data`` when ``scores.fingerprint == fingerprint(data)``; a torch
    Dataset is read item by item, not held in memory.

    Example::

        >>> import numpy as np
        >>> from datapruning import fingerprint
        >>> x, y = np.zeros((4, 2), dtype="float32"), np.array([0, 1, 0, 1])
        >>> fingerprint((x, y)).startswith("v2:")
        True
        >>> fingerprint((x, y)) == fingerprint((x.astype("float64"), y))
        True
    """
    if isinstance(data, Dataset) or (hasattr(data, "x_train") and hasattr(data, "fingerprint")):
        return str(data.fingerprint)
    if _is_item_dataset(data) and not isinstance(data, tuple | list):
        from datapruning.data.stream import TorchExamples

        if len(data) == 0:
            raise DataPruningError("data: the dataset is empty")
        first = data[0]
        if not (isinstance(first, tuple | list) and len(first) == 2):
            raise DataPruningError("data: dataset items must be (x, y) pairs")
        return TorchExamples(data, first[0]).fingerprint(_item_labels(data))
    x, y = _arrays(data, "data")
    return fingerprint_arrays(x, y)


def _item_labels(data: Any) -> np.ndarray:
    """The labels of a torch Dataset of ``(x, y)`` items: its ``targets``, else each item's."""
    targets = getattr(data, "targets", None)
    if targets is not None and len(targets) == len(data):
        return np.asarray(_numpy(torch.as_tensor(targets)), dtype=np.int64)
    return np.asarray([int(_numpy(data[i][1])) for i in range(len(data))], dtype=np.int64)


class WithIndex(torch.utils.data.Dataset):
    """A torch Dataset of ``(x, y)`` items as one of ``(x, y, index)`` items; see :func:`with_index`."""

    def __init__(self, dataset: Any) -> None:
        if not _is_item_dataset(dataset):
            raise DataPruningError(
                f"with_index takes a torch Dataset (with __getitem__ and __len__), not "
                f"{type(dataset).__name__}"
            )
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        item = self.dataset[index]
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise DataPruningError(
                f"with_index: item {index} of {type(self.dataset).__name__} is not an (x, y) "
                "pair; wrap a dataset whose items are (x, y)"
            )
        return item[0], item[1], int(index)


def with_index(dataset: Any) -> WithIndex:
    """``dataset`` (a torch Dataset of ``(x, y)``) yielding ``(x, y, index)``.

    The samplers' dynamic methods need each example's position in the dataset:
    :meth:`~datapruning.data.infobatch.InfoBatchSampler.update` takes the batch's
    indices with its per-example losses. A ``DataLoader`` over ``with_index(ds)``
    collates them into a third tensor.

    Example::

        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from datapruning import with_index
        >>> ds = TensorDataset(torch.zeros(5, 2), torch.tensor([0, 1, 0, 1, 0]))
        >>> x, y, index = next(iter(DataLoader(with_index(ds), batch_size=5)))
        >>> index.tolist()
        [0, 1, 2, 3, 4]
    """
    return WithIndex(dataset)
