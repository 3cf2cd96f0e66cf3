"""The base of every config section (config.py's and the metrics' own params models).

It imports only pydantic, so validating a config never imports torch.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, TypeVar, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class Section(BaseModel):
    # inf and nan are no learning rate, epoch count or fraction: refused in every float field.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: Any, info: ValidationInfo) -> Any:
        # YAML reads true/yes/on as a bool, which pydantic would take as the number 1.
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and not _admits_bool(field.annotation):
            raise ValueError(f"{value} is true/false; give a {_kind(field.annotation)}")
        return value


SectionT = TypeVar("SectionT", bound=Section)


def derive(section: SectionT, **changes: Any) -> SectionT:
    """``section`` with ``changes``, validated as a user's config is.

    Every config the code derives from a user's goes through here, never through
    ``model_copy(update=...)``, which skips validation: a derived config that breaks a
    rule (a sweep's sparsity target under N:M, say) is refused, not silently run.
    """
    return type(section).model_validate({**section.model_dump(mode="python"), **changes})


def _admits_bool(annotation: Any) -> bool:
    return annotation is bool or annotation is Any or bool in get_args(annotation)


def _kind(annotation: Any) -> str:
    args = set(get_args(annotation)) or {annotation}
    return "number" if args & {int, float} else "value of the right type"


def _finite(value: Any) -> Any:
    # Free-form params (a dataset's, a model's) reach JSON records, where inf and nan
    # turn into null: refused here as in every typed float field.
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    for child in (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    ):
        _finite(child)
    return value


FiniteParams = Annotated[dict[str, Any], AfterValidator(_finite)]


# Seeds reach numpy (which takes no negative seed) and torch.manual_seed (nothing from 2**64).
Seed = Annotated[int, Field(ge=0, lt=2**64)]


def check_fraction(fraction: float) -> float:
    """A kept fraction, in (0, 1]."""
    if not 0 < fraction <= 1:
        raise ValueError(f"kept fraction {fraction} must lie in (0, 1]")
    return fraction


def check_name(kind: str, name: str, registry: Any) -> str:
    """``name`` if ``registry`` has it, else one line listing what it has."""
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(registry))}")
    return name
