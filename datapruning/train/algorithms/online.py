"""Online batch selection as an algorithm: train on the highest-loss share of each batch.

For ``train.data.mode: online`` the loader draws candidate batches of
``batch_size / keep`` examples; before each step this algorithm scores them
without gradient, with the student (:class:`~datapruning.train.dynamic.OnlineSelection`)
or with a small proxy model that trains on what it keeps
(:class:`~datapruning.train.dynamic.ProxySelection`, ``train.data.proxy``), and
hands the step the ``keep`` share with the highest loss. Its seconds are in the
training clock and reported apart as selection time; the proxy (weights,
optimizer, schedule) is part of the resume state.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from datapruning.data.loaders import Batch
from datapruning.errors import DataPruningError
from datapruning.train.algorithms.base import Algorithm, Trainer
from datapruning.train.device import synchronizer
from datapruning.train.dynamic import OnlineSelection, ProxySelection, charge_proxy
from datapruning.train.schedule import make_optimizer, make_scheduler
from datapruning.train.settings import ModelConfig
from datapruning.train.state import forked_rngs, set_rng_state


class Online(Algorithm):
    """Scores each candidate batch (student or proxy) and keeps its top-loss share."""

    name = "online"

    def __init__(self, run: Any, proxy: nn.Module | None) -> None:
        self.cfg, self.keep, self.proxy = run.cfg, run.data.online_keep, proxy
        self.select: OnlineSelection | ProxySelection | None = None
        self.student_parameters = sum(p.numel() for p in run.model.parameters())
        self.proxy_spec = _proxy_spec(run)

    def start(self, trainer: Trainer) -> None:
        loss, sync = trainer.loss, synchronizer(trainer.device)
        if self.proxy is None:
            self.select = OnlineSelection(
                trainer.model, loss.fn, self.keep, trainer.precision, sync, teacher=loss.teacher
            )
            return
        # The proxy trains with the run's recipe: its own optimizer and the same LR schedule.
        optimizer = make_optimizer(self.proxy.parameters(), self.cfg)
        self.select = ProxySelection(
            self.proxy,
            loss.fn,
            self.keep,
            optimizer,
            make_scheduler(optimizer, trainer.plan),
            trainer.precision,
            trainer.precision.scaler(),
            sync,
            teacher=loss.teacher,
            every=self.cfg.data.proxy_every,
            clip_grad_norm=self.cfg.clip_grad_norm,
        )

    def batch(self, x: Tensor, y: Tensor, index: Tensor) -> Batch:
        assert self.select is not None
        return self.select(x, y, index)

    @property  # type: ignore[override]
    def selection_seconds(self) -> float:
        return self.select.seconds if self.select is not None else 0.0

    @property  # type: ignore[override]
    def scored(self) -> int:
        return self.select.scored if self.select is not None else 0

    def state_dict(self) -> dict[str, Any] | None:
        return self.select.state_dict() if isinstance(self.select, ProxySelection) else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if isinstance(self.select, ProxySelection):
            self.select.load_state_dict(state)

    def summarize(self, summary: dict[str, Any]) -> None:
        if not isinstance(self.select, ProxySelection):
            return
        spec = self.proxy_spec
        assert isinstance(spec, ModelConfig)
        charge_proxy(
            summary["cost"],
            {
                "model": spec.name,
                "params": dict(spec.params),
                "every": self.select.every,
                "backward_examples": self.select.trained,
                "parameters": self.select.parameters,
                "student_parameters": self.student_parameters,
            },
        )


def build(run: Any) -> Online | None:
    if run.data.online_keep is None:
        return None
    return Online(run, _proxy(run))


def _proxy(run: Any) -> nn.Module | None:
    """The proxy model, drawn from the torch stream right after the student's initialisation
    (seeded by the run's seed; the student's own draws in training are unchanged by it)."""
    from datapruning import user

    spec = _proxy_spec(run)
    if spec is None:
        return None
    with forked_rngs(run.device):
        set_rng_state(run.rng, run.device)
        try:
            return user.build(spec, run.dataset).to(run.device)
        except DataPruningError as exc:  # the message names the model: say it is the proxy
            raise DataPruningError(f"train.data.proxy: {exc}") from None


def _proxy_spec(run: Any) -> ModelConfig | None:
    """The proxy's model, the dataset's default (at its width for the device) when it names none."""
    from datapruning import user

    spec = run.cfg.data.proxy
    if spec is None:
        return None
    resolved = user.resolve_model(spec, run.dataset, run.device)
    assert isinstance(resolved, ModelConfig)
    return resolved
