"""Old loop against new: the final weights of the same recipes, bit for bit.

A refactor of the training loop must not change what a run computes. This
script trains a list of recipes on scikit-learn's digits with whichever
``datapruning`` is importable (``run``), saving each run's final weights and
summary, and compares two such folders (``compare``): ``torch.equal`` on every
tensor of every run, and the summaries apart from the fields that are timings,
paths, hashes or format versions. One recipe is killed with SIGKILL after its
first resume point and continued, so resume stays exact across the change.

    # the old code: a checkout of the commit before the change, on PYTHONPATH
    git worktree add --detach /tmp/old <commit>
    PYTHONPATH=/tmp/old python bench/loop_equivalence.py run --out /tmp/eq-old
    python bench/loop_equivalence.py run --out /tmp/eq-new
    python bench/loop_equivalence.py compare /tmp/eq-old /tmp/eq-new \
        --out bench/results/loop_equivalence.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Fields of summary.json that differ between two identical runs or two code versions
# without any change in what was computed.
_VOLATILE = {
    "train_seconds",
    "eval_seconds",
    "end_to_end_seconds",
    "teacher_logits_seconds",
    "teacher_seconds",
    "compile_seconds",
    "time_to_accuracy",
    "format_version",
    "config_hash",
    "run_dir",
    "version",
    "resumed_from_step",
    "selection_seconds",
    "teacher",
    "train_seconds_by_epoch",
}


def _recipes(teacher: Path) -> dict[str, dict[str, Any]]:
    """name -> keyword settings of one run (train config fields, kd, indices)."""
    gmp = {"target": 0.9, "start": 0.1, "end": 0.6, "every": 2}
    return {
        "full": {},
        "kd_cached": {"kd": {"alpha": 0.5, "teacher": teacher}, "subset": 0.5},
        "kd_online_augment": {"kd": {"teacher": teacher}, "augment": "shift_noise"},
        "kd_gmp90": {"kd": {"teacher": teacher}, "sparsity": gmp},
        "layer80": {"sparsity": {**gmp, "target": 0.8, "scope": "layer"}},
        "oneshot_2_4": {"sparsity": {"scope": "nm", "start": 0.3}},
        "rewind": {"sparsity": {**gmp, "target": 0.8, "rewind": 0.05}},
        "adamw_gmp": {"optimizer": "adamw", "sparsity": gmp},
        "dynamic_2_4_srste": {"sparsity": {"scope": "nm", "mode": "dynamic", "start": 0.2}},
        "infobatch_kd": {"kd": {"teacher": teacher}, "data": {"mode": "infobatch"}},
        "online": {"data": {"mode": "online", "keep": 0.5}},
        "online_proxy": {
            "data": {
                "mode": "online",
                "keep": 0.5,
                "proxy": {"name": "mlp", "params": {"hidden": 16}},
                "proxy_every": 2,
            }
        },
        "rs2": {"data": {"mode": "rs2", "fraction": 0.3}, "kd": {"teacher": teacher}},
    }


def _train(dataset: Any, name: str, spec: dict[str, Any], out: Path, **extra: Any) -> None:
    from datapruning.config import KDConfig, ModelConfig, TrainConfig
    from datapruning.train.loop import train

    spec = dict(spec)
    kd = spec.pop("kd", None)
    subset = spec.pop("subset", None)
    indices = None
    if subset is not None:
        indices = np.random.default_rng(0).permutation(dataset.num_train)
        indices = np.sort(indices[: int(subset * dataset.num_train)])
    cfg = TrainConfig(epochs=4, batch_size=64, targets=[0.5, 0.9], **spec, **extra)
    result = train(
        dataset,
        ModelConfig(name="mlp", params={"hidden": 64}),
        cfg,
        indices=indices,
        kd=KDConfig(**kd) if kd is not None else None,
        run_dir=out / name,
        progress=False,
    )
    torch.save(result.model.state_dict(), out / f"{name}.weights.pt")


def _killed_child(out: str, name: str, spec: dict[str, Any]) -> None:
    from datapruning.data.sources import load_dataset

    _train(load_dataset("digits", {}), name, spec, Path(out), checkpoint_every=5)


def run(out: Path) -> None:
    import datapruning
    from datapruning.data.sources import load_dataset

    print(f"datapruning from {Path(datapruning.__file__).parent}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset("digits", {})
    _train(dataset, "teacher", {}, out)
    recipes = _recipes(out / "teacher")
    for name, spec in recipes.items():
        start = time.perf_counter()
        _train(dataset, name, spec, out)
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    # Killed with SIGKILL once its first resume point is on disk, then continued.
    spec = recipes["kd_gmp90"]
    child = multiprocessing.get_context("spawn").Process(
        target=_killed_child, args=(str(out), "resumed_kd_gmp90", spec)
    )
    child.start()
    resume = out / "resumed_kd_gmp90" / "resume.pt"
    deadline = time.monotonic() + 120
    while not resume.exists() and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    killed = child.is_alive()
    if killed:
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    child.join()
    _train(dataset, "resumed_kd_gmp90", spec, out, checkpoint_every=5)
    summary = json.loads((out / "resumed_kd_gmp90" / "summary.json").read_text())
    (out / "resume_record.json").write_text(
        json.dumps({"killed": killed, "resumed_from_step": summary.get("resumed_from_step")})
    )


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to the leaves of a summary, less the volatile fields."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if key not in _VOLATILE:
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
    return flat


def compare(old: Path, new: Path) -> dict[str, Any]:
    rows = []
    for path in sorted(old.glob("*.weights.pt")):
        name = path.name.removesuffix(".weights.pt")
        a = torch.load(path, weights_only=True)
        b = torch.load(new / path.name, weights_only=True)
        equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        gap = max(float((a[k].float() - b[k].float()).abs().max()) for k in a) if a else 0.0
        sa = json.loads((old / name / "summary.json").read_text())
        sb = json.loads((new / name / "summary.json").read_text())
        fa, fb = _flatten(sa), _flatten(sb)
        differing = sorted(k for k in fa.keys() | fb.keys() if fa.get(k, "-") != fb.get(k, "-"))
        rows.append(
            {
                "recipe": name,
                "weights_equal": equal,
                "max_abs_weight_difference": gap,
                "summary_fields_differing": differing,
                "summary_format": [sa.get("format_version"), sb.get("format_version")],
                "final_test_acc": [sa["final_test_acc"], sb["final_test_acc"]],
            }
        )
    # The resumed run against the old code's uninterrupted one of the same recipe.
    a = torch.load(old / "kd_gmp90.weights.pt", weights_only=True)
    b = torch.load(new / "resumed_kd_gmp90.weights.pt", weights_only=True)
    resume = json.loads((new / "resume_record.json").read_text())
    resume["weights_equal_to_old_uninterrupted"] = all(torch.equal(a[k], b[k]) for k in a)
    same = torch.load(new / "kd_gmp90.weights.pt", weights_only=True)
    resume["weights_equal_to_new_uninterrupted"] = all(torch.equal(same[k], b[k]) for k in b)
    return {
        "recipes": rows,
        "all_weights_equal": all(r["weights_equal"] for r in rows),
        "resume_after_sigkill": resume,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run")
    run_parser.add_argument("--out", type=Path, required=True)
    compare_parser = sub.add_parser("compare")
    compare_parser.add_argument("old", type=Path)
    compare_parser.add_argument("new", type=Path)
    compare_parser.add_argument("--out", type=Path)
    compare_parser.add_argument("--old-label", default="old", help="e.g. the old commit")
    compare_parser.add_argument("--new-label", default="new", help="e.g. the new commit")
    args = parser.parse_args()
    if args.command == "run":
        run(args.out)
        return
    from provenance import provenance

    from datapruning._io import write_json

    labels = {"old": args.old_label, "new": args.new_label}
    result = {"compared": labels, **compare(args.old, args.new), **provenance(__file__, None)}
    print(json.dumps(result, indent=1))
    if args.out is not None:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
