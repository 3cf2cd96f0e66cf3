"""A finished run directory written by hand, in the training loop's format.

Shared by the report, CLI, loop and pipeline tests: summary.json plus metrics.jsonl with an
accuracy curve chosen by the test.
"""

from __future__ import annotations

import json

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
):
    """A finished run: ``curve`` is a list of (train_seconds, test_acc) evaluations."""
    run = root / name
    run.mkdir(parents=True)
    accs = [acc for _, acc in curve]
    summary = {
        "format_version": 1,
        "recipe": recipe,
        "kept_fraction": kept,
        "kd": kd,
        "kd_teacher": kd_teacher if kd_teacher is not None else ("cached" if kd else None),
        "final_test_acc": accs[-1],
        "best_test_acc": max(accs),
        "train_seconds": curve[-1][0],
        "eval_seconds": eval_seconds,
        "scoring_seconds": scoring_seconds,
        "teacher_seconds": teacher_seconds,
        "model": "mlp",
        "epochs": len(curve),
        "num_train_examples": round(1000 * kept),
        "dataset": {"name": "digits", "params": {}, "fingerprint": "0123456789abcdef"},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    lines = [
        json.dumps({"epoch": i + 1, "train_seconds": s, "test_acc": a})
        for i, (s, a) in enumerate(curve)
    ]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run
