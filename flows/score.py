"""Scoring as a Prefect flow: each metric's seed groups and shards fan out and merge.

Seed-group metrics (el2n, grand, forgetting) train ``scoring.ensemble_size``
seeds per group; the groups run as separate cells on the chosen task runner,
each saving its columns in ``scores/METRIC.parquet.parts/``, and one merge cell
writes the scores file with its cache key. With ``scoring.shards: N`` (el2n,
grand, proto) the groups save their trained models instead (proto: one cell
fits the encoder and centroids), N cells each score a block of rows with them,
and the merge joins the N shards. The cells are the pipeline's own
(``datapruning.pipeline.score_cells.fan_out``), queued as the pipeline queues
them (``flows/queue.py``). A scores file made with the same settings and library
source is reused unless ``refresh``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from datapruning.config import PipelineConfig
from datapruning.flows.queue import CellQueue, add_scoring
from datapruning.flows.runners import task_runner
from datapruning.flows.tasks import config_of, scoring_tasks
from datapruning.pipeline.failures import Failure
from datapruning.pipeline.grid import experiments
from datapruning.pipeline.score_cells import clear_scores


@flow(name="datapruning-score")
def score(
    config: str | PipelineConfig,
    overrides: list[str] | None = None,
    runner: str = "sequential",
    dask_address: str | None = None,
    workers: int | None = None,
    refresh: bool = False,
    retries: int = 2,
    retry_delay: float = 2.0,
) -> dict[str, Any]:
    """The scores of every experiment and metric of the config (scoring.metric, or sweep.metrics)."""
    cfg = config_of(config, overrides)
    experiments(cfg)
    with task_runner(runner, cfg.run_root, dask_address=dask_address, workers=workers) as tr:
        return score_cells.with_options(task_runner=tr.task_runner)(
            cfg, None, refresh, retries, retry_delay, tr.slots
        )


@flow(name="datapruning-score-cells")
def score_cells(
    config: str | PipelineConfig,
    overrides: list[str] | None = None,
    refresh: bool = False,
    retries: int = 2,
    retry_delay: float = 2.0,
    slots: int | None = None,
) -> dict[str, Any]:
    cfg = config_of(config, overrides)
    tasks = scoring_tasks(retries, retry_delay)
    queue = CellQueue(slots)
    merges = []
    for i, exp in enumerate(experiments(cfg)):
        for metric in exp.metrics:
            if refresh:
                clear_scores(exp.cfg, metric)
            # scoring.source runs: a recordable metric is refused in one line (no full runs).
            merges.append(add_scoring(queue, i, exp.cfg, metric, tasks))
    done = dict(queue.run())
    failed = [(key, done[key]) for key in merges if isinstance(done[key], Failure)]
    if failed:
        (_, i, metric), reason = failed[0]
        raise RuntimeError(f"scoring {metric} of experiment {i} failed: {reason}")
    records = [done[key] for key in merges]
    reused = sum(record["reused"] for record in records)
    get_run_logger().info("%d scores files: %d reused", len(records), reused)
    return {"scores": records}
