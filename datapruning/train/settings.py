"""Settings of the training package's algorithms, beside their code (torch-free).

``train.sparsity`` is one of three algorithms, each with only its own fields
(a pydantic discriminated union chosen by ``scope`` and ``mode``, so configs
written before keep their meaning):

- :class:`GradualMagnitude` (``scope: global`` or ``layer``): Zhu & Gupta's cubic
  schedule s_t = target + (initial - target)(1 - (t - start)/(end - start))³,
  masks recomputed every ``every`` steps, optional rewinding; ``target: 0`` is
  dense (the default).
- :class:`OneShotNM` (``scope: nm``): an N:M mask (``n`` of every ``m``
  consecutive input weights) fixed once at ``start``, optional rewinding.
- :class:`DynamicNM` (``scope: nm``, ``mode: dynamic``): the N:M mask recomputed
  from dense weights every step from ``start``, trained through with SR-STE;
  ``progressive`` fades the pruned weights out until ``end``.

A field of another algorithm is refused with one line naming the algorithm it
belongs to. The pruners are :mod:`datapruning.train.sparsity`'s; this module
imports only pydantic, so validating a config never imports torch.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Discriminator,
    Field,
    StrictFloat,
    StrictInt,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

from datapruning._sections import Section

# A point in training: an int is a step count, a float a fraction of all steps
# (strict, so a YAML true is not taken for step 1).
StepOrFraction = StrictInt | StrictFloat


class _Sparsity(Section):
    """What every sparsity algorithm shares: which weights, and when pruning starts."""

    variant: ClassVar[str]  # how errors name it
    start: StepOrFraction = 0.1
    # Regexes searched in parameter names (e.g. "features.3.weight"); empty include: all.
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    # The first layer (stem) and the last linear (classifier) stay dense unless this is set.
    prune_first_last: bool = False

    @model_validator(mode="before")
    @classmethod
    def _own_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in cls.model_fields:
                    continue
                owners = [v.variant for v in _VARIANTS if key in v.model_fields]
                if owners:
                    raise ValueError(
                        f"{key} applies to {' and '.join(owners)}, not to {cls.variant}; drop it"
                    )
        return data

    @field_validator("start", "end", "every", "rewind", check_fields=False)
    @classmethod
    def _step_or_fraction(cls, value: StepOrFraction | None) -> StepOrFraction | None:
        if isinstance(value, float) and not 0 <= value <= 1:
            raise ValueError(
                f"{value} must be a step count (int) or a fraction of training in [0, 1]"
            )
        if isinstance(value, int) and value < 0:
            raise ValueError(f"step {value} must be >= 0")
        return value

    @field_validator("include", "exclude")
    @classmethod
    def _regexes(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except OverflowError:  # a repeat count such as a{99999999999}
                raise ValueError(f"{pattern!r} has a repeat count too large for a regex") from None
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regex ({exc})") from None
        return patterns


class GradualMagnitude(_Sparsity):
    """Gradual magnitude pruning (Zhu & Gupta 2017) of conv/linear weights; off at target 0."""

    variant = "gradual magnitude (scope global or layer)"
    scope: Literal["global", "layer"] = "global"
    target: float = 0.0
    initial: float = 0.0
    end: StepOrFraction = 0.7
    every: StepOrFraction = 0.02
    # scope global: every pruned layer keeps at least this fraction of its weights.
    min_density: float = Field(0.02, ge=0, le=1)
    # Weight rewinding (Frankle et al. 2020): when the final masks are set, reset the
    # model to its weights after this many steps (int) or this fraction of training
    # (float), then train on with the masks fixed. None: no rewinding.
    rewind: StepOrFraction | None = None

    @field_validator("target", "initial")
    @classmethod
    def _sparsity(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError(f"sparsity {value} must lie in [0, 1)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GradualMagnitude:
        if self.initial > self.target:
            raise ValueError(f"initial sparsity {self.initial} exceeds target {self.target}")
        if self.every == 0:
            raise ValueError("every must be at least 1 step (or a fraction > 0)")
        return self

    @property
    def enabled(self) -> bool:
        return self.target > 0


class _NM(_Sparsity):
    scope: Literal["nm"] = "nm"
    n: int = Field(2, ge=1)
    m: int = Field(4, ge=2)

    @model_validator(mode="before")
    @classmethod
    def _scope_nm(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("scope", "nm") != "nm":
            raise ValueError(
                f"mode {data.get('mode')} trains N:M masks and needs scope nm, not "
                f"{data['scope']}; set scope: nm, or drop mode for gradual magnitude"
            )
        return data

    @model_validator(mode="after")
    def _n_below_m(self) -> _NM:
        if self.n >= self.m:
            raise ValueError(f"N:M needs n < m, got {self.n}:{self.m}")
        return self

    @property
    def enabled(self) -> bool:
        return True

    @property
    def target(self) -> float:
        """The sparsity every targeted layer ends at: 1 - n/m."""
        return 1 - self.n / self.m


class OneShotNM(_NM):
    """An N:M mask fixed once at ``start`` (prune, then fine-tune, as NVIDIA's ASP does)."""

    variant = "one-shot N:M (scope nm)"
    mode: Literal["oneshot"] = "oneshot"
    rewind: StepOrFraction | None = None


class DynamicNM(_NM):
    """N:M recomputed from dense weights every step, trained with SR-STE (Zhou et al. 2021)."""

    variant = "dynamic N:M (scope nm, mode dynamic)"
    mode: Literal["dynamic"] = "dynamic"
    # progressive: the pruned weights fade out linearly from full strength at start to zero
    # at end instead of being cut at start (MDGF-linear, Bambhaniya et al. 2024).
    end: StepOrFraction = 0.7
    progressive: bool = False
    # SR-STE's sparse-refined decay lambda, added as lambda * (1 - mask) * W to the gradient
    # of every weight (2e-4 in the paper; 0 is plain straight-through).
    sr_ste_decay: float = Field(2e-4, ge=0)
    # 2:4: semi_structured runs each eligible nn.Linear's forward and input gradient through
    # torch's 2:4 sparse kernels on CUDA sm80+ in bf16/fp16 (where they are faster;
    # datapruning.kernels.semi_structured), dense masked matmuls elsewhere.
    kernel: Literal["dense", "semi_structured"] = "dense"

    @model_validator(mode="after")
    def _semi_structured_is_2_4(self) -> DynamicNM:
        if self.kernel == "semi_structured" and (self.n, self.m) != (2, 4):
            raise ValueError(
                f"kernel semi_structured runs 2:4 masks; it needs n 2, m 4 (got {self.n}:{self.m})"
            )
        return self


_VARIANTS: tuple[type[_Sparsity], ...] = (GradualMagnitude, OneShotNM, DynamicNM)


def _variant(data: Any) -> str:
    """Which algorithm a ``train.sparsity`` mapping (or model) describes."""
    get = data.get if isinstance(data, dict) else lambda key: getattr(data, key, None)
    if get("mode") == "dynamic":
        return "<dynamic>"
    return "<nm>" if get("scope") == "nm" else "<gmp>"


# train.sparsity: the one of the three the mapping's scope and mode name. The tags are in
# angle brackets: error messages leave them out of where a problem is (errors.py).
SparsityConfig = Annotated[
    Annotated[GradualMagnitude, Tag("<gmp>")]
    | Annotated[OneShotNM, Tag("<nm>")]
    | Annotated[DynamicNM, Tag("<dynamic>")],
    Discriminator(_variant),
]
Sparsity = GradualMagnitude | OneShotNM | DynamicNM

_ADAPTER: TypeAdapter[Sparsity] = TypeAdapter(SparsityConfig)


def sparsity_config(**fields: Any) -> Sparsity:
    """The sparsity settings ``fields`` describe, validated as ``train.sparsity`` is:
    ``sparsity_config(target=0.9)`` is gradual magnitude, ``sparsity_config(scope="nm")``
    one-shot 2:4."""
    return _ADAPTER.validate_python(fields)
