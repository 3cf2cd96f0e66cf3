"""Model architectures behind a name registry.

``build_model(name, input_shape, num_classes, **params)`` constructs any
registered architecture; configs name a model and pass its params.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from datapruning.errors import ConfigError, UnknownNameError
from datapruning.models.convnet1d import ConvNet1D
from datapruning.models.mlp import MLP
from datapruning.models.resnet import ResNet18
from datapruning.models.vit import ViT

ModelFactory = Callable[..., nn.Module]

MODELS: dict[str, ModelFactory] = {
    "convnet1d": ConvNet1D,
    "mlp": MLP,
    "resnet18": ResNet18,
    "vit": ViT,
}


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, **params: Any
) -> nn.Module:
    """Construct the registered model ``name`` for inputs of ``input_shape``."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise UnknownNameError("model", name, MODELS) from None
    accepted = set(inspect.signature(factory).parameters) - {"input_shape", "num_classes"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ConfigError(
            f"model {name!r} has no option {unknown[0]!r}; its options are: "
            f"{', '.join(sorted(accepted)) or '(none)'}"
        )
    try:
        return factory(input_shape=tuple(input_shape), num_classes=num_classes, **params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None
    except RuntimeError as exc:  # a layer that cannot take the input (a probe forward inside)
        reason = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"model {name!r} cannot take inputs of shape {tuple(input_shape)} ({reason}); "
            "choose another model or reshape the data"
        ) from None


__all__ = ["MLP", "MODELS", "ConvNet1D", "ResNet18", "ViT", "build_model"]
