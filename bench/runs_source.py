"""The quickstart's EL2N-hard students with scores from the ensemble or from the runs.

``scoring.source: ensemble`` trains 4 scoring models for 10 epochs; ``runs`` reads the
EL2N the two full-data runs (seeds 0 and 1, 60 epochs) recorded after epochs 10, 20, 40
and 60. Both run the quickstart config (MNIST-1D, 4,000 training examples, convnet1d
32 channels) through the pipeline's cells, without Prefect, on the students that read
scores: EL2N-hard at 30/50/70%, no KD, seeds 0 and 1. Reported per source: the scores'
seconds (what a student is charged), the Spearman of the two sources' scores, each
fraction's mean final accuracy, and each student row's end-to-end time to the report's
target with the scores per student and once per sweep.

    python bench/runs_source.py    # writes bench/results/runs_source.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "runs_source.json"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def _run(source: str, root: Path) -> dict[str, Any]:
    """The pipeline's cells of one source, in order; what they cost and reached."""
    from datapruning.config import load_config
    from datapruning.pipeline import grid, recorded, score_cells, train_cells
    from datapruning.report import find_runs, tta_table

    students = (
        "students={fractions: [0.3, 0.5, 0.7], strategies: [hard], kd: [false], seeds: [0, 1]}"
    )
    sets = [f"output_dir={root}", f"name={source}", f"scoring.source={source}", students]
    cfg = load_config(CONFIG, sets)
    (exp,) = grid.experiments(cfg)
    start = time.perf_counter()
    for seed in exp.teacher_seeds:
        train_cells.run_teacher(exp.cfg, seed, record=exp.record)
    if source == "runs":
        scores = recorded.combine_recorded(exp.cfg, "el2n", exp.teacher_seeds)
    else:
        scores = score_cells.merge_scores(exp.cfg, "el2n")
    students_acc: dict[str, list[float]] = {}
    for recipe in exp.recipes:
        record = train_cells.run_student(exp.cfg, recipe, scores, None)
        students_acc.setdefault(f"{recipe.fraction:g}", []).append(record["final_test_acc"])
    table, target = tta_table(find_runs(exp.root), cfg.report.target_drop)
    rows = {
        f"{row.recipe} {row.kept:g}": {
            "student_s": row.tta_s,
            "e2e_per_student_s": row.e2e_student_s,
            "e2e_once_per_sweep_s": row.e2e_sweep_s,
            "final_acc": row.final_acc,
        }
        for row in table.itertuples()
    }
    return {
        "scores_seconds": scores["seconds"],
        "wall_seconds": time.perf_counter() - start,
        "target": target,
        "mean_final_acc": {k: sum(v) / len(v) for k, v in students_acc.items()},
        "rows": rows,
        "scores_path": scores["path"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import torch
    from provenance import provenance
    from scipy.stats import spearmanr

    from datapruning._io import write_json
    from datapruning.scores import Scores

    torch.set_num_threads(1)
    result: dict[str, Any] = {**provenance(__file__, argv, packages=("scipy",))}
    with tempfile.TemporaryDirectory() as tmp:
        for source in ("ensemble", "runs"):
            result[source] = _run(source, Path(tmp))
            print(f"{source}: {result[source]}", file=sys.stderr)
        a, b = (Scores.load(result[s].pop("scores_path")).values for s in ("ensemble", "runs"))
        result["spearman_ensemble_vs_runs"] = float(spearmanr(a, b).statistic)
    write_json(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
