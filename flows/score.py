"""Scoring as a Prefect flow: each metric's seed groups and shards fan out and merge.

Seed-group metrics (el2n, grand, forgetting) train ``scoring.ensemble_size``
seeds per group; the groups run as separate cells on the chosen task runner,
each saving its columns in ``scores/METRIC.parquet.parts/``, and one merge cell
writes the scores file with its cache key. With ``scoring.shards: N`` (el2n,
grand, proto) the groups save their trained models instead (proto: one cell
fits the encoder and centroids), N cells each score a block of rows with them,
and the merge joins the N shards (``flows.tasks.submit_scores``). A scores file made with the same
settings and library source is reused unless ``refresh``. Logic lives in
``datapruning.orchestration``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from datapruning import orchestration as orch
from datapruning.config import load_config
from datapruning.flows.runners import task_runner
from datapruning.flows.tasks import submit_scores


@flow(name="datapruning-score")
def score(
    config: str,
    overrides: list[str] | None = None,
    runner: str = "sequential",
    dask_address: str | None = None,
    workers: int | None = None,
    refresh: bool = False,
    retries: int = 2,
    retry_delay: float = 2.0,
) -> dict[str, Any]:
    """The scores of every experiment and metric of the config (scoring.metric, or sweep.metrics)."""
    cfg = load_config(config, overrides)
    orch.experiments(cfg)
    with task_runner(runner, cfg.run_root, dask_address=dask_address, workers=workers) as tr:
        return score_cells.with_options(task_runner=tr.task_runner)(
            config, overrides, refresh, retries, retry_delay
        )


@flow(name="datapruning-score-cells")
def score_cells(
    config: str,
    overrides: list[str] | None = None,
    refresh: bool = False,
    retries: int = 2,
    retry_delay: float = 2.0,
) -> dict[str, Any]:
    cfg = load_config(config, overrides)
    merges = []
    for exp in orch.experiments(cfg):
        for metric in exp.metrics:
            if refresh:
                orch.clear_scores(exp.cfg, metric)
            merges.append(submit_scores(exp.cfg, metric, retries, retry_delay))
    records = [future.result() for future in merges]
    reused = sum(record["reused"] for record in records)
    get_run_logger().info("%d scores files: %d reused", len(records), reused)
    return {"scores": records}
