"""The ``datapruning`` command line.

Errors a user can fix print one line on stderr and exit with status 2; heavy
modules (torch, prefect) are imported inside the commands so ``--help`` is quick.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.exceptions import TyperException

from datapruning.errors import DataPruningError, Interrupted
from datapruning.scoring.registry import METRICS

if TYPE_CHECKING:
    from datapruning.config import PipelineConfig

app = typer.Typer(
    name="datapruning",
    help="Score a training set, keep a subset, train on it sooner, and report time-to-accuracy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value, e.g. --set train.epochs=10 (repeatable)."),
]

DatasetOption = Annotated[
    str | None,
    typer.Option(
        help="Dataset, see `datapruning datasets`; file sources take a location: npz:PATH "
        "(default: the config's, else mnist1d)."
    ),
]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet",
        help="No progress on stderr: neither the bar (a terminal) nor a line per epoch (a log).",
    ),
]
RootOption = Annotated[
    Path | None,
    typer.Option(help="Folder of a cifar10, cifar100 or imagefolder dataset."),
]


def _option_overrides(values: dict[str, object]) -> list[str]:
    """``key=value`` config overrides for the options given (not None).

    Values are written as JSON, which the YAML override parser reads back
    exactly, so paths and names with colons or spaces stay strings.
    """
    return [
        f"{key}={json.dumps(str(value) if isinstance(value, Path) else value)}"
        for key, value in values.items()
        if value is not None
    ]


def _dataset_overrides(dataset: str | None, root: Path | None) -> list[str]:
    """Config overrides for --dataset and --root; unknown names fail before any work."""
    from datapruning.data.sources import get_source

    if dataset is not None:
        get_source(dataset)
    return _option_overrides({"dataset.name": dataset, "dataset.params.root": root})


@app.command()
def datasets() -> None:
    """List the registered datasets and the model each trains when the config names none."""
    from datapruning.data.sources import IMAGE_MODEL, IMAGE_WIDTH_CPU, SOURCES

    width = max(len(source.default_model) for source in SOURCES.values()) + 1
    typer.echo(f"{'dataset':12s} {'default model':{width}s} description")
    for source in SOURCES.values():
        typer.echo(f"{source.name:12s} {source.default_model:{width}s} {source.description}")
    typer.echo(
        f"\nA config's model.name overrides the default. {IMAGE_MODEL} at width 64 has 11.2 M "
        f"parameters and takes about an hour a CPU epoch of 50,000 32x32 images; at width "
        f"{IMAGE_WIDTH_CPU} (the default when train.device is cpu) 176 k and about 2.5 min. "
        "Choose with --set model.params.width=16, or --set model.name=mlp."
    )


_METRIC_HELP = "Pruning metric (default: the config's, else el2n): " + "; ".join(
    f"{name}: {metric.help}" for name, metric in METRICS.items()
)


@app.command()
def convert(
    out: Annotated[Path, typer.Option(help="The .beton file to write (plus OUT.json metadata).")],
    dataset: DatasetOption = None,
    root: RootOption = None,
    image_mode: Annotated[
        str, typer.Option(help="Images: raw (exact), jpg (smaller) or ndarray (float32).")
    ] = "raw",
    config: Annotated[
        Path | None, typer.Option(help="Take the dataset section from this config.")
    ] = None,
    set_: SetOption = None,
) -> None:
    """Write a dataset's training split to an FFCV .beton for `train.loader: ffcv`."""
    from datapruning._io import check_output_path
    from datapruning.data.beton import to_beton
    from datapruning.data.sources import load_dataset

    overrides = list(set_ or []) + _dataset_overrides(dataset, root)
    if image_mode not in ("raw", "jpg", "ndarray"):
        raise DataPruningError(f"--image-mode {image_mode!r} must be one of: raw, jpg, ndarray")
    cfg = _config(config, overrides)
    check_output_path(out)
    data = load_dataset(cfg.dataset.name, cfg.dataset.params)
    to_beton(data, out, image_mode=image_mode)  # type: ignore[arg-type]
    typer.echo(
        f"wrote {data.num_train} {data.name} training examples ({data.fingerprint}) -> {out}"
    )


@app.command()
def score(
    metric: Annotated[str | None, typer.Option(help=_METRIC_HELP)] = None,
    dataset: DatasetOption = None,
    root: RootOption = None,
    out: Annotated[Path, typer.Option(help="Parquet file to write the scores to.")] = Path(
        "scores.parquet"
    ),
    config: Annotated[
        Path | None,
        typer.Option(help="Take dataset, model, training and scoring settings from this config."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Scoring model: sets scoring.model.name when the config has a scoring.model "
            "(a proxy), else model.name (default: the dataset's)."
        ),
    ] = None,
    seeds: Annotated[int | None, typer.Option(help="Number of scoring models to average.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs each scoring model trains.")] = None,
    embeddings: Annotated[
        Path | None,
        typer.Option(
            help="proto: cluster these embeddings (.npy, one row per example); "
            "scoring.params.proto.embeddings."
        ),
    ] = None,
    k: Annotated[
        int | None, typer.Option(help="proto: number of clusters (default: number of classes).")
    ] = None,
    grand_layer: Annotated[
        str | None, typer.Option(help="grand: gradient over 'all' parameters or the 'last' layer.")
    ] = None,
    batched: Annotated[
        bool | None,
        typer.Option(
            "--batched/--sequential", help="Train the scoring models at once or one by one."
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            help="Score only shard I of N (I/N, counting from 1: rows (I-1)*len/N to I*len/N) "
            "into OUT.parts/shard-I-of-N.parquet; el2n, grand, proto. Trained models or "
            "centroids are shared through OUT.parts/. Then run the same command with --merge."
        ),
    ] = None,
    merge: Annotated[
        bool,
        typer.Option(
            "--merge", help="Join the shards in OUT.parts/ into OUT (a missing shard is an error)."
        ),
    ] = False,
    prepare: Annotated[
        bool,
        typer.Option(
            "--prepare",
            help="Only compute what every shard reads (the trained seed groups, or proto's "
            "encoder and centroids) into OUT.parts/, so parallel shards do not each compute it.",
        ),
    ] = False,
    set_: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Score every training example with a pruning metric and save the scores as parquet.

    Finished seeds are kept in OUT.parts/ until the scores are written, so a rerun
    of an interrupted (or killed) command computes only the missing ones. With
    --shard I/N each command scores one block of rows; --merge writes OUT from them.
    """
    from datapruning._io import check_output_path
    from datapruning.scoring import score as score_with
    from datapruning.scoring._common import Shard
    from datapruning.scoring.registry import check_shardable, get_metric

    # Options given on the command line override the config; unknown names fail
    # here, before any work.
    if metric is not None:
        get_metric(metric)
    if sum([shard is not None, merge, prepare]) > 1:
        raise DataPruningError("give one of --shard, --merge and --prepare")
    one_shard = Shard.parse(shard) if shard is not None else None
    overrides = [
        *(set_ or []),
        *_dataset_overrides(dataset, root),
        *_option_overrides(
            {
                "scoring.metric": metric,
                "model.name": model,
                "scoring.seeds": seeds,
                "scoring.epochs": epochs,
                "scoring.params.proto.embeddings": embeddings,
                "scoring.params.proto.k": k,
                "scoring.params.grand.layer": grand_layer,
                "scoring.batched": batched,
            }
        ),
    ]
    cfg = _config(config, overrides)
    if model is not None and cfg.scoring.model is not None:
        # The config's proxy scores, so --model names the proxy, not the student.
        cfg = _config(config, [*overrides, *_option_overrides({"scoring.model.name": model})])
    check_output_path(out)  # before minutes of work, not after
    if one_shard is not None or prepare:
        check_shardable(cfg.scoring.metric)

    from datapruning.data.sources import load_dataset

    data = load_dataset(cfg.dataset.name, cfg.dataset.params)
    parts = out.with_name(out.name + ".parts")
    if merge:
        _merge_shards(parts, out, cfg.scoring.metric, data.fingerprint)
        return
    if one_shard is not None:
        one_shard.rows(data.num_train)  # refuses more shards than examples, before work
    progress = False if quiet else None  # None: a bar on a terminal, else a line per epoch
    if prepare:
        from datapruning.scoring import prepare as prepare_with

        seconds = prepare_with(
            data, None, cfg.scoring, cfg.model, cfg.train, work_dir=parts, progress=progress
        )
        typer.echo(
            f"prepared the shards of {cfg.scoring.metric} on {data.name} ({seconds:.1f} s) "
            f"in {parts}; now run --shard I/N for every I"
        )
        return
    if one_shard is not None:
        _score_shard(data, cfg, one_shard, parts, progress)
        return
    scores = score_with(
        data, None, cfg.scoring, cfg.model, cfg.train, work_dir=parts, progress=progress
    )
    scores.save(out)
    shutil.rmtree(parts, ignore_errors=True)
    reused = scores.metadata.get("reused_seeds") or []
    resumed = f", {len(reused)} finished seeds reused from {parts}" if reused else ""
    typer.echo(
        f"wrote {len(scores)} {cfg.scoring.metric} scores for {data.name} "
        f"({scores.metadata['seconds']:.1f} s{resumed}) to {out}"
    )


def _score_shard(
    data: Any, cfg: PipelineConfig, shard: Any, parts: Path, progress: bool | None
) -> None:
    from datapruning.scoring import score as score_with
    from datapruning.scoring._common import Shard

    parts.mkdir(exist_ok=True)
    scores = score_with(
        data, None, cfg.scoring, cfg.model, cfg.train, work_dir=parts, shard=shard,
        progress=progress,
    )  # fmt: skip
    path = scores.save(parts / shard.file_name)
    rows = scores.metadata["shard"]["rows"]
    missing = [
        number
        for number in range(1, shard.count + 1)
        if not (parts / Shard(number, shard.count).file_name).is_file()
    ]
    then = (
        f"{len(missing)} of {shard.count} shards to go"
        if missing
        else f"all {shard.count} shards are done: run the same command with --merge"
    )
    typer.echo(
        f"wrote {cfg.scoring.metric} scores of shard {shard} (rows {rows[0]}..{rows[1] - 1}) "
        f"for {data.name} to {path}; {then}"
    )


def _merge_shards(parts: Path, out: Path, metric: str, fingerprint: str) -> None:
    from datapruning.scoring._common import load_shards, merge_shards

    shards = load_shards(parts, fingerprint)
    found = shards[0].metadata.get("metric")
    if found != metric:
        raise DataPruningError(
            f"the shards in {str(parts)!r} hold {found} scores, not {metric}; "
            f"merge with --metric {found}"
        )
    scores = merge_shards(shards)
    scores.save(out)
    shutil.rmtree(parts, ignore_errors=True)
    typer.echo(
        f"merged {len(shards)} shards into {len(scores)} {metric} scores "
        f"({scores.metadata['seconds']:.1f} s in all) -> {out}"
    )


@app.command("select")
def select_(
    scores: Annotated[Path, typer.Option(help="Scores parquet written by `datapruning score`.")],
    keep: Annotated[float, typer.Option(help="Fraction of the training set to keep, in (0, 1].")],
    out: Annotated[Path, typer.Option(help="Where to write the kept indices (.npy).")],
    strategy: Annotated[
        str,
        typer.Option(
            help="hard (highest scores), easy (lowest), random, balanced (hardest per class), "
            "ccs (coverage over score bins) or auto (hard if data is abundant, else easy)."
        ),
    ] = "hard",
    seed: Annotated[int, typer.Option(help="Seed of the random and ccs strategies.")] = 0,
    offset: Annotated[
        float, typer.Option(help="ccs: fraction of the hardest examples dropped first.")
    ] = 0.0,
    bins: Annotated[int, typer.Option(help="ccs: number of equal-width score bins.")] = 50,
    dataset: Annotated[
        str | None,
        typer.Option(help="Refuse the scores unless they belong to this dataset (as for `score`)."),
    ] = None,
    root: RootOption = None,
    set_: SetOption = None,
) -> None:
    """Keep a fraction of the training set by score and write the indices as .npy.

    Beside OUT goes OUT.json: the scores file, its metric and scoring seconds, and the
    strategy applied (what auto chose), which `datapruning train --indices OUT` reads.
    """
    from datapruning._io import check_output_path, write_json, write_npy
    from datapruning.scores import Scores, selection_path, selection_record

    check_output_path(out)
    fingerprint = None
    if dataset is not None:
        from datapruning.data.sources import load_dataset

        cfg = _config(None, [*(set_ or []), *_dataset_overrides(dataset, root)])
        fingerprint = load_dataset(cfg.dataset.name, cfg.dataset.params).fingerprint
    table = Scores.load(scores, fingerprint=fingerprint)
    indices = table.select(keep, strategy, seed, offset=offset, bins=bins)
    record = selection_record(
        table, scores, len(indices), keep, strategy, seed, offset=offset, bins=bins
    )
    write_npy(out, indices)
    write_json(selection_path(out), record)
    applied = record["applied_strategy"]
    chose = f"auto chose {applied}" if strategy == "auto" else strategy
    typer.echo(
        f"kept {len(indices)} of {len(table)} examples ({chose}) -> {out} "
        f"(provenance: {selection_path(out)})"
    )


@app.command("train")
def train_(
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML).")],
    out: Annotated[
        Path,
        typer.Option(
            help="Run directory (created) for metrics.jsonl, summary.json, checkpoint.pt."
        ),
    ] = Path("runs/train"),
    indices: Annotated[
        Path | None, typer.Option(help="Train only on these indices (.npy from `select`).")
    ] = None,
    teacher: Annotated[
        Path | None,
        typer.Option(
            help="Distil from this checkpoint (run dir or .pt) with the config's kd settings."
        ),
    ] = None,
    set_: SetOption = None,
    force: Annotated[
        bool,
        typer.Option(help="Replace a finished run in --out that was trained with other settings."),
    ] = False,
    nproc: Annotated[
        int | None,
        typer.Option(
            help="Train on this many processes (DDP through torchrun; gloo on CPU, NCCL on "
            "CUDA): sets train.nproc. Each takes batch_size / nproc of every batch."
        ),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Train one model with the config's dataset, model, train and kd sections.

    The data is the config's train.data (full, subset or rs2) unless --indices
    is given; KD runs when --teacher or kd.teacher / kd.teacher_logits is set.
    With train.checkpoint_every, rerunning the same command after a crash
    continues the run from its last resume checkpoint. A finished run in --out
    with the same settings is kept; one with other settings is refused unless --force.
    """
    from datapruning._io import read_indices
    from datapruning.scores import check_selection, read_selection
    from datapruning.train import distributed

    if nproc is not None:
        from datapruning.train.launch import check_nproc

        check_nproc(nproc)
        set_ = [*(set_ or []), f"train.nproc={nproc}"]
    cfg = _config(config, set_)
    if cfg.train.nproc > 1 and not distributed.launched():
        from datapruning.train.launch import launch

        # The same command in train.nproc processes; they exit as it does.
        raise typer.Exit(launch(cfg.train.nproc, sys.argv[1:], cfg.train.threads))
    kept = read_indices(indices) if indices is not None else None
    # `select` leaves its provenance beside the indices: the scoring is charged to this run.
    selection = read_selection(indices) if indices is not None else None
    if out.exists() and not out.is_dir():
        raise DataPruningError(f"--out {str(out)!r} is a file; give a run directory")

    from datapruning.data.sources import load_dataset
    from datapruning.train.loop import train_run
    from datapruning.train.run import resolve_run

    data = load_dataset(cfg.dataset.name, cfg.dataset.params)
    if selection is not None:
        assert indices is not None
        check_selection(selection, indices, data.fingerprint)
    run = resolve_run(
        data, cfg.model, cfg.train, indices=kept, teacher=teacher, kd=cfg.kd, run_dir=out,
        progress=False if quiet else None,  # None: a bar on a terminal, else a line per epoch
    )  # fmt: skip
    if not _replaces_finished_run(run, out, force):
        return
    teacher_seconds = _teacher_seconds(Path(run.teacher)) if run.teacher is not None else None
    scoring_seconds = selection["scoring_seconds"] if selection is not None else None
    extra = {"selection": selection} if selection is not None else None
    s = train_run(run, teacher_seconds, scoring_seconds, extra).summary
    if not run.world.writes:  # rank 0 says how the run went
        return
    resumed = f" (resumed at step {s['resumed_from_step']})" if s["resumed_from_step"] else ""
    typer.echo(
        f"{s['final_test_acc']:.1%} test accuracy (best {s['best_test_acc']:.1%}) after {s['steps']} steps{resumed}, "
        f"{s['train_seconds']:.1f} s training + {s['eval_seconds']:.1f} s evaluation -> {out}"
    )
    if selection is not None:
        typer.echo(
            f"charged {s['scoring_seconds']:.1f} s of {selection['metric']} scoring "
            f"({selection['applied_strategy']} {selection['kept']} of {selection['of']}, "
            f"from {selection['scores']})"
        )


def _check_experiment(cfg: PipelineConfig) -> None:
    """Load the experiment's dataset and build its model once, so a missing or bad data file,
    or a model that cannot take the data, is one line before the pipeline starts rather than
    a failed cell per run after it."""
    from datapruning.config import ModelConfig
    from datapruning.data.sources import load_dataset
    from datapruning.models import build_model
    from datapruning.user import resolve_model

    if cfg.output_dir.exists() and not cfg.output_dir.is_dir():
        raise DataPruningError(f"output_dir {str(cfg.output_dir)!r} is a file; give a directory")
    data = load_dataset(cfg.dataset.name, cfg.dataset.params)
    model = resolve_model(cfg.model, data, cfg.train.device)
    assert isinstance(model, ModelConfig) and model.name is not None
    build_model(model.name, data.input_shape, data.num_classes, **model.params)


def _replaces_finished_run(run: Any, out: Path, force: bool) -> bool:
    """Whether to train into ``out``: not over a finished run of the same settings (kept),
    nor over one of other settings unless ``force`` (which says what it replaces)."""
    from datapruning.train.finished import finished_summary, first_difference

    try:
        finished = finished_summary(out)
    except DataPruningError:
        if not force:
            raise
        finished = {}
    if finished is None:
        return True
    if finished.get("config_hash") == run.config_hash:
        typer.echo(
            f"{out} holds this run, finished: {finished['final_test_acc']:.1%} test accuracy "
            f"after {finished['steps']} steps; nothing retrained (remove it to train again)"
        )
        return False
    difference = first_difference(finished, run) if finished else "its summary is unreadable"
    if not force:
        raise DataPruningError(
            f"{out} holds a finished run with other settings ({difference}); use another "
            "--out, or --force to replace it"
        )
    typer.echo(f"replacing the finished run in {out} ({difference})", err=True)
    return True


def _teacher_seconds(teacher: Path) -> float | None:
    """The teacher's training seconds from its run's summary.json, when there is one."""
    import json

    run = teacher if teacher.is_dir() else teacher.parent
    try:
        return float(json.loads((run / "summary.json").read_text())["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@app.command()
def run(
    config: Annotated[
        Path, typer.Argument(help="Experiment config (YAML), e.g. configs/quickstart.yaml.")
    ],
    runner: Annotated[
        str,
        typer.Option(
            help="Where cells run: sequential (one after another here), processes "
            "(a local process pool) or dask (a local cluster, or --dask-address)."
        ),
    ] = "sequential",
    dask_address: Annotated[
        str | None,
        typer.Option(help="An existing Dask scheduler, e.g. tcp://HOST:8786 (--runner dask)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes of a local pool or cluster (default: one per core)."),
    ] = None,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Recompute every run and score, reuse nothing.")
    ] = False,
    retries: Annotated[
        int, typer.Option(help="Retries of a cell after a transient error (I/O, lost worker).")
    ] = 2,
    set_: SetOption = None,
) -> None:
    """Run the pipeline (teachers, scores, students, report) as a Prefect flow.

    A config with a `sweep` section runs the sweep flow: every dataset x model,
    metric and sparsity target it lists. Finished runs and scores made with the
    same settings and library source are reused; --refresh recomputes them.
    """
    cfg = _config(config, set_)
    from datapruning.flows.runners import check_runner
    from datapruning.pipeline.accounting import describe_tally
    from datapruning.pipeline.grid import experiments, is_sweep

    check_runner(runner, dask_address, workers)
    if retries < 0:
        raise DataPruningError(f"--retries {retries} must be at least 0")
    # Bad grids, datasets and models fail here, before the server starts or a file is written.
    for experiment in experiments(cfg):
        _check_experiment(experiment.cfg)
    if dask_address is not None:
        from datapruning.flows.runners import check_scheduler

        check_scheduler(dask_address, cfg.run_root)
    # The temporary server's telemetry only fails (loudly) on offline machines.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from datapruning.flows.pipeline import pipeline, sweep
    from datapruning.flows.runners import prefect_api

    flow = sweep if is_sweep(cfg) else pipeline
    with prefect_api():
        # The config as loaded here: the flow and its cells read it, not the file again.
        result = flow(
            cfg,
            runner=runner,
            dask_address=dask_address,
            workers=workers,
            refresh=refresh,
            retries=retries,
        )
    for path in result["reports"]:
        typer.echo(Path(path).read_text())
        typer.echo(f"report written to {path}")
    for record in result["records"]:
        if record["status"] == "failed":
            typer.echo(f"failed: {record['run']}: {record['error']}", err=True)
    typer.echo(describe_tally(result["counts"]))


@app.command()
def deploy(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Deployments to register (default: all in the file)."),
    ] = None,
    file: Annotated[
        Path, typer.Option("--file", help="The deployments file (prefect.yaml).")
    ] = Path("prefect.yaml"),
    pool: Annotated[
        str | None,
        typer.Option(help="Work pool to deploy onto (default: each deployment's, in the file)."),
    ] = None,
    cron: Annotated[
        str | None, typer.Option(help='A schedule for the deployments, e.g. "0 3 * * *".')
    ] = None,
) -> None:
    """Register the flows' deployments (prefect.yaml) with the Prefect server.

    Runs `prefect deploy` on the file, with the checkout's directory as the
    workers' working directory (it must be on a filesystem every worker sees).
    The server is PREFECT_API_URL's; the work pool must exist
    (`prefect work-pool create NAME --type process`).
    """
    import subprocess

    from datapruning.pipeline.deploy import deploy_command, deployment_names, load_deployments

    spec = load_deployments(file)
    available = deployment_names(spec)
    chosen = list(names or available)
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise DataPruningError(
            f"no deployment named {unknown[0]!r} in {str(file)!r}; choose from: {', '.join(available)}"
        )
    command, env = deploy_command(file, chosen, pool=pool, cron=cron, spec=spec)
    done = subprocess.run(command, cwd=file.resolve().parent, env=env, check=False)
    if done.returncode != 0:
        raise DataPruningError(
            f"prefect deploy failed (exit {done.returncode}); see its output above"
        )
    typer.echo(f"registered {len(chosen)} deployments: {', '.join(chosen)}")


@app.command()
def report(
    runs: Annotated[
        Path,
        typer.Argument(
            help="Directory of finished runs: one experiment, or a study whose "
            "subdirectories are experiments."
        ),
    ],
    target_drop: Annotated[
        float, typer.Option(help="Target = full-data mean final accuracy minus this.")
    ] = 0.01,
    target: Annotated[
        list[str] | None,
        typer.Option(
            help="Extra target, one table each: an accuracy like 0.9, or a share of "
            "full data's accuracy like 0.99r (repeatable)."
        ),
    ] = None,
) -> None:
    """Write report.md, report.html and the plots (PNG) from finished runs."""
    from datapruning.report import HTML_NAME, write_report

    if not 0 <= target_drop < 1:
        raise DataPruningError(f"--target-drop {target_drop} must lie in [0, 1)")
    command = ["datapruning", "report", str(runs), "--target-drop", f"{target_drop:g}"]
    for extra in target or []:
        command += ["--target", extra]
    path, text = write_report(runs, target_drop, targets=target or (), command=shlex.join(command))
    typer.echo(text)
    typer.echo(f"report written to {path} and {path.with_name(HTML_NAME)}")


def _config(path: Path | None, overrides: list[str] | None) -> PipelineConfig:
    from datapruning.config import PipelineConfig, apply_override, load_config, parse_config

    if path is not None:
        return load_config(path, overrides)
    raw: dict = {}
    for override in overrides or []:
        apply_override(raw, override)
    return parse_config(raw, source="options") if raw else PipelineConfig()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; user errors become one line on stderr and exit 2.

    One of several processes of a run (torchrun) then leaves their group
    (:func:`_end_process`).
    """
    code = _main(argv)
    _end_process(code)
    return code


def _main(argv: list[str] | None) -> int:
    """The app's run and exit status; user errors become one line on stderr and exit 2.

    A command stopped by SIGINT/SIGTERM at a resume point prints one line with the
    command that continues it and exits 128 + the signal's number (130, 143). Any
    other exception is a bug: it exits 1 with one line naming it and the log file
    that holds its traceback (:func:`_report_crash`).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        # Without standalone mode, typer returns (not raises) the exit code of an
        # interrupted command, e.g. 130 after Ctrl-C.
        code = app(args=args, prog_name="datapruning", standalone_mode=False)
    except DataPruningError as exc:
        from datapruning.train.launch import leave_error

        # A process of `--nproc N` leaves its line to the launcher, which prints the first.
        if not leave_error(str(exc)) and _speaks():
            typer.echo(f"error: {exc}", err=True)
        return 2
    except Interrupted as exc:
        again = shlex.join(["datapruning", *args])
        if _speaks():
            typer.echo(
                f"interrupted by {exc.signal_name}: {exc}; to continue, run: {again}", err=True
            )
        return exc.exit_code
    except TyperException as exc:  # usage errors: unknown option, missing argument, ...
        message = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        if not message.strip():  # no command given: the help text is already shown
            pass
        elif "\n" in message:
            typer.echo(message, err=True)
        else:
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            typer.echo(f"error: {message}{hint}", err=True)
        return getattr(exc, "exit_code", 2)
    except typer.Abort as exc:
        # Click turns an EOFError escaping a command into Abort, as it does Ctrl-C.
        if isinstance(exc.__cause__, EOFError):
            return _report_crash(exc.__cause__, argv)
        code = 130
    except Exception as exc:
        return _report_crash(exc, argv)
    if code == 130:
        typer.echo("aborted", err=True)
    return code if isinstance(code, int) else 0


def _end_process(code: int) -> None:
    """A process of a run on several leaves: after a finished run, together with the
    others (else gloo may abort a process at exit); after an error or an interrupt, at
    once, without the group's teardown. That teardown waits for ranks that may be gone,
    or that a late stop signal ends in it, and torch's destructors can abort a process
    whose peers left (its exit status would then hide the real one)."""
    from datapruning.train.distributed import current, leave

    if not current().distributed:
        return
    if code == 0:
        leave()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _speaks() -> bool:
    """Whether this process prints a run's one-line outcome: with several processes
    (torchrun), rank 0 only, so the line is not repeated once per process."""
    from datapruning.train.distributed import launched

    return not launched() or os.environ.get("RANK") == "0"


def _report_crash(exc: BaseException, argv: list[str] | None) -> int:
    """One line on stderr for an unexpected error, its traceback in a log file
    (:func:`datapruning._crash.crash_line`); exit 1."""
    from datapruning._crash import crash_line
    from datapruning.train.launch import leave_error

    args = list(sys.argv[1:] if argv is None else argv)
    command = f"datapruning {args[0]}" if args else "datapruning"
    line = crash_line(exc, f"datapruning {shlex.join(map(str, args))}", command)
    if not leave_error(line):  # a process of `--nproc N` leaves it to the launcher
        typer.echo(f"error: {line}", err=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
