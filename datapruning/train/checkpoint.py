"""Model checkpoints that carry what is needed to rebuild and check the model.

``format_version`` (``CHECKPOINT_FORMAT``) says which layout a checkpoint has:
1 is the first recorded one (model name and params, input shape, classes,
dataset fingerprint, state dict, epochs, steps). A checkpoint of another
version, or one written before versions were recorded, is refused with a
message naming the file and the version instead of failing on a missing key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from datapruning._io import atomic_path, check_format_version
from datapruning.errors import DataPruningError, FingerprintMismatchError

CHECKPOINT_NAME = "checkpoint.pt"
# What load_model needs to rebuild a checkpoint's model.
_MODEL_KEYS = {"model", "model_params", "input_shape", "num_classes", "state_dict"}
# The layout of checkpoint.pt; bump it when a key changes meaning or goes away.
CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` atomically, stamped with this layout's version unless it names one."""
    with atomic_path(path) as tmp:
        torch.save({"format_version": CHECKPOINT_FORMAT, **state}, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise DataPruningError(f"checkpoint {str(path)!r} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise DataPruningError(
            f"checkpoint {str(path)!r} cannot be read ({exc.__class__.__name__})"
        ) from None
    if not isinstance(state, dict) or "state_dict" not in state or "model" not in state:
        raise DataPruningError(f"{str(path)!r} is not a datapruning checkpoint")
    check_format_version(
        path, state.get("format_version"), CHECKPOINT_FORMAT, "train it again with this datapruning"
    )
    return state


def load_model(
    path: str | os.PathLike[str], *, fingerprint: str | None = None, num_classes: int | None = None
) -> nn.Module:
    """Rebuild the checkpoint's model; refuse one trained on another dataset."""
    from datapruning.models import build_model

    state = load_checkpoint(path)
    missing = sorted(_MODEL_KEYS - state.keys())
    if missing:
        raise DataPruningError(
            f"checkpoint {str(path)!r} lacks {', '.join(missing)}; it was not written by "
            "datapruning's training loop: retrain the teacher"
        )
    if fingerprint is not None:
        from datapruning.data.fingerprint import check_current

        check_current(
            state.get("dataset_fingerprint"),
            f"checkpoint {str(path)!r}",
            "train it again with `datapruning train`",
        )
    if fingerprint is not None and state.get("dataset_fingerprint") != fingerprint:
        raise FingerprintMismatchError(
            f"checkpoint {str(path)!r} was trained on dataset {state.get('dataset_fingerprint')}, "
            f"not on this one ({fingerprint}); train a teacher on this dataset"
        )
    if num_classes is not None and state["num_classes"] != num_classes:
        raise DataPruningError(
            f"checkpoint {str(path)!r} predicts {state['num_classes']} classes; "
            f"this dataset has {num_classes}"
        )
    model = build_model(
        state["model"], tuple(state["input_shape"]), state["num_classes"], **state["model_params"]
    )
    try:
        model.load_state_dict(state["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as exc:  # missing keys, other shapes
        reason = str(exc).strip().splitlines()[-1].strip()
        raise DataPruningError(
            f"checkpoint {str(path)!r}: its weights do not fit model {state['model']!r} "
            f"({reason}); retrain the teacher"
        ) from None
    return model.eval()
