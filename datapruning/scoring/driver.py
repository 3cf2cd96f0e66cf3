"""The trained-model driver shared by every metric that scores with trained models.

EL2N, GraNd and forgetting all train ``scoring.seeds`` scoring models for
``scoring.epochs`` epochs on every example and then read something off them (or,
for forgetting, off their training). This module holds that part once: the
scoring models' recipe (:func:`scoring_train_config`), training a group of
seeds as one batched ensemble (:mod:`datapruning.scoring.ensemble`,
``scoring.batched``, the default) or one after another through the training
loop, and saving each group of ``scoring.ensemble_size`` seeds to ``work_dir``
as it finishes, so an interrupted run resumes with the missing seeds. A metric
module supplies only what it computes from a trained group.

Sharded scoring (``job.shard``, ``datapruning score --shard i/n``) splits only
the per-example evaluation: the groups still train on every example, once,
and are saved in the work dir (:class:`ModelStore`), where every shard reads
them; so a shard's columns are the rows of the unsharded ones, bit for bit
(tests/scoring/test_shards.py, EL2N and GraNd on a 192-example set, 3 shards).
Forgetting is counted during training and has no such pass to split.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import pickle
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datapruning import user
from datapruning._io import write_once
from datapruning._sections import derive
from datapruning.config import DataConfig, GradualMagnitude, ScoringConfig, TrainConfig
from datapruning.data.dataset import Dataset
from datapruning.data.stream import as_rows
from datapruning.errors import DataPruningError
from datapruning.scores import Scores
from datapruning.scoring._common import (
    MetricJob,
    SeedStore,
    build_scores,
    check_features,
    check_labels,
)
from datapruning.scoring.ensemble import (
    Ensemble,
    build_models,
    can_batch,
    ensemble_threads,
    train_ensemble,
)
from datapruning.user import ModelSpec

# Scores of one trained ensemble: (K, N) for the ensemble's seeds.
EnsembleScorer = Callable[[Ensemble, torch.Tensor, torch.Tensor], torch.Tensor]

# Scores of one group of seeds, (len(group), N), given the group, the scoring
# models' recipe (scoring_train_config) and whether the group trains batched.
GroupScorer = Callable[[list[int], TrainConfig, bool], np.ndarray]


def scoring_train_config(train_cfg: TrainConfig, epochs: int) -> TrainConfig:
    """The recipe of a scoring model: ``train_cfg``'s optimiser, dense, on every example.

    Scoring models see every example for ``epochs`` epochs, whatever the
    config's data mode, step budget, sparsity or augmentation say about students
    (the batched ensemble trains on the inputs as they are; the sequential path
    through the loop does the same, so both agree).
    """
    return derive(
        train_cfg,
        epochs=epochs,
        steps=None,
        data=DataConfig(),
        eval_every=0,
        targets=[],
        reference=None,
        sparsity=GradualMagnitude(),
        checkpoint_every=0,
        augment="none",
    )


# The scoring models' recipe, the model's provenance record, and whether groups batch.
Recipe = tuple[TrainConfig, dict[str, Any], bool]


def _recipe(job: MetricJob) -> Recipe:
    """The scoring models' recipe, the model's provenance record, and whether groups batch."""
    dataset, scoring, model_cfg = job.dataset, job.scoring, job.model
    check_features(dataset.x_train)  # a streaming set chunk by chunk
    check_labels(dataset)
    model = user.record(model_cfg, dataset)
    # Models with BatchNorm cannot train in a batched ensemble: one seed per group.
    probe = build_models(dataset, model_cfg, [0], torch.device("cpu"))[0]
    return (
        scoring_train_config(job.train, scoring.epochs),
        model,
        scoring.batched and can_batch(probe),
    )


def seed_groups_of(seeds: Sequence[int], size: int) -> list[list[int]]:
    """``seeds`` in consecutive groups of ``size``: the groups that train together."""
    seeds = list(seeds)
    return [seeds[i : i + size] for i in range(0, len(seeds), size)]


def score_seed_groups(
    metric: str,
    compute: GroupScorer,
    job: MetricJob,
    extra_params: dict[str, Any] | None = None,
    prepare_seconds: float = 0.0,
    recipe: Recipe | None = None,
) -> Scores:
    """A metric computed by scoring models, per group of seeds (batched or one by one).

    Checks the inputs, records the recipe, and resumes from the groups a
    previous run saved in ``job.work_dir``; keeps per-seed columns. With
    ``job.shard``, ``compute`` returns that shard's rows only.
    """
    dataset, scoring = job.dataset, job.scoring
    train_cfg, model, batched = recipe or _recipe(job)
    params = {
        "epochs": scoring.epochs,
        "seeds": scoring.seeds,
        "batched": batched,
        "ensemble_size": scoring.ensemble_size if batched else 1,
        "train": train_cfg.model_dump(mode="json"),
        **(extra_params or {}),
    }
    identity = {"metric": metric, "dataset": dataset.fingerprint, "model": model}
    if job.shard is not None:  # a shard's columns are kept apart from whole-set ones
        identity["shard"] = [job.shard.number, job.shard.count]
    # Batched and sequential runs agree only up to rounding, so they are not mixed.
    store = SeedStore(job.work_dir, identity | {"params": params})
    seeds = [seed for seed in range(scoring.seeds) if job.seeds is None or seed in job.seeds]
    group = scoring.ensemble_size if batched else 1
    done = store.run(
        seeds,
        len(job.rows()),
        group,
        lambda chunk: compute(chunk, train_cfg, batched),
        metric,
        job.progress,
    )
    return build_scores(
        dataset,
        metric,
        # Every seed, or with job.seeds (a fan-out's share) the seeds done so far.
        {seed: done[seed][0] for seed in sorted(done)},
        params=params,
        model=model,
        seconds=sum(seconds for _, seconds in done.values()),
        reused_seeds=store.reused,
        shard=job.shard,
        prepare_seconds=prepare_seconds,
    )


# The layout of a saved group (group-A-B.pt: seeds, params, buffers; group-A-B.json: its
# training seconds); part of the key.
MODELS_FORMAT = 1


class ModelStore:
    """Trained seed groups saved under ``work_dir/models-<key>/``, shared by a scoring's shards.

    Each shard of an EL2N or GraNd scoring evaluates the same trained models on
    its own rows; the first worker to finish a group saves it (first writer
    wins, :func:`datapruning._io.write_once`) and every worker then reads that
    one file, so all shards score with bit-identical models even when two of
    them trained the same group at once. The key hashes what training reads
    (dataset, model, recipe, batching), not the metric: EL2N and GraNd of one
    recipe share their models. Without a ``work_dir`` the groups stay in memory.
    """

    def __init__(self, job: MetricJob, recipe: Recipe | None = None) -> None:
        self.job = job
        self.recipe, model, self.batched = recipe or _recipe(job)
        scoring = job.scoring
        self.size = scoring.ensemble_size if self.batched else 1
        identity = {
            "dataset": job.dataset.fingerprint,
            "model": model,
            "train": self.recipe.model_dump(mode="json"),
            "epochs": scoring.epochs,
            "batched": self.batched,
            "ensemble_size": self.size,
            "format": MODELS_FORMAT,
        }
        blob = json.dumps(identity, sort_keys=True, default=str).encode()
        key = hashlib.blake2b(blob, digest_size=8).hexdigest()
        self.dir = Path(job.work_dir) / f"models-{key}" if job.work_dir is not None else None
        self._memory: dict[tuple[int, ...], tuple[Ensemble, float]] = {}
        self._base: torch.nn.Module | None = None  # the architecture, on the meta device

    def groups(self) -> list[list[int]]:
        return seed_groups_of(range(self.job.scoring.seeds), self.size)

    def _path(self, group: Sequence[int]) -> Path:
        assert self.dir is not None
        return self.dir / f"group-{group[0]}-{group[-1]}.pt"

    def seconds(self, group: Sequence[int]) -> float | None:
        """The training seconds of a saved group, None while it is not saved."""
        if self.dir is None:
            found = self._memory.get(tuple(group))
            return found[1] if found is not None else None
        try:
            return float(json.loads(self._path(group).with_suffix(".json").read_text())["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def load(self, group: Sequence[int]) -> Ensemble | None:
        if self.dir is None:
            found = self._memory.get(tuple(group))
            return found[0] if found is not None else None
        path = self._path(group)
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location=self.recipe.device, weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
            return None  # damaged: ensemble() says which file to delete
        if state.get("seeds") != list(group):
            return None
        if self._base is None:
            probe = build_models(self.job.dataset, self.job.model, [0], torch.device("cpu"))[0]
            self._base = copy.deepcopy(probe).to("meta")
        return Ensemble(copy.deepcopy(self._base), state["params"], state["buffers"], list(group))

    def ensure(self, group: Sequence[int]) -> float:
        """Train ``group`` unless it is saved; its training seconds (whoever trained it)."""
        seconds = self.seconds(group)
        if seconds is not None and (self.dir is None or self._path(group).is_file()):
            return seconds
        start = time.perf_counter()
        job = self.job
        ensemble = train_group(
            job.dataset,
            job.model,
            self.recipe,
            job.scoring,
            group,
            self.batched,
            job.scoring.metric,
            job.progress,
        )
        seconds = time.perf_counter() - start
        if self.dir is None:
            self._memory[tuple(group)] = (ensemble, seconds)
            return seconds
        self.dir.mkdir(parents=True, exist_ok=True)
        state = {
            "seeds": list(group),
            "params": {name: value.cpu() for name, value in ensemble.params.items()},
            "buffers": {name: value.cpu() for name, value in ensemble.buffers.items()},
        }
        path = self._path(group)
        write_once(path, lambda tmp: torch.save(state, tmp))
        write_once(
            path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps({"seconds": seconds}))
        )
        return self.seconds(group) or seconds

    def ensemble(self, seeds: Sequence[int]) -> Ensemble:
        """The trained models of ``seeds`` (within one group), trained first if missing."""
        for group in self.groups():
            if set(seeds) <= set(group):
                self.ensure(group)
                ensemble = self.load(group)
                if ensemble is None:
                    raise DataPruningError(
                        f"the saved scoring models {str(self._path(group))!r} cannot be read; "
                        "delete the file and score again"
                    )
                keep = [group.index(seed) for seed in seeds]
                if keep == list(range(len(group))):
                    return ensemble
                return Ensemble(
                    ensemble.base,
                    {name: value[keep] for name, value in ensemble.params.items()},
                    {name: value[keep] for name, value in ensemble.buffers.items()},
                    list(seeds),
                )
        raise ValueError(f"seeds {list(seeds)} span several groups")


def prepare_models(job: MetricJob, store: ModelStore | None = None) -> float:
    """Train and save the scoring models of every seed group a shard will read.

    With ``job.seeds`` only the groups holding those seeds (one fan-out cell each). Returns the training seconds of
    the groups prepared (recorded by whichever worker trained them).
    """
    store = store or ModelStore(job)
    total = 0.0
    for group in store.groups():
        if job.seeds is None or set(group) & job.seeds:
            total += store.ensure(group)
    return total


def score_with_models(
    metric: str,
    scorer: EnsembleScorer,
    job: MetricJob,
    extra_params: dict[str, Any] | None = None,
) -> Scores:
    """Train scoring models per seed (batched or not), then score each with ``scorer``.

    With ``job.shard`` the groups are trained once for all shards (or read from
    ``job.work_dir``, :class:`ModelStore`) and only the shard's rows are scored.
    """
    dataset = job.dataset
    rows = job.rows()
    recipe = _recipe(job)
    store = ModelStore(job, recipe) if job.shard is not None else None
    prepare_seconds = 0.0
    if store is not None:
        # A shard reads every group.
        prepare_seconds = prepare_models(dataclasses.replace(job, seeds=None), store)

    def compute(chunk: list[int], recipe: TrainConfig, batched: bool) -> np.ndarray:
        # A streaming set: a lazy view of the shard's rows, read in batches.
        x = as_rows(dataset.x_train[rows.start : rows.stop], recipe.device)
        y = torch.as_tensor(dataset.y_train[rows.start : rows.stop], device=recipe.device)
        if store is None:
            ensemble = train_group(
                dataset, job.model, recipe, job.scoring, chunk, batched, metric, job.progress
            )
            with torch.no_grad():
                return scorer(ensemble, x, y).cpu().numpy()
        # A resumed shard's missing seeds may straddle the saved groups: score per group.
        out = []
        for group in store.groups():
            seeds = [seed for seed in chunk if seed in group]
            if seeds:
                with torch.no_grad():
                    out.append(scorer(store.ensemble(seeds), x, y).cpu().numpy())
        return np.concatenate(out)

    return score_seed_groups(metric, compute, job, extra_params, prepare_seconds, recipe)


def train_group(
    dataset: Dataset,
    model_cfg: ModelSpec,
    train_cfg: TrainConfig,
    scoring: ScoringConfig,
    seeds: Sequence[int],
    batched: bool,
    desc: str,
    progress: bool | None,
) -> Ensemble:
    """The scoring models of ``seeds``, trained as one ensemble or one by one and stacked."""
    epochs = scoring.epochs
    if batched:
        return train_ensemble(
            dataset,
            model_cfg,
            train_cfg,
            seeds,
            epochs,
            desc=desc,
            threads=ensemble_threads(scoring.ensemble_threads, len(seeds)),
            progress=progress,
        )
    # One after another through the training loop; stacked afterwards so that
    # both paths score through the same code.
    from torch.func import stack_module_state

    from datapruning.train.loop import train

    models = []
    for seed in seeds:
        cfg = derive(train_cfg, seed=seed)
        models.append(train(dataset, user.per_seed(model_cfg), cfg, progress=progress).model)
    params, buffers = stack_module_state(models)
    for value in params.values():
        value.requires_grad_(False)
    return Ensemble(copy.deepcopy(models[0]).to("meta"), params, buffers, list(seeds))
