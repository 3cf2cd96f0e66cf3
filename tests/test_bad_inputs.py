"""The catalogue of bad inputs: every one is a clean, one-line error that changes nothing.

Each case runs one ``datapruning`` command in-process (``datapruning.cli.main``)
on tiny files the tests write, with one thing wrong: a command-line option, a
config field out of its bounds, a file that is missing, empty, truncated,
corrupt or of the wrong kind or schema, data that is wrong (NaN/inf, non-numeric,
labels out of range or not integers, mismatched lengths), or a model that cannot
take the data's shape. For each the test asserts exit status 2, exactly one line
on stderr naming the bad value, no traceback, and that nothing was written:
the test's whole working tree (an existing output file, an existing run
directory, the shared input files) is hashed before and after and must be
byte-for-byte the same. The working tree is also the current directory and the
cache ($DATAPRUNING_CACHE_DIR), so a stray relative output or cache file is caught.

The last tests check the other side: an unexpected exception (a bug) exits 1
with one line naming it and the log file that holds its traceback.

Costs: one tiny npz (60 x 8, 4 classes) and an 8-unit MLP; every case fails before
training, so the file runs in about a minute on a busy 2-core machine.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from runs_helper import write_run

from datapruning.cli import main
from datapruning.train.state import RESUME_FORMAT

NUM_TRAIN_ALL = 60  # examples in data.npz; 20% are held out for test
NUM_CLASSES = 4
FEATURES = 8

CONFIG = """\
name: bad
output_dir: runs
dataset:
  name: "npz:{data}"
model:
  name: mlp
  params: {{hidden: 8}}
train:
  epochs: 1
  batch_size: 16
  targets: [0.5]
scoring:
  seeds: 1
  epochs: 1
students:
  fractions: [0.5]
  strategies: [random]
  kd: [false]
"""


@dataclass(frozen=True)
class Paths:
    """The shared inputs (``assets``, built once) and this test's working tree (``work``)."""

    assets: Path
    work: Path

    @property
    def config(self) -> Path:
        return self.assets / "config.yaml"

    @property
    def data(self) -> Path:
        return self.assets / "data.npz"

    @property
    def out(self) -> Path:
        """An existing output folder holding earlier results."""
        return self.work / "out"

    @property
    def run(self) -> Path:
        """An existing, finished run directory."""
        return self.out / "run"

    @property
    def teacher(self) -> Path:
        return self.assets / "teacher" / "checkpoint.pt"


def _write_npz(path: Path, **arrays: np.ndarray) -> Path:
    with path.open("wb") as handle:
        np.savez(handle, **arrays)
    return path


def _dataset_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM_TRAIN_ALL, FEATURES)).astype(np.float32)
    y = np.arange(NUM_TRAIN_ALL) % NUM_CLASSES
    return {"x": x, "y": y}


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """Valid inputs of every kind, shared by the cases and never changed by them."""
    from datapruning._io import write_npy
    from datapruning.data.sources import load_dataset
    from datapruning.models import build_model
    from datapruning.scores import Scores
    from datapruning.train.checkpoint import save_checkpoint
    from datapruning.train.kd import save_teacher_logits

    root = tmp_path_factory.mktemp("assets")
    _write_npz(root / "data.npz", **_dataset_arrays(0))
    _write_npz(root / "other.npz", **_dataset_arrays(1))
    (root / "config.yaml").write_text(CONFIG.format(data=root / "data.npz"))
    data = load_dataset(f"npz:{root / 'data.npz'}")
    n = data.num_train
    table = pd.DataFrame(
        {"index": np.arange(n), "score": np.linspace(0, 1, n), "label": data.y_train}
    )
    dataset_record = {"name": "npz", "fingerprint": data.fingerprint, "num_classes": NUM_CLASSES}
    Scores(table, {"metric": "el2n", "dataset": dataset_record}).save(root / "scores.parquet")
    write_npy(root / "idx.npy", np.arange(0, n, 2))
    torch.manual_seed(0)
    model = build_model("mlp", data.input_shape, NUM_CLASSES, hidden=8)
    (root / "teacher").mkdir()
    save_checkpoint(
        root / "teacher" / "checkpoint.pt",
        {
            "model": "mlp",
            "model_params": {"hidden": 8},
            "input_shape": list(data.input_shape),
            "num_classes": NUM_CLASSES,
            "dataset_fingerprint": data.fingerprint,
            "state_dict": model.state_dict(),
            "epochs": 1,
            "steps": 1,
        },
    )
    save_teacher_logits(root / "logits.npy", np.zeros((n, NUM_CLASSES), np.float32), data)
    return root


@pytest.fixture
def paths(assets, tmp_path, monkeypatch) -> Paths:
    work = tmp_path / "work"
    p = Paths(assets, work)
    p.out.mkdir(parents=True)
    # What earlier commands left: a scores file, indices, a finished run.
    (p.out / "scores.parquet").write_bytes((assets / "scores.parquet").read_bytes())
    (p.out / "idx.npy").write_bytes((assets / "idx.npy").read_bytes())
    write_run(p.out, "run", [(1.0, 0.5), (2.0, 0.7)], recipe="full")
    (p.run / "checkpoint.pt").write_bytes(p.teacher.read_bytes())
    # Relative outputs and caches land in the hashed tree, never elsewhere.
    monkeypatch.chdir(work)
    monkeypatch.setenv("DATAPRUNING_CACHE_DIR", str(work / "cache"))
    return p


def _tree_hash(*roots: Path) -> dict[str, str]:
    """Every file and folder under ``roots``: path -> content hash ("dir" for folders)."""
    entries = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            key = str(path)
            if path.is_dir():
                entries[key] = "dir"
            else:
                entries[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


# --- helpers that write bad files ------------------------------------------------------


def _bytes(name: str, content: bytes) -> Callable[[Paths], None]:
    def setup(p: Paths) -> None:
        (p.work / name).write_bytes(content)

    return setup


def _shard_file(p: Paths, number: int, count: int) -> None:
    """A shard file left by ``score --shard NUMBER/COUNT`` (its content is never read here)."""
    parts = p.out / "scores.parquet.parts"
    parts.mkdir()
    (parts / f"shard-{number}-of-{count}.parquet").write_bytes(
        (p.assets / "scores.parquet").read_bytes()
    )


def _truncated(source: str, name: str, keep: float = 0.5) -> Callable[[Paths], None]:
    def setup(p: Paths) -> None:
        blob = (p.assets / source).read_bytes()
        (p.work / name).write_bytes(blob[: int(len(blob) * keep)])

    return setup


def _npz(name: str, **overrides: np.ndarray | None) -> Callable[[Paths], None]:
    """data.npz's arrays with some replaced (None: dropped)."""

    def setup(p: Paths) -> None:
        arrays = {**_dataset_arrays(0), **overrides}
        _write_npz(p.work / name, **{k: v for k, v in arrays.items() if v is not None})

    return setup


def _npy(name: str, array: np.ndarray, allow_pickle: bool = False) -> Callable[[Paths], None]:
    def setup(p: Paths) -> None:
        with (p.work / name).open("wb") as handle:
            np.save(handle, array, allow_pickle=allow_pickle)

    return setup


def _scores(name: str, edit: Callable[[pd.DataFrame, dict], None]) -> Callable[[Paths], None]:
    """The valid scores file with its table or metadata edited by ``edit``."""

    def setup(p: Paths) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(p.assets / "scores.parquet")
        frame = table.to_pandas()
        meta = json.loads(table.schema.metadata[b"datapruning"])
        edit(frame, meta)
        out = pa.Table.from_pandas(frame, preserve_index=False)
        if meta is not None:
            out = out.replace_schema_metadata({b"datapruning": json.dumps(meta).encode()})
        pq.write_table(out, p.work / name)

    return setup


def _checkpoint(name: str, edit: Callable[[dict], object]) -> Callable[[Paths], None]:
    """The teacher checkpoint with its dict edited in place by ``edit``."""

    def setup(p: Paths) -> None:
        state = torch.load(p.teacher, weights_only=True)
        edit(state)
        torch.save(state, p.work / name)

    return setup


def _sidecar(name: str, record: dict | str) -> Callable[[Paths], None]:
    """Logits (zeros, the right shape) whose sidecar holds ``record``."""

    def setup(p: Paths) -> None:
        (p.work / name).write_bytes((p.assets / "logits.npy").read_bytes())
        sidecar = p.work / f"{name}.json"
        sidecar.write_text(record if isinstance(record, str) else json.dumps(record))

    return setup


def _beton(record: Callable[[Paths, int], dict | str] | None) -> Callable[[Paths], None]:
    """A beton file with a sidecar made by ``record(paths, beton_size)`` (None: no sidecar)."""

    def setup(p: Paths) -> None:
        beton = p.work / "d.beton"
        beton.write_bytes(b"\0" * 1024)
        if record is not None:
            value = record(p, 1024)
            (p.work / "d.beton.json").write_text(
                value if isinstance(value, str) else json.dumps(value)
            )

    return setup


def _fingerprint(p: Paths) -> str:
    from datapruning.data.sources import load_dataset

    return load_dataset(f"npz:{p.data}").fingerprint


def _cifar(edit: Callable[[Path], None] | None = None) -> Callable[[Paths], None]:
    """A tiny CIFAR-10 folder (4 images per batch), then ``edit(folder)``."""

    def setup(p: Paths) -> None:
        folder = p.work / "cifar" / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batch = {
                b"data": np.zeros((4, 3072), np.uint8),
                b"labels": [0, 1, 2, 3],
            }
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        if edit is not None:
            edit(folder)

    return setup


class _NamesOsSystem:
    """Pickled as a CIFAR batch, it names os.system: the restricted unpickler must refuse it."""

    def __reduce__(self):
        import os

        return (os.system, ("echo should-not-run",))


def _images(edit: Callable[[Path], None] | None = None) -> Callable[[Paths], None]:
    """A tiny image folder (two classes of two 4x4 PNGs), then ``edit(root)``."""

    def setup(p: Paths) -> None:
        from PIL import Image

        root = p.work / "images"
        for cls in ("cat", "dog"):
            (root / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (4, 4), (i * 50, 0, 0)).save(root / cls / f"{i}.png")
        if edit is not None:
            edit(root)

    return setup


def _runs(edit: Callable[[Path], None]) -> Callable[[Paths], None]:
    """An experiment folder with a full-data run and a student, then ``edit(folder)``."""

    def setup(p: Paths) -> None:
        root = p.work / "exp"
        write_run(root, "full-s0", [(1.0, 0.6), (2.0, 0.8)], recipe="full")
        write_run(root, "hard-0.5", [(0.5, 0.5), (1.0, 0.79)], recipe="hard", kept=0.5)
        edit(root)

    return setup


def _resume(state: Callable[[Paths], object]) -> Callable[[Paths], None]:
    def setup(p: Paths) -> None:
        torch.save(state(p), p.run / "resume.pt")

    return setup


def _this_runs_hash(p: Paths) -> str:
    """The config hash `datapruning train CONFIG` computes, so a resume.pt passes that check."""
    from datapruning.config import load_config
    from datapruning.data.sources import load_dataset
    from datapruning.train.run import resolve_run

    cfg = load_config(p.config)
    data = load_dataset(cfg.dataset.name, cfg.dataset.params)
    return resolve_run(data, cfg.model, cfg.train).config_hash


# --- the commands, with the usual valid arguments ----------------------------------------


def _sets(*overrides: str) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


def train(*overrides: str, extra: tuple = ()) -> Callable[[Paths], list]:
    return lambda p: ["train", p.config, "--out", p.run, *extra, *_sets(*overrides)]


def train_on(file: str, *overrides: str) -> Callable[[Paths], list]:
    """``train`` on the dataset ``npz:WORK/file``."""
    return lambda p: [
        "train",
        p.config,
        "--out",
        p.run,
        *_sets(f"dataset.name=npz:{p.work / file}", *overrides),
    ]


def teacher(file: str, *overrides: str) -> Callable[[Paths], list]:
    return lambda p: [
        "train",
        p.config,
        "--out",
        p.run,
        "--teacher",
        p.work / file,
        *_sets(*overrides),
    ]


def score(*args: str, config: bool = True) -> Callable[[Paths], list]:
    return lambda p: [
        "score",
        *(["--config", p.config] if config else []),
        "--out",
        p.out / "scores.parquet",
        *[a.format(work=p.work) for a in args],
    ]


def select(scores: str | None = None, *args: str) -> Callable[[Paths], list]:
    return lambda p: [
        "select",
        "--scores",
        p.work / scores if scores else p.assets / "scores.parquet",
        "--out",
        p.out / "idx.npy",
        "--keep",
        "0.5",
        *[a.format(work=p.work) for a in args],
    ]


def convert(*args: str) -> Callable[[Paths], list]:
    return lambda p: ["convert", "--out", p.out / "d.beton", *[a.format(work=p.work) for a in args]]


def run(*args: str) -> Callable[[Paths], list]:
    return lambda p: ["run", p.config, *args]


def report(folder: str = "exp", *args: str) -> Callable[[Paths], list]:
    return lambda p: ["report", p.work / folder, *args]


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Paths], list]
    # A substring of the one error line: the bad value, key or file.
    match: str | Callable[[Paths], str]
    setup: Callable[[Paths], None] | None = None


def _ones(shape: tuple[int, ...], value: float) -> np.ndarray:
    return np.full(shape, value, np.float32)


N_TRAIN = 48  # data.npz's training split: 60 minus 12 held out


def _edit_json(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _no_metadata(p: Paths) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(p.assets / "scores.parquet").replace_schema_metadata({})
    pq.write_table(table, p.work / "s.parquet")


def _logits_wrong_shape(p: Paths) -> None:
    np.save(p.work / "l.npy", np.zeros((N_TRAIN, 3), np.float32))
    (p.work / "l.npy.json").write_text(
        json.dumps(
            {
                "format": "datapruning-logits/1",
                "dataset_fingerprint": _fingerprint(p),
                "shape": [N_TRAIN, 3],
            }
        )
    )


def _logits_nan(p: Paths) -> None:
    np.save(p.work / "l.npy", np.full((N_TRAIN, NUM_CLASSES), np.nan, np.float32))
    (p.work / "l.npy.json").write_text(
        json.dumps(
            {
                "format": "datapruning-logits/1",
                "dataset_fingerprint": _fingerprint(p),
                "shape": [N_TRAIN, NUM_CLASSES],
            }
        )
    )


CASES = [
    # --- the command line --------------------------------------------------------------
    Case("cli-unknown-command", lambda p: ["prune"], "prune"),
    Case("cli-unknown-option", lambda p: ["train", p.config, "--bogus"], "--bogus"),
    Case("score-unknown-metric", score("--metric", "nope"), "nope"),
    Case("score-unknown-dataset", score("--dataset", "nope", config=False), "nope"),
    Case("score-unknown-model", score("--model", "nope"), "nope"),
    Case(
        "score-out-missing-dir",
        lambda p: ["score", "--out", p.work / "nodir" / "s.parquet"],
        "nodir",
    ),
    Case("score-out-is-dir", lambda p: ["score", "--config", p.config, "--out", p.out], "out"),
    Case("score-seeds-zero", score("--seeds", "0"), "scoring.seeds"),
    Case("score-epochs-negative", score("--epochs", "-2"), "scoring.epochs"),
    Case("score-k-zero", score("--metric", "proto", "--k", "0"), "scoring.params.proto.k"),
    Case("score-grand-layer", score("--grand-layer", "middle"), "middle"),
    Case(
        "score-dataset-location-on-generated",
        score("--dataset", "mnist1d:/x", config=False),
        "mnist1d",
    ),
    Case("score-cifar-without-root", score("--dataset", "cifar10", config=False), "--root"),
    # --- sharded scoring (--shard I/N, 1-based; --merge; --prepare) and scoring.model
    Case("score-shard-zero", score("--shard", "0/2"), "0/2"),
    Case("score-shard-past-count", score("--shard", "3/2"), "3/2"),
    Case("score-shard-not-i-of-n", score("--shard", "half"), "half"),
    Case("score-shard-more-than-examples", score("--shard", "1/49"), "at most 48 shards"),
    Case(
        "score-shard-forgetting",
        score("--metric", "forgetting", "--shard", "1/2"),
        "forgetting",
    ),
    Case("score-shard-random", score("--metric", "random", "--prepare"), "random"),
    Case("score-shard-and-merge", score("--shard", "1/2", "--merge"), "--merge"),
    Case("score-merge-without-shards", score("--merge"), "no shard files"),
    Case(
        "score-merge-missing-shard",
        score("--merge"),
        "shard-1-of-2.parquet",
        lambda p: _shard_file(p, 2, 2),
    ),
    Case("score-shards-zero", score("--set", "scoring.shards=0"), "scoring.shards"),
    Case("score-scoring-model-unknown", score("--set", "scoring.model.name=nope"), "nope"),
    Case("select-keep-zero", select(None, "--keep", "0"), "0.0"),
    Case("select-keep-above-one", select(None, "--keep", "1.5"), "1.5"),
    Case("select-unknown-strategy", select(None, "--strategy", "median"), "median"),
    Case("select-ccs-offset", select(None, "--strategy", "ccs", "--offset", "1"), "offset"),
    Case("select-ccs-bins", select(None, "--strategy", "ccs", "--bins", "0"), "bins 0"),
    Case("select-keep-not-a-number", select(None, "--keep", "half"), "'--keep'"),
    Case(
        "select-other-dataset",
        lambda p: [
            "select",
            "--scores",
            p.assets / "scores.parquet",
            "--keep",
            "0.5",
            "--out",
            p.out / "idx.npy",
            "--dataset",
            f"npz:{p.assets / 'other.npz'}",
        ],
        "not to this one",
    ),
    Case("train-out-is-file", lambda p: ["train", p.config, "--out", p.out / "idx.npy"], "idx.npy"),
    Case("run-unknown-runner", run("--runner", "threads"), "threads"),
    Case("run-negative-retries", run("--retries", "-1"), "-1"),
    Case("run-zero-workers", run("--runner", "processes", "--workers", "0"), "--workers 0"),
    Case("run-dask-address-sequential", run("--dask-address", "tcp://h:1"), "--dask-address"),
    Case(
        "run-train-data-set",
        run("--set", "train.data.mode=rs2", "--set", "train.data.fraction=0.5"),
        "train.data",
    ),
    Case("run-dataset-missing", run("--set", "dataset.name=npz:none.npz"), "none.npz"),
    Case(
        "run-dataset-nan",
        lambda p: ["run", p.config, "--set", f"dataset.name=npz:{p.work / 'd.npz'}"],
        "NaN",
        _npz("d.npz", x=_ones((60, 8), np.nan)),
    ),
    Case(
        "run-model-cannot-take-shape",
        run("--set", "model.name=resnet18", "--set", "model.params={}"),
        "resnet18",
    ),
    Case("run-output-dir-is-a-file", run("--set", "output_dir=out/idx.npy"), "idx.npy"),
    Case("report-missing-dir", report("nothere"), "nothere"),
    Case(
        "report-target-drop", report("exp", "--target-drop", "1.5"), "1.5", _runs(lambda root: None)
    ),
    Case(
        "deploy-missing-file",
        lambda p: ["deploy", "--file", p.work / "prefect.yaml"],
        "prefect.yaml",
    ),
    Case(
        "deploy-unknown-name",
        lambda p: ["deploy", "nope", "--file", Path(__file__).parents[1] / "prefect.yaml"],
        "nope",
    ),
    Case("deploy-not-a-prefect-file", lambda p: ["deploy", "--file", p.config], "deployments"),
    Case("convert-image-mode", convert("--image-mode", "png", "--dataset", "digits"), "png"),
    Case(
        "convert-out-missing-dir",
        lambda p: ["convert", "--dataset", "digits", "--out", p.work / "nodir" / "d.beton"],
        "nodir",
    ),
    # --- config files and --set ------------------------------------------------------------
    Case("config-missing", lambda p: ["train", p.work / "none.yaml", "--out", p.run], "none.yaml"),
    Case("config-empty-file-is-a-dir", lambda p: ["train", p.out, "--out", p.run], "out"),
    Case(
        "config-not-yaml",
        lambda p: ["train", p.work / "c.yaml", "--out", p.run],
        "not valid YAML at line 2",
        _bytes("c.yaml", b"train: [epochs: 1\n"),
    ),
    Case(
        "config-binary",
        lambda p: ["train", p.work / "c.yaml", "--out", p.run],
        "c.yaml",
        _bytes("c.yaml", b"\xff\xfe\x00\x81binary"),
    ),
    Case(
        "config-a-list",
        lambda p: ["train", p.work / "c.yaml", "--out", p.run],
        "mapping",
        _bytes("c.yaml", b"- train\n- model\n"),
    ),
    Case("config-section-a-scalar", train("train=5"), "train"),
    Case("config-unknown-key", train("train.epoch=3"), "train.epoch"),
    Case("config-override-no-equals", train("train.epochs"), "train.epochs"),
    Case("config-override-bad-yaml", train("train.epochs=[1"), "train.epochs=[1"),
    Case("config-override-into-scalar", train("train.epochs.max=3"), "epochs"),
    Case("config-name-with-slash", train("name=a/b"), "name"),
    Case("lr-zero", train("train.lr=0"), "train.lr"),
    Case("lr-negative", train("train.lr=-0.1"), "train.lr"),
    Case("lr-inf", train("train.lr=.inf"), "train.lr"),
    Case("lr-nan", train("train.lr=.nan"), "train.lr"),
    Case("lr-text", train("train.lr=fast"), "fast"),
    Case("batch-size-zero", train("train.batch_size=0"), "train.batch_size"),
    Case("batch-size-fraction", train("train.batch_size=1.5"), "train.batch_size"),
    Case("epochs-zero", train("train.epochs=0"), "train.epochs"),
    Case("epochs-bool", train("train.epochs=true"), "train.epochs"),
    Case("steps-zero", train("train.steps=0"), "train.steps"),
    Case("steps-within-warmup", train("train.steps=2", "train.warmup_epochs=5"), "warm"),
    Case("warmup-negative", train("train.warmup_epochs=-1"), "train.warmup_epochs"),
    Case("momentum-one", train("train.momentum=1"), "train.momentum"),
    Case("weight-decay-negative", train("train.weight_decay=-1"), "train.weight_decay"),
    Case("betas-out-of-range", train("train.optimizer=adamw", "train.betas=[0.9, 1.5]"), "1.5"),
    Case("eps-zero", train("train.eps=0"), "train.eps"),
    Case("eval-every-negative", train("train.eval_every=-1"), "train.eval_every"),
    Case("optimizer-unknown", train("train.optimizer=adam"), "adam"),
    Case("threads-zero", train("train.threads=0"), "train.threads"),
    Case("checkpoint-every-negative", train("train.checkpoint_every=-5"), "checkpoint_every"),
    Case("seed-text", train("train.seed=abc"), "train.seed"),
    Case("target-above-one", train("train.targets=[1.5]"), "1.5"),
    Case("target-text", train("train.targets=[high]"), "high"),
    Case("target-relative-no-reference", train("train.targets=[0.99r]"), "reference"),
    Case("reference-missing", train("train.targets=[0.99r]", "train.reference=nowhere"), "nowhere"),
    Case("device-unknown", train("train.device=gpu"), "gpu"),
    Case("device-cuda-absent", train("train.device=cuda:7"), "cuda"),
    Case("precision-unknown", train("train.precision=fp8"), "fp8"),
    Case("precision-fp16-on-cpu", train("train.precision=fp16"), "fp16"),
    Case("channels-last-without-2d-conv", train("train.channels_last=true"), "channels"),
    Case("loader-unknown", train("train.loader=disk"), "disk"),
    Case("data-mode-unknown", train("train.data.mode=half"), "half"),
    Case("data-subset-without-source", train("train.data.mode=subset"), "subset"),
    Case("data-rs2-without-fraction", train("train.data.mode=rs2"), "fraction"),
    Case("data-rs2-fraction-zero", train("train.data.mode=rs2", "train.data.fraction=0"), "0"),
    Case("data-rs2-fraction-two", train("train.data.mode=rs2", "train.data.fraction=2"), "2"),
    # --- dynamic pruning and augmentation (landed after the first catalogue) -----------------
    Case("infobatch-prune-one", train("train.data.mode=infobatch", "train.data.prune=1"), "1"),
    Case(
        "infobatch-anneal-negative",
        train("train.data.mode=infobatch", "train.data.anneal=-0.5"),
        "-0.5",
    ),
    Case("infobatch-with-steps", train("train.data.mode=infobatch", "train.steps=5"), "steps"),
    Case("online-keep-zero", train("train.data.mode=online", "train.data.keep=0"), "0"),
    Case(
        "online-proxy-unknown-model",
        train("train.data.mode=online", "train.data.keep=0.5", "train.data.proxy.name=nosuch"),
        "nosuch",
    ),
    Case("proxy-without-online", train("train.data.proxy.name=mlp"), "proxy"),
    Case(
        "proxy-every-without-proxy",
        train("train.data.mode=online", "train.data.keep=0.5", "train.data.proxy_every=2"),
        "proxy_every",
    ),
    Case(
        "online-proxy-unknown-option",
        train("train.data.mode=online", "train.data.keep=0.5", "train.data.proxy.params.bogus=1"),
        "bogus",
    ),
    Case("augment-unknown", train("train.augment=rotate"), "rotate"),
    Case("data-keep-without-scores", train("train.data.keep=0.5"), "keep"),
    Case("sparsity-target-one", train("train.sparsity.target=1.0"), "1.0"),
    Case("sparsity-target-negative", train("train.sparsity.target=-0.1"), "-0.1"),
    Case(
        "sparsity-initial-above-target",
        train("train.sparsity.target=0.5", "train.sparsity.initial=0.8"),
        "0.8",
    ),
    Case("sparsity-n-not-below-m", train("train.sparsity.scope=nm", "train.sparsity.n=4"), "4:4"),
    Case(
        "sparsity-m-not-dividing",
        train(
            "train.sparsity.scope=nm",
            "train.sparsity.m=3",
            "train.sparsity.n=1",
            "train.sparsity.prune_first_last=true",
        ),
        "3",
    ),
    Case(
        "sparsity-bad-regex",
        train("train.sparsity.target=0.5", "train.sparsity.include=['(']"),
        "'('",
    ),
    Case(
        "sparsity-include-matches-nothing",
        train("train.sparsity.target=0.5", "train.sparsity.include=[nothing]"),
        "sparsity.include",
    ),
    Case(
        "sparsity-end-past-run",
        train("train.sparsity.target=0.5", "train.sparsity.end=100000"),
        "100000",
    ),
    Case(
        "sparsity-rewind-after-end",
        train("train.sparsity.target=0.5", "train.sparsity.rewind=0.9"),
        "rewind",
    ),
    Case(
        "sparsity-dynamic-global",
        train("train.sparsity.scope=global", "train.sparsity.mode=dynamic"),
        "needs scope nm",
    ),
    Case("kd-alpha-above-one", train("kd.alpha=1.5", extra=()), "1.5"),
    Case("kd-alpha-text", train("kd.alpha=most"), "most"),
    Case("kd-temperature-zero", train("kd.temperature=0"), "kd.temperature"),
    Case("kd-two-teachers", train("kd.teacher=a", "kd.teacher_logits=b.npy"), "not both"),
    Case("scoring-ensemble-size-zero", train("scoring.ensemble_size=0"), "ensemble_size"),
    Case("scoring-source-unknown", train("scoring.source=teacher"), "scoring.source"),
    Case("students-empty-fractions", run("--set", "students.fractions=[]"), "fractions"),
    Case("students-fraction-zero", run("--set", "students.fractions=[0]"), "0"),
    Case("students-unknown-strategy", run("--set", "students.strategies=[median]"), "median"),
    Case("sweep-sparsity-one", run("--set", "sweep.sparsity=[1.0]"), "1.0"),
    Case("report-target-drop-config", train("report.target_drop=2"), "target_drop"),
    Case("model-unknown", train("model.name=transformer"), "transformer"),
    Case("model-unknown-option", train("model.params.heads=3"), "heads"),
    Case("dataset-unknown-param", train("dataset.params.bogus=1"), "bogus"),
    Case("dataset-test-fraction-one", train("dataset.params.test_fraction=1"), "test_fraction"),
    # --- dataset files: npz -------------------------------------------------------------------
    Case("npz-missing", train_on("none.npz"), "none.npz"),
    Case("npz-empty", train_on("d.npz"), "d.npz", _bytes("d.npz", b"")),
    Case("npz-truncated", train_on("d.npz"), "d.npz", _truncated("data.npz", "d.npz")),
    Case("npz-not-a-zip", train_on("d.npz"), "d.npz", _bytes("d.npz", b"x,y\n1,2\n")),
    Case(
        "npz-a-directory",
        lambda p: ["train", p.config, "--out", p.run, "--set", f"dataset.name=npz:{p.out}"],
        "out",
    ),
    Case("npz-without-y", train_on("d.npz"), "'y'", _npz("d.npz", y=None)),
    Case("npz-nan-features", train_on("d.npz"), "NaN", _npz("d.npz", x=_ones((60, 8), np.nan))),
    Case("npz-inf-features", train_on("d.npz"), "inf", _npz("d.npz", x=_ones((60, 8), np.inf))),
    Case("npz-text-features", train_on("d.npz"), "numeric", _npz("d.npz", x=np.full((60, 8), "a"))),
    Case(
        "npz-object-array",
        train_on("d.npz"),
        "d.npz",
        _npz("d.npz", x=np.array([[1, "a"]] * 60, dtype=object)),
    ),
    Case("npz-float-labels", train_on("d.npz"), "float", _npz("d.npz", y=np.arange(60) % 4 + 0.5)),
    Case(
        "npz-negative-labels", train_on("d.npz"), "labels", _npz("d.npz", y=np.arange(60) % 4 - 1)
    ),
    Case(
        "npz-labels-above-num-classes",
        train_on("d.npz", "dataset.params.num_classes=2"),
        "0..1",
        _npz("d.npz"),
    ),
    Case("npz-length-mismatch", train_on("d.npz"), "60", _npz("d.npz", y=np.arange(59) % 4)),
    Case(
        "npz-x-test-without-y-test",
        train_on("d.npz"),
        "y_test",
        _npz("d.npz", x_test=_ones((5, 8), 0)),
    ),
    Case(
        "npz-x-test-other-shape",
        train_on("d.npz"),
        "x_test",
        _npz("d.npz", x_test=_ones((5, 7), 0), y_test=np.zeros(5, np.int64)),
    ),
    Case("npz-one-dimensional-x", train_on("d.npz"), "'x'", _npz("d.npz", x=np.zeros(60))),
    Case(
        "npz-too-few-to-split",
        train_on("d.npz"),
        "hold out",
        _npz("d.npz", x=_ones((1, 8), 0), y=np.zeros(1, np.int64)),
    ),
    Case(
        "model-cannot-take-shape-convnet",
        train_on("d.npz", "model.name=convnet1d", "model.params={}"),
        "convnet1d",
        _npz("d.npz", x=_ones((60, 2), 0)),
    ),
    Case(
        "model-cannot-take-shape-resnet",
        train("model.name=resnet18", "model.params={}"),
        "resnet18",
    ),
    Case(
        "model-cannot-take-shape-vit",
        train_on("d.npz", "model.name=vit", "model.params={}"),
        "patch_size",
        _npz("d.npz", x=_ones((60, 3, 7, 7), 0)),
    ),
    # --- CIFAR batches and image folders --------------------------------------------------------
    Case(
        "cifar-missing-root", convert("--dataset", "cifar10", "--root", "{work}/nothere"), "nothere"
    ),
    Case(
        "cifar-missing-batch",
        convert("--dataset", "cifar10", "--root", "{work}/cifar"),
        "data_batch_3",
        _cifar(lambda f: (f / "data_batch_3").unlink()),
    ),
    Case(
        "cifar-truncated-batch",
        convert("--dataset", "cifar10", "--root", "{work}/cifar"),
        "data_batch_2",
        _cifar(lambda f: (f / "data_batch_2").write_bytes((f / "data_batch_2").read_bytes()[:100])),
    ),
    Case(
        "cifar-not-a-pickle",
        convert("--dataset", "cifar10", "--root", "{work}/cifar"),
        "test_batch",
        _cifar(lambda f: (f / "test_batch").write_text("hello")),
    ),
    Case(
        "cifar-wrong-shape",
        convert("--dataset", "cifar10", "--root", "{work}/cifar"),
        "(4, 10)",
        _cifar(
            lambda f: (f / "data_batch_1").write_bytes(
                pickle.dumps({b"data": np.zeros((4, 10), np.uint8), b"labels": [0, 1, 2, 3]})
            )
        ),
    ),
    Case(
        "cifar-no-labels",
        convert("--dataset", "cifar10", "--root", "{work}/cifar"),
        "data_batch_1",
        _cifar(
            lambda f: (f / "data_batch_1").write_bytes(
                pickle.dumps({b"data": np.zeros((4, 3072), np.uint8)})
            )
        ),
    ),
    Case(
        "cifar-pickle-names-os-system",
        convert("--dataset", "cifar10", "--root", "{work}/cifar"),
        "system",
        _cifar(lambda f: (f / "test_batch").write_bytes(pickle.dumps(_NamesOsSystem()))),
    ),
    Case(
        "cifar-labels-out-of-range",
        convert("--dataset", "cifar10", "--root", "{work}/cifar"),
        "0..9",
        _cifar(
            lambda f: (f / "test_batch").write_bytes(
                pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]})
            )
        ),
    ),
    Case(
        "images-missing-root",
        convert("--dataset", "imagefolder", "--root", "{work}/nothere"),
        "nothere",
    ),
    Case(
        "images-no-class-folders",
        convert("--dataset", "imagefolder", "--root", "{work}/out"),
        "class",
    ),
    Case(
        "images-empty-class",
        convert("--dataset", "imagefolder", "--root", "{work}/images"),
        "bird",
        _images(lambda root: (root / "bird").mkdir()),
    ),
    Case(
        "images-corrupt-file",
        convert("--dataset", "imagefolder", "--root", "{work}/images"),
        "1.png",
        _images(lambda root: (root / "dog" / "1.png").write_text("not a png")),
    ),
    Case(
        "images-size-zero",
        convert(
            "--dataset", "imagefolder", "--root", "{work}/images", "--set", "dataset.params.size=0"
        ),
        "size",
        _images(),
    ),
    # --- indices (.npy) -------------------------------------------------------------------------
    Case("indices-missing", train(extra=("--indices", "none.npy")), "none.npy"),
    Case("indices-empty-file", train(extra=("--indices", "i.npy")), "i.npy", _bytes("i.npy", b"")),
    Case(
        "indices-truncated",
        train(extra=("--indices", "i.npy")),
        "i.npy",
        _truncated("idx.npy", "i.npy", 0.7),
    ),
    Case("indices-text", train(extra=("--indices", "i.npy")), "i.npy", _bytes("i.npy", b"1,2,3")),
    Case(
        "indices-float",
        train(extra=("--indices", "i.npy")),
        "float",
        _npy("i.npy", np.array([0.5, 1.5])),
    ),
    Case(
        "indices-out-of-range",
        train(extra=("--indices", "i.npy")),
        "48",
        _npy("i.npy", np.array([0, 48])),
    ),
    Case(
        "indices-negative",
        train(extra=("--indices", "i.npy")),
        "-1",
        _npy("i.npy", np.array([-1, 3])),
    ),
    Case(
        "indices-duplicates",
        train(extra=("--indices", "i.npy")),
        "duplicates",
        _npy("i.npy", np.array([1, 1, 2])),
    ),
    Case(
        "indices-2d",
        train(extra=("--indices", "i.npy")),
        "(2, 2)",
        _npy("i.npy", np.array([[1, 2], [3, 4]])),
    ),
    Case(
        "indices-empty-array",
        train(extra=("--indices", "i.npy")),
        "empty",
        _npy("i.npy", np.array([], np.int64)),
    ),
    Case(
        "indices-pickled-objects",
        train(extra=("--indices", "i.npy")),
        "i.npy",
        _npy("i.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True),
    ),
    Case(
        "indices-with-data-mode",
        train("train.data.mode=rs2", "train.data.fraction=0.5", extra=("--indices", "i.npy")),
        "indices",
        _npy("i.npy", np.array([1, 2])),
    ),
    Case(
        "data-subset-indices-missing",
        train("train.data.mode=subset", "train.data.indices=none.npy"),
        "none.npy",
    ),
    # --- scores (.parquet) ---------------------------------------------------------------------
    Case("scores-missing", select("none.parquet"), "none.parquet"),
    Case("scores-empty-file", select("s.parquet"), "s.parquet", _bytes("s.parquet", b"")),
    Case(
        "scores-truncated",
        select("s.parquet"),
        "s.parquet",
        _truncated("scores.parquet", "s.parquet"),
    ),
    Case("scores-csv", select("s.parquet"), "s.parquet", _bytes("s.parquet", b"index,score\n")),
    Case("scores-no-metadata", select("s.parquet"), "metadata", _no_metadata),
    Case(
        "scores-future-version",
        select("s.parquet"),
        "version 99",
        _scores("s.parquet", lambda t, m: m.update(format_version=99)),
    ),
    Case(
        "scores-missing-column",
        select("s.parquet"),
        "score",
        _scores("s.parquet", lambda t, m: t.pop("score")),
    ),
    Case(
        "scores-nan",
        select("s.parquet"),
        "NaN",
        _scores("s.parquet", lambda t, m: t.__setitem__("score", np.nan)),
    ),
    Case(
        "scores-text-values",
        select("s.parquet"),
        "score",
        _scores("s.parquet", lambda t, m: t.__setitem__("score", "high")),
    ),
    Case(
        "scores-other-dataset-in-train",
        train("train.data.mode=subset", "train.data.scores=s.parquet", "train.data.keep=0.5"),
        "score this dataset",
        _scores("s.parquet", lambda t, m: m["dataset"].update(fingerprint="v2:" + "0" * 16)),
    ),
    Case(
        "scores-index-out-of-range",
        train("train.data.mode=subset", "train.data.scores=s.parquet", "train.data.keep=0.5"),
        "0..47",
        _scores("s.parquet", lambda t, m: t.__setitem__("index", t["index"] + 100)),
    ),
    # --- checkpoints (teachers) -------------------------------------------------------------------
    Case("teacher-missing", teacher("none.pt"), "none.pt"),
    Case("teacher-empty-file", teacher("t.pt"), "t.pt", _bytes("t.pt", b"")),
    Case("teacher-truncated", teacher("t.pt"), "t.pt", _truncated("teacher/checkpoint.pt", "t.pt")),
    Case("teacher-text", teacher("t.pt"), "t.pt", _bytes("t.pt", b"weights")),
    Case(
        "teacher-not-datapruning",
        teacher("t.pt"),
        "t.pt",
        _checkpoint("t.pt", lambda s: s.pop("state_dict")),
    ),
    Case(
        "teacher-other-dataset",
        teacher("t.pt"),
        "train a teacher on this dataset",
        _checkpoint("t.pt", lambda s: s.update(dataset_fingerprint="v2:" + "0" * 16)),
    ),
    Case(
        "teacher-other-classes",
        teacher("t.pt"),
        "3 classes",
        _checkpoint("t.pt", lambda s: s.update(num_classes=3)),
    ),
    Case(
        "teacher-weights-mismatch",
        teacher("t.pt"),
        "t.pt",
        _checkpoint("t.pt", lambda s: s.update(model_params={"hidden": 16})),
    ),
    Case(
        "teacher-unknown-model",
        teacher("t.pt"),
        "transformer",
        _checkpoint("t.pt", lambda s: s.update(model="transformer")),
    ),
    Case(
        "teacher-missing-key",
        teacher("t.pt"),
        "t.pt",
        _checkpoint("t.pt", lambda s: s.pop("input_shape")),
    ),
    Case(
        "teacher-run-dir-without-checkpoint",
        lambda p: ["train", p.config, "--out", p.run, "--teacher", p.out],
        "checkpoint.pt",
    ),
    # --- teacher logits (.npy) ------------------------------------------------------------------
    Case("logits-missing", teacher("none.npy"), "none.npy"),
    Case("logits-truncated", teacher("l.npy"), "l.npy", _truncated("logits.npy", "l.npy")),
    Case("logits-wrong-shape", teacher("l.npy"), "(48, 3)", _logits_wrong_shape),
    Case(
        "logits-integers",
        teacher("l.npy"),
        "int64",
        _npy("l.npy", np.zeros((N_TRAIN, NUM_CLASSES), np.int64)),
    ),
    Case("logits-nan", teacher("l.npy"), "NaN", _logits_nan),
    Case("logits-sidecar-not-json", teacher("l.npy"), "l.npy.json", _sidecar("l.npy", "{oops")),
    Case(
        "logits-sidecar-other-dataset",
        teacher("l.npy"),
        "compute them on this dataset",
        _sidecar(
            "l.npy",
            {
                "format": "datapruning-logits/1",
                "dataset_fingerprint": "v2:" + "0" * 16,
                "shape": [N_TRAIN, NUM_CLASSES],
            },
        ),
    ),
    Case(
        "logits-sidecar-future-format",
        teacher("l.npy"),
        "datapruning-logits/9",
        _sidecar("l.npy", {"format": "datapruning-logits/9", "dataset_fingerprint": "x"}),
    ),
    Case("kd-teacher-logits-config-missing", train("kd.teacher_logits=none.npy"), "none.npy"),
    # --- resume files -------------------------------------------------------------------------
    Case("resume-corrupt", train(), "resume.pt", lambda p: (p.run / "resume.pt").write_bytes(b"x")),
    Case(
        "resume-truncated",
        train(),
        "resume.pt",
        lambda p: (p.run / "resume.pt").write_bytes(p.teacher.read_bytes()[:300]),
    ),
    Case(
        "resume-other-config",
        train(),
        "different config",
        _resume(lambda p: {"format_version": RESUME_FORMAT, "config_hash": "0" * 16}),
    ),
    Case("resume-not-a-dict", train(), "resume.pt", _resume(lambda p: [1, 2, 3])),
    Case(
        "resume-incomplete",
        train(),
        "resume.pt",
        _resume(
            lambda p: {
                "format_version": RESUME_FORMAT,
                "config_hash": _this_runs_hash(p),
                "model": {},
            }
        ),
    ),
    # --- betons and their sidecars ------------------------------------------------------------
    Case("beton-missing", train("train.loader=ffcv", "train.beton=none.beton"), "none.beton"),
    Case(
        "beton-sidecar-missing",
        train("train.loader=ffcv", "train.beton=d.beton"),
        "d.beton.json",
        _beton(None),
    ),
    Case(
        "beton-sidecar-not-json",
        train("train.loader=ffcv", "train.beton=d.beton"),
        "d.beton.json",
        _beton(lambda p, size: "{"),
    ),
    Case(
        "beton-sidecar-not-ours",
        train("train.loader=ffcv", "train.beton=d.beton"),
        "d.beton.json",
        _beton(lambda p, size: {"format": "other"}),
    ),
    Case(
        "beton-sidecar-future-format",
        train("train.loader=ffcv", "train.beton=d.beton"),
        "datapruning-beton/99",
        _beton(lambda p, size: {"format": "datapruning-beton/99"}),
    ),
    Case(
        "beton-size-changed",
        train("train.loader=ffcv", "train.beton=d.beton"),
        "size",
        _beton(lambda p, size: {"format": "datapruning-beton/2", "beton_bytes": size + 1}),
    ),
    Case(
        "beton-other-dataset",
        train("train.loader=ffcv", "train.beton=d.beton"),
        "0000000000000000",
        _beton(
            lambda p, size: {
                "format": "datapruning-beton/2",
                "beton_bytes": size,
                "fingerprint": "v2:" + "0" * 16,
                "num_samples": N_TRAIN,
            }
        ),
    ),
    # --- proto embeddings ---------------------------------------------------------------------
    Case(
        "embeddings-missing",
        score("--metric", "proto", "--embeddings", "{work}/none.npy"),
        "none.npy",
    ),
    Case(
        "embeddings-wrong-rows",
        score("--metric", "proto", "--embeddings", "{work}/e.npy"),
        "rows",
        _npy("e.npy", np.ones((5, 3), np.float32)),
    ),
    Case(
        "embeddings-nan",
        score("--metric", "proto", "--embeddings", "{work}/e.npy"),
        "NaN",
        _npy("e.npy", np.full((N_TRAIN, 3), np.nan, np.float32)),
    ),
    Case(
        "embeddings-too-many-clusters",
        score("--metric", "proto", "--embeddings", "{work}/e.npy", "--k", "1000"),
        "1000",
        _npy("e.npy", np.random.default_rng(0).normal(size=(N_TRAIN, 3))),
    ),
    # --- run directories for `report` -----------------------------------------------------------
    Case("report-on-a-file", report("out/idx.npy"), "idx.npy"),
    Case("report-empty-dir", report("empty"), "summary.json", lambda p: (p.work / "empty").mkdir()),
    Case(
        "report-summary-corrupt",
        report(),
        "hard-0.5",
        _runs(lambda r: (r / "hard-0.5" / "summary.json").write_text("{")),
    ),
    Case(
        "report-summary-a-list",
        report(),
        "summary.json",
        _runs(lambda r: (r / "hard-0.5" / "summary.json").write_text("[]")),
    ),
    Case(
        "report-metrics-missing",
        report(),
        "hard-0.5",
        _runs(lambda r: (r / "hard-0.5" / "metrics.jsonl").unlink()),
    ),
    Case(
        "report-metrics-wrong-schema",
        report(),
        "metrics.jsonl",
        _runs(lambda r: (r / "hard-0.5" / "metrics.jsonl").write_text('{"epoch": 1}\n')),
    ),
    Case(
        "report-metrics-binary",
        report(),
        "hard-0.5",
        _runs(lambda r: (r / "hard-0.5" / "metrics.jsonl").write_bytes(b"\xff\xfe\x00")),
    ),
    Case(
        "report-no-full-run",
        report(),
        "full",
        _runs(lambda r: _edit_json(r / "full-s0" / "summary.json", recipe="hard")),
    ),
    Case(
        "report-recipe-not-a-name",
        report(),
        "recipe",
        _runs(lambda r: _edit_json(r / "hard-0.5" / "summary.json", recipe=["hard"])),
    ),
    Case(
        "report-scores-seconds-not-a-number",
        report(),
        "'abc'",
        lambda p: (
            _runs(lambda r: (r / "scores").mkdir())(p),
            _scores("exp/scores/s.parquet", lambda t, m: m.update(seconds="abc"))(p),
        ),
    ),
    Case(
        "report-accuracy-not-a-number",
        report(),
        "final_test_acc",
        _runs(lambda r: _edit_json(r / "hard-0.5" / "summary.json", final_test_acc="high")),
    ),
    Case(
        "report-kept-not-a-number",
        report(),
        "kept_fraction",
        _runs(lambda r: _edit_json(r / "hard-0.5" / "summary.json", kept_fraction="half")),
    ),
    Case(
        "report-seconds-not-a-number",
        report(),
        "train_seconds",
        _runs(
            lambda r: (r / "hard-0.5" / "metrics.jsonl").write_text(
                '{"train_seconds": "soon", "test_acc": 0.5}\n'
            )
        ),
    ),
]


def test_catalogue_is_large_and_named_uniquely():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 60


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_clean_line_and_changes_nothing(case, paths, assets, capfd):
    if case.setup is not None:
        case.setup(paths)
    before = _tree_hash(paths.work, assets)
    capfd.readouterr()
    code = main([str(arg) for arg in case.argv(paths)])
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    match = case.match(paths) if callable(case.match) else case.match
    assert match in lines[0], lines[0]
    assert _tree_hash(paths.work, assets) == before, "the command wrote or changed a file"


# --- unexpected errors: exit 1, one line, the traceback in a log file ------------------------


def _crash_log(line: str) -> Path:
    found = re.search(r"full traceback in (\S+\.log)\)", line)
    assert found, line
    return Path(found.group(1))


def _break_training(monkeypatch, exc: BaseException) -> None:
    import datapruning.train.loop

    def train(*args, **kwargs):
        raise exc

    monkeypatch.setattr(datapruning.train.loop, "train", train)
    monkeypatch.setattr(datapruning.train.loop, "train_run", train)


def test_unexpected_error_exits_1_with_one_line_naming_the_log(paths, assets, monkeypatch, capfd):
    _break_training(monkeypatch, ZeroDivisionError("float division by zero in the step"))
    before = _tree_hash(paths.out, assets)
    capfd.readouterr()
    code = main(["train", str(paths.config), "--out", str(paths.out / "new")])
    _, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert code == 1
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert "ZeroDivisionError" in lines[0] and "`datapruning train`" in lines[0]
    assert "float division by zero in the step" in lines[0]
    log = _crash_log(lines[0])
    assert log.parent == paths.work / "cache" / "logs"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text
    assert "ZeroDivisionError: float division by zero in the step" in text
    assert f"command: datapruning train {paths.config}" in text
    assert _tree_hash(paths.out, assets) == before  # the run directory is not the log's place


def test_unexpected_eof_is_a_crash_not_an_abort(paths, monkeypatch, capfd):
    # Click reports an EOFError escaping a command as Abort, like Ctrl-C (exit 130).
    _break_training(monkeypatch, EOFError("ran out of input"))
    capfd.readouterr()
    code = main(["train", str(paths.config), "--out", str(paths.out / "new")])
    lines = capfd.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(lines) == 1 and "EOFError" in lines[0], lines
    assert "EOFError: ran out of input" in _crash_log(lines[0]).read_text()


def test_crash_log_falls_back_to_the_temporary_folder(paths, monkeypatch, capfd):
    import tempfile

    (paths.work / "not-a-folder").write_text("")
    monkeypatch.setenv("DATAPRUNING_CACHE_DIR", str(paths.work / "not-a-folder"))
    monkeypatch.setattr(tempfile, "tempdir", str(paths.work / "tmp"))
    (paths.work / "tmp").mkdir()
    _break_training(monkeypatch, KeyError("lost"))
    capfd.readouterr()
    assert main(["train", str(paths.config), "--out", str(paths.out / "new")]) == 1
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert _crash_log(lines[0]).parent == paths.work / "tmp" / "datapruning-logs"


def test_user_error_from_deep_inside_stays_exit_2_without_a_log(paths, monkeypatch, capfd):
    from datapruning.errors import DataPruningError

    _break_training(monkeypatch, DataPruningError("train.lr 7 is too large for this model"))
    capfd.readouterr()
    code = main(["train", str(paths.config), "--out", str(paths.out / "new")])
    lines = capfd.readouterr().err.strip().splitlines()
    assert code == 2
    assert lines == ["error: train.lr 7 is too large for this model"]
    assert not (paths.work / "cache").exists()
