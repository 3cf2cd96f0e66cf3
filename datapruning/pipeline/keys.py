"""The cache keys that decide when a finished run or scores file is reused.

A run is reused when its directory holds a ``summary.json`` whose ``run_key``
matches the key of the run about to start. The key hashes what the run computes
from: the dataset fingerprint, the model, the training settings (except those
that change how a run goes, not what it computes: ``train.run.NOT_COMPUTING``,
the same list the resume check of a run leaves out; ``threads`` counts, since
it changes a convnet's weights in their last bits), the recipe, for KD the teacher checkpoint's hash and the KD
settings, for a scored subset the scores file's hash, and the library's source
(:func:`source_hash`; the version string is fixed at 0.1.0, so it says
nothing). Scores are reused when their metadata carries the same key. The loop
deletes ``summary.json`` when a run starts, so a run killed half-way is trained
again (continuing from ``resume.pt`` with ``train.checkpoint_every``), and a
scoring killed half-way recomputes only its missing seed groups.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from datapruning._io import file_hash
from datapruning.config import PipelineConfig, TrainConfig
from datapruning.pipeline.data import dataset_of
from datapruning.pipeline.recipes import StudentRecipe, student_train, teacher_train
from datapruning.report import FULL_RECIPE
from datapruning.train.run import NOT_COMPUTING, resolve_teacher
from datapruning.train.settings import DynamicsConfig
from datapruning.train.summary import SUMMARY_FORMAT

RUN_KEY = "run_key"
SCORES_KEY = "cache_key"
# Sharded scores merge equal to unsharded ones (tests/scoring/test_shards.py).
_SCORING_SPEED_ONLY = {"ensemble_threads", "shards"}
# Modules (paths inside the datapruning package) that do not change what a run or a score
# computes: editing them reuses results. The CLI and the report read or start runs; the
# pipeline only orchestrates them, except its recipes, which decide each student's subset
# and training settings.
_NOT_COMPUTING = ("cli.py", "report/", "pipeline/")
_COMPUTING = ("pipeline/recipes.py",)


def _computes(relative: str) -> bool:
    return relative in _COMPUTING or not relative.startswith(_NOT_COMPUTING)


@functools.cache
def source_hash() -> str:
    """A hash of the library source that computes results (datapruning and its models).

    Left out: the modules that compute nothing (``cli.py``, the report, and the
    pipeline package but for ``pipeline/recipes.py``).
    """
    import datapruning
    import datapruning.models

    digest = hashlib.sha256()
    for package in (datapruning, datapruning.models):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            if package is datapruning and not _computes(relative):
                continue
            digest.update(f"{package.__name__}/{relative}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _key(identity: dict[str, Any]) -> str:
    text = json.dumps(identity | {"source": source_hash()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _train_identity(train_cfg: TrainConfig) -> dict[str, Any]:
    return train_cfg.model_dump(mode="json", exclude=set(NOT_COMPUTING))


def reusable_summary(run_dir: Path, key: str) -> dict[str, Any] | None:
    """The finished run's summary when it was made with ``key``, else None."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get(RUN_KEY) != key:
        return None
    if summary.get("format_version") != SUMMARY_FORMAT:  # another layout: trained again
        return None
    if not (run_dir / "checkpoint.pt").is_file():
        return None
    return summary


def teacher_key(cfg: PipelineConfig, seed: int, record: DynamicsConfig | None = None) -> str:
    # train.record is part of it: scoring.source runs retrains the full-data runs once.
    return _key(
        {
            "dataset": dataset_of(cfg).fingerprint,
            "model": cfg.model.model_dump(mode="json"),
            "train": _train_identity(teacher_train(cfg, seed, record)),
            "recipe": FULL_RECIPE,
        }
    )


def scores_key(cfg: PipelineConfig, metric: str) -> str:
    scoring = cfg.scoring.model_dump(
        mode="json", exclude=_SCORING_SPEED_ONLY | {"metric", "params", "model"}
    )
    # Only this metric's own settings: another metric's params never invalidate its scores.
    params = cfg.scoring.params_for(metric)
    scoring["params"] = params.model_dump(mode="json")
    # Files the metric reads (proto's embeddings or encoder checkpoint) by their contents:
    # a retrained encoder at the same path rescores.
    scoring["inputs"] = {
        name: _input_hash(Path(value))
        for name in ("embeddings", "encoder")
        if isinstance(value := getattr(params, name, None), str | Path) and Path(value).exists()
    }
    return _key(
        {
            "metric": metric,
            "scoring": scoring,
            "dataset": dataset_of(cfg).fingerprint,
            # The model that scores: scoring.model (a proxy) when set, else the student's.
            "model": (cfg.scoring.model or cfg.model).model_dump(mode="json"),
            "train": _train_identity(cfg.train),
        }
    )


def student_key(
    cfg: PipelineConfig,
    recipe: StudentRecipe,
    scores: dict[str, Any] | None,
    teacher: dict[str, Any] | None,
) -> str:
    return _key(
        {
            "dataset": dataset_of(cfg).fingerprint,
            "model": cfg.model.model_dump(mode="json"),
            "train": _train_identity(student_train(cfg, recipe)),
            "recipe": [recipe.label, recipe.fraction, recipe.strategy, recipe.seed]
            + ([recipe.budget] if recipe.budget != "epochs" else []),
            "scores": scores["hash"] if recipe.needs_scores and scores else None,
            "kd": [cfg.kd.model_dump(mode="json"), teacher["checkpoint_hash"]]
            if recipe.kd and teacher
            else None,
        }
    )


def single_key(cfg: PipelineConfig) -> str:
    """The key of ``datapruning train``'s one run: its settings and the files it reads."""
    teacher, _ = resolve_teacher(None, cfg.kd)
    data = cfg.train.data
    inputs = {
        name: _input_hash(path)
        for name, path in {
            "teacher": teacher,
            "indices": data.indices,
            "scores": data.scores,
        }.items()
        if path is not None
    }
    return _key(
        {
            "dataset": dataset_of(cfg).fingerprint,
            "model": cfg.model.model_dump(mode="json"),
            "train": _train_identity(cfg.train),
            "kd": cfg.kd.model_dump(mode="json") if teacher else None,
            "inputs": inputs,
        }
    )


def _input_hash(path: Path) -> str:
    """A file's hash (a run directory: its checkpoint's); a missing one fails in the loop."""
    from datapruning.train.checkpoint import CHECKPOINT_NAME

    path = path / CHECKPOINT_NAME if path.is_dir() else path
    return file_hash(path) if path.is_file() else f"missing:{path}"
