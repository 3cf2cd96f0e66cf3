"""One training run as a Prefect flow: ``datapruning train`` with reuse and retries.

The config's train and kd sections as they are (train.data: full, a subset or
RS2; kd.teacher or kd.teacher_logits to distil). A finished run in ``out`` made
with the same settings, inputs and library source is reused unless ``refresh``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from datapruning.config import PipelineConfig
from datapruning.flows.tasks import config_of, retrying
from datapruning.pipeline import train_cells


@task(name="train-run", cache_policy=NO_CACHE)
def train_task(cfg: PipelineConfig, out: str, refresh: bool) -> dict[str, Any]:
    return train_cells.run_single(cfg, out, refresh=refresh)


@flow(name="datapruning-train")
def train(
    config: str | PipelineConfig,
    overrides: list[str] | None = None,
    out: str = "runs/train",
    refresh: bool = False,
    retries: int = 2,
    retry_delay: float = 2.0,
) -> dict[str, Any]:
    """Train one model with the config's dataset, model, train and kd sections into ``out``."""
    cfg = config_of(config, overrides)
    return retrying(train_task, retries, retry_delay)(cfg, out, refresh)
