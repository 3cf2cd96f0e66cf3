"""A finished run directory written by hand, in the training loop's format.

Shared by the report, CLI, loop and pipeline tests: summary.json plus metrics.jsonl with an
accuracy curve chosen by the test.
"""

from __future__ import annotations

import json

from datapruning.train.summary import SUMMARY_FORMAT

# The keys every summary.json must carry (issue 2's contract for a run).
SUMMARY_KEYS = {
    "final_test_acc",
    "best_test_acc",
    "train_seconds",
    "eval_seconds",
    "epochs",
    "steps",
    "kept_fraction",
    "time_to_accuracy",
    "config",
}


def write_run(
    root,
    name,
    curve,
    *,
    recipe,
    kept=1.0,
    kd=None,
    scoring_seconds=0.0,
    teacher_seconds=0.0,
    eval_seconds=0.25,
    kd_teacher=None,
    seed=0,
    teacher_logits_seconds=0.0,
    teacher=None,
    budget=None,
    dataset="digits",
    num_train=None,
    sparsity=None,
    steps_per_eval=None,
    scores=None,
):
    """A finished run: ``curve`` is a list of (train_seconds, test_acc) evaluations.

    ``teacher``: the teacher run's name (KD only; default full-s<seed>), recorded as the
    path of its logits as the pipeline does; ``num_train``: the experiment's training-set
    size (summary ``dataset.num_train``); ``sparsity``: the achieved sparsity, recorded as
    the pruner's report; ``steps_per_eval``: log the optimizer step of each evaluation
    (evaluation i at step i x steps_per_eval); ``scores``: the metric whose scores file
    (``scores/<metric>.parquet``) the run read, recorded as the pipeline records it.
    """
    run = root / name
    run.mkdir(parents=True)
    accs = [acc for _, acc in curve]
    summary = {
        "format_version": SUMMARY_FORMAT,
        "recipe": recipe,
        "kept_fraction": kept,
        "kd": (
            {**kd, "teacher": str(root / (teacher or f"full-s{seed}") / "teacher_logits.npy")}
            if kd
            else None
        ),
        "seed": seed,
        "kd_teacher": kd_teacher if kd_teacher is not None else ("cached" if kd else None),
        "final_test_acc": accs[-1],
        "best_test_acc": max(accs),
        "train_seconds": curve[-1][0],
        "eval_seconds": eval_seconds,
        "scoring_seconds": scoring_seconds,
        "teacher_seconds": teacher_seconds,
        "teacher_logits_seconds": teacher_logits_seconds,
        "sparsity": None if sparsity is None else {"sparsity": sparsity, "layers": {}},
        "model": "mlp",
        "epochs": len(curve),
        "num_train_examples": round(1000 * kept),
        "dataset": {"name": dataset, "params": {}, "fingerprint": "0123456789abcdef"},
    }
    if budget is not None:
        summary["budget"] = budget
    if scores is not None:
        summary["scores"] = {"file": str(root / "scores" / f"{scores}.parquet"), "source": "runs"}
    if num_train is not None:
        summary["dataset"]["num_train"] = num_train
    (run / "summary.json").write_text(json.dumps(summary))
    lines = [
        json.dumps(
            {"epoch": i + 1, "train_seconds": s, "test_acc": a}
            | ({"step": (i + 1) * steps_per_eval} if steps_per_eval else {})
        )
        for i, (s, a) in enumerate(curve)
    ]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run
