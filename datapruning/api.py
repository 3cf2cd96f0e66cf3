"""``datapruning.run``: the whole pipeline from Python, as ``datapruning run`` runs it.

The other entry points live beside their code (``datapruning.score`` in
:mod:`datapruning.scoring`, ``datapruning.select`` in :mod:`datapruning.scores`,
``datapruning.train`` in :mod:`datapruning.train.loop`); the pipeline's driver is
the Prefect flow in ``datapruning.flows``, which this module calls without the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datapruning.errors import DataPruningError


def run(
    config: str | os.PathLike[str],
    overrides: list[str] | None = None,
    *,
    runner: str = "sequential",
    dask_address: str | None = None,
    workers: int | None = None,
    refresh: bool = False,
    retries: int = 2,
) -> dict[str, Any]:
    """Run an experiment config's pipeline (teachers, scores, students, report).

    The same run as ``datapruning run CONFIG --set KEY=VALUE ...``: a config with a
    ``sweep`` section runs every dataset x model, metric and sparsity it lists;
    finished runs and scores of the same settings are reused unless ``refresh``.
    ``runner`` is ``sequential``, ``processes`` or ``dask`` (``dask_address``: an
    existing scheduler). Without ``PREFECT_API_URL`` a temporary Prefect server
    runs for the call.

    Returns ``{"reports": [report.md paths], "records": [one per cell: run, status,
    seconds, ...], "counts": {status: number}}``.

    Example (the quickstart cut to a teacher, one scoring and one student: seconds, plus
    the temporary Prefect server's start; the report lands in ``output_dir``)::

        import datapruning

        result = datapruning.run(
            "configs/quickstart.yaml",
            [
                "output_dir=/tmp/datapruning-example",
                "dataset.params.num_samples=500",
                "train.epochs=2",
                "scoring.seeds=1",
                "scoring.epochs=1",
                "students.fractions=[0.5]",
                "students.strategies=[hard]",
                "students.kd=[false]",
            ],
        )
        print(result["counts"], result["reports"])
    """
    from datapruning.config import load_config

    path = Path(config)
    cfg = load_config(path, list(overrides or []))
    if retries < 0:
        raise DataPruningError(f"retries {retries} must be at least 0")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from datapruning.flows.pipeline import pipeline, sweep
    from datapruning.flows.runners import check_runner, prefect_api
    from datapruning.pipeline.grid import is_sweep

    check_runner(runner, dask_address, workers)
    flow = sweep if is_sweep(cfg) else pipeline
    with prefect_api():
        # The config as loaded here: the flow and its cells read it, not the file again.
        return flow(
            cfg,
            runner=runner,
            dask_address=dask_address,
            workers=workers,
            refresh=refresh,
            retries=retries,
        )
