"""Per-batch data augmentation for the training loop: batched tensor ops on the device.

Image runs without augmentation overfit early: the standard CIFAR recipe (He
et al. 2016; airbench) is a padded random crop plus a horizontal flip, and
people expect it to be on for natural images. 1-D signals get a random
circular shift and Gaussian noise (the MNIST-1D paper's views are shifts of a
template plus noise). Each recipe transforms a whole batch at once, on the
batch's device, drawing from the run's own :class:`torch.Generator` (seeded
from the run's seed, independent of the global RNG that initialises the
model), so a seed fixes every view; the generator's state is part of the
resume state, so a resumed run sees the same views as an uninterrupted one.

``train.augment`` names a recipe, ``none``, or ``auto``: the dataset's own
default (:attr:`datapruning.data.sources.Dataset.default_augment`: crop+flip
for the natural-image sources cifar10, cifar100 and imagefolder, none for the
rest). Measured on digits upscaled to 32x32 RGB: ``bench/augment.py`` ->
``bench/results/augment.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from datapruning.errors import DataPruningError

# Distinguishes the augmentation stream from every other stream seeded by the run's seed.
_STREAM = 0xA06


def crop_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """A random crop of each image padded by 4 pixels (H/8) on every side, then a 50% flip.

    Reflect padding, as airbench pads CIFAR-10 (zero padding adds black borders
    the test images never have). One gather per batch: no per-image Python.
    """
    batch, _, height, width = x.shape
    pad = max(1, height // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    offsets = torch.randint(0, 2 * pad + 1, (2, batch), generator=generator, device=x.device)
    rows = torch.arange(height, device=x.device)[None, :] + offsets[0][:, None]
    cols = torch.arange(width, device=x.device)[None, :] + offsets[1][:, None]
    flip = torch.rand(batch, generator=generator, device=x.device) < 0.5
    # A flipped crop reads its columns right to left.
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    images = torch.arange(batch, device=x.device)[:, None, None]
    crops = padded.permute(0, 2, 3, 1)[images, rows[:, :, None], cols[:, None, :]]
    return crops.permute(0, 3, 1, 2).contiguous()


def shift_noise(x: Tensor, generator: torch.Generator) -> Tensor:
    """A circular shift of each signal by up to L/10 steps, plus noise at 5% of its std."""
    batch, length = x.shape[0], x.shape[-1]
    max_shift = max(1, length // 10)
    shifts = torch.randint(
        -max_shift, max_shift + 1, (batch,), generator=generator, device=x.device
    )
    positions = (torch.arange(length, device=x.device)[None, :] - shifts[:, None]) % length
    positions = positions.view(batch, *([1] * (x.dim() - 2)), length).expand_as(x)
    shifted = torch.gather(x, -1, positions)
    scale = 0.05 * x.reshape(batch, -1).std(dim=1)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return shifted + noise * scale.view(-1, *([1] * (x.dim() - 1)))


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    apply: Callable[[Tensor, torch.Generator], Tensor]
    # Input dims (batch included) the recipe applies to.
    dims: tuple[int, ...]


AUGMENTS: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe("crop_flip", "padded random crop + horizontal flip (images)", crop_flip, (4,)),
        Recipe(
            "shift_noise",
            "random circular shift + Gaussian noise (1-D signals)",
            shift_noise,
            (2, 3),
        ),
    )
}
# What train.augment accepts besides the recipes' names.
AUGMENT_CHOICES = ("auto", "none")


def resolve_recipe(name: str, default: str, input_shape: tuple[int, ...]) -> Recipe | None:
    """The recipe a run uses (``auto``: the dataset's ``default``); None for no augmentation."""
    chosen = default if name == "auto" else name
    if chosen == "none":
        return None
    try:
        recipe = AUGMENTS[chosen]
    except KeyError:
        choices = ", ".join([*AUGMENT_CHOICES, *sorted(AUGMENTS)])
        raise DataPruningError(
            f"unknown train.augment {chosen!r}; choose one of: {choices}"
        ) from None
    if len(input_shape) + 1 not in recipe.dims:
        raise DataPruningError(
            f"train.augment {chosen} does not fit inputs of shape {tuple(input_shape)} "
            f"({recipe.description}); choose another recipe or none"
        )
    return recipe


class Augmenter:
    """A recipe with the run's generator: call it on each batch, in step order."""

    def __init__(self, recipe: Recipe, seed: int, device: torch.device) -> None:
        self.recipe = recipe
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(
            int(np.random.SeedSequence([seed, _STREAM]).generate_state(1)[0])
        )

    def __call__(self, x: Tensor) -> Tensor:
        return self.recipe.apply(x, self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe.name, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
