"""Data larger than memory: every CLI step on a 200,000-image set with its peak RSS.

    .venv/bin/python bench/scale.py                       # writes bench/results/scale.json
    .venv/bin/python bench/scale.py --images 3000 --test-images 300 --train-steps 10 \\
        --throughput-images 2000 --out /tmp/scale.json     # a small run (minutes)

Generates ``--images`` 32x32 RGB training images and ``--test-images`` test images
(10 classes: a smooth class template, a random shift, per-image brightness and
noise, so the set is learnable) chunk by chunk as uint8 straight into PNG files of
an image folder (``ROOT/train|test/<class>/``); the set is never held whole, as
uint8 or float32. Then, each step a separate CLI process:

- ``convert``: the image folder (streamed, decoded per image) -> ``train.beton``
  (raw pixels) plus its test split; this also caches the folder's fingerprint;
- for each storage, ``beton`` (``--dataset beton:PATH``) and ``folder``
  (``imagefolder`` with ``stream: true``): ``score --metric el2n`` (1 seed, 1
  epoch) with a small scoring model (``--score-model``, the CLI's ``--model``: the
  ``scoring.model`` proxy setting is another branch's work, so the proxy here is
  the score command's model), ``select`` (keep the hardest half), and
  ``--train-steps`` steps (batch ``--batch-size``) of ``resnet18`` (``--width``) on the kept half with
  ``train.augment: crop_flip``, evaluated once at the end on the test split.

Each step's peak RSS comes from ``os.wait4`` on its process (``ru_maxrss``: the
largest resident set of it or any descendant it waited for), and a 0.1 s poll of
``/proc/<pid>/status`` over the step's process tree gives the largest
``RssAnon`` (heap: what the step allocated) and ``RssFile`` (mapped file pages:
the beton's memory map, shared libraries; reclaimable page cache) seen. The
goal: every step under 2 GiB peak RSS.

``throughput`` compares the input paths on the same ``--throughput-images``
examples in one random order, batches of 128 float32 (3, 32, 32) tensors:
``memory`` (those examples as one float32 tensor in RAM: the in-memory fast
path, loading excluded), ``beton_stream`` and ``folder_stream`` (``train.loader:
memory`` on a streaming set: rows read in the main process), ``folder_workers``
(``train.loader: torch`` with ``--workers`` processes) and ``beton_ffcv``
(``train.loader: ffcv``). Each runs one untimed epoch, then a timed one.

Wall times were measured on a shared 2-core machine while other engineers ran
tests: the JSON records the load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from provenance import provenance

RESULTS = Path(__file__).parent / "results" / "scale.json"
CLASSES = 10
CHUNK = 5000
GIB = 1 << 30


def _templates(size: int) -> np.ndarray:
    """One smooth (3, size, size) pattern per class: a few random low-frequency waves."""
    rng = np.random.default_rng(1234)
    grid = np.linspace(0, 2 * np.pi, size, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    out = np.empty((CLASSES, 3, size, size), dtype=np.float32)
    for c in range(CLASSES):
        for ch in range(3):
            fy, fx, phase = rng.integers(1, 4), rng.integers(1, 4), rng.uniform(0, 2 * np.pi)
            out[c, ch] = 128 + 80 * np.sin(fy * yy + fx * xx + phase)
    return out


def _chunk(templates: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uint8 (H, W, 3) images and their labels, from one seeded generator."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    shifts = rng.integers(-4, 5, (count, 2))
    images = templates[labels]
    for i, (dy, dx) in enumerate(shifts):
        images[i] = np.roll(images[i], (int(dy), int(dx)), axis=(1, 2))
    images = images * rng.uniform(0.7, 1.3, (count, 1, 1, 1)).astype(np.float32)
    images += rng.normal(0, 40, images.shape).astype(np.float32)
    pixels = np.clip(np.rint(images), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return pixels, labels


def generate(root: Path, images: int, test_images: int, size: int) -> dict[str, Any]:
    from PIL import Image

    start = time.perf_counter()
    templates = _templates(size)
    for split, count, seed in (("train", images, 0), ("test", test_images, 10**6)):
        for c in range(CLASSES):
            (root / split / f"class{c}").mkdir(parents=True, exist_ok=True)
        for first in range(0, count, CHUNK):
            pixels, labels = _chunk(templates, min(CHUNK, count - first), seed + first)
            for offset, (image, label) in enumerate(zip(pixels, labels, strict=True)):
                path = root / split / f"class{label}" / f"{first + offset:07d}.png"
                Image.fromarray(image).save(path, compress_level=1)
    files = sum(1 for _ in (root / "train").rglob("*.png"))
    size_bytes = sum(p.stat().st_size for p in root.rglob("*.png"))
    return {"seconds": time.perf_counter() - start, "files": files, "bytes": size_bytes}


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


def _status_kib(pid: int) -> dict[str, int]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0])
    return out


def run_step(name: str, argv: Sequence[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one CLI step; its wall time, ru_maxrss and the largest RssAnon / RssFile seen."""
    print(f"[scale] {name}: {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(argv, env=env)
    peak = {"RssAnon": 0, "RssFile": 0, "RssShmem": 0}
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        for member in _tree(process.pid):
            for key, value in _status_kib(member).items():
                if key in peak:
                    peak[key] = max(peak[key], value)
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"step {name} failed with exit status {code}")
    rss = usage.ru_maxrss * 1024  # KiB on Linux
    record = {
        "command": " ".join(argv),
        "seconds": round(seconds, 2),
        "peak_rss_bytes": rss,
        "peak_rss_gib": round(rss / GIB, 3),
        "peak_rss_anon_gib": round(peak["RssAnon"] * 1024 / GIB, 3),
        "peak_rss_file_gib": round(peak["RssFile"] * 1024 / GIB, 3),
        "under_2_gib": rss < 2 * GIB,
    }
    print(f"[scale] {name}: {json.dumps(record)}", flush=True)
    return record


def _config(path: Path, dataset: dict[str, Any], args: argparse.Namespace) -> Path:
    import yaml

    config = {
        "dataset": dataset,
        "model": {"name": "resnet18", "params": {"width": args.width}},
        "train": {
            "steps": args.train_steps,
            "batch_size": args.batch_size,
            "lr": 0.05,
            "augment": "crop_flip",
            "eval_every": 0,
            "targets": [],
            "threads": args.threads,
            "loader": "torch" if args.workers else "memory",
            "workers": args.workers,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def throughput(beton: Path, folder: Path, count: int, workers: int) -> dict[str, Any]:
    """Images per second of each input path over the same ``count`` examples."""
    import torch

    from datapruning.data.loaders import TensorBatches, make_source_batches
    from datapruning.data.samplers import SubsetSampler
    from datapruning.data.sources import load_dataset

    streams = {
        "beton": load_dataset(f"beton:{beton}"),
        "folder": load_dataset("imagefolder", {"root": str(folder), "stream": True}),
    }
    subset = np.random.default_rng(0).choice(streams["beton"].num_train, count, replace=False)
    subset.sort()
    cpu = torch.device("cpu")
    in_memory = torch.from_numpy(streams["beton"].read_train(subset))  # float32, loading untimed
    labels = torch.as_tensor(streams["beton"].y_train[subset])
    positions = np.arange(count)

    def rate(batches: Any) -> float:
        # One untimed epoch (FFCV compiles its pipeline, pages come into the cache the
        # same way for every path), then the timed one, in another order.
        for epoch in (0, 1):
            batches.sampler.set_epoch(epoch)  # FFCVBatches reads its epoch from the sampler
            start = time.perf_counter()
            seen = sum(len(x) for x, _, _ in batches)
        return seen / (time.perf_counter() - start)

    def stream(kind: str, name: str, n: int = 0) -> Any:
        sampler = SubsetSampler(subset, seed=0)
        return make_source_batches(kind, streams[name], sampler, 128, device=cpu, workers=n)

    results = {
        "memory": rate(TensorBatches(in_memory, labels, SubsetSampler(positions, seed=0), 128)),
        "beton_stream": rate(stream("memory", "beton")),
        "folder_stream": rate(stream("memory", "folder")),
        f"folder_workers{workers}": rate(stream("torch", "folder", workers)),
    }
    from datapruning.data.beton import ffcv_installed

    if ffcv_installed():
        results["beton_ffcv"] = rate(stream("ffcv", "beton"))
    return {key: round(value, 1) for key, value in results.items()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--test-images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=32)
    # 200 steps of batch 32: about 1.3 s a step for resnet18 width 16 on this loaded 2-core
    # machine (5 s at batch 128), so the two training steps take minutes, not an hour.
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32, help="training batch")
    parser.add_argument(
        "--score-batch-size", type=int, default=None, help="scoring batch (default: --batch-size)"
    )
    parser.add_argument("--width", type=int, default=16, help="resnet18 base width")
    parser.add_argument("--score-model", default="mlp")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="loader torch processes")
    parser.add_argument("--throughput-images", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--throughput-only", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.throughput_only:  # run by main in its own process
        beton, folder = args.throughput_only
        print(json.dumps(throughput(beton, folder, args.throughput_images, args.workers)))
        return {}

    record: dict[str, Any] = {**provenance(__file__, argv), "settings": vars(args).copy()}
    record["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    work = args.workdir or Path(tempfile.mkdtemp(prefix="datapruning-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DATAPRUNING_CACHE_DIR": str(work / "cache"), "TQDM_DISABLE": "1"}
    cli = [sys.executable, "-m", "datapruning.cli"]
    folder, beton = work / "images", work / "train.beton"
    print(f"[scale] generating {args.images} + {args.test_images} images in {folder}", flush=True)
    record["generate"] = generate(folder, args.images, args.test_images, args.size)
    record["beton_bytes"] = None
    steps: dict[str, Any] = {}
    folder_data = ["--dataset", "imagefolder", "--root", str(folder)]
    stream = ["--set", "dataset.params.stream=true", "--set", f"dataset.params.size={args.size}"]
    steps["convert"] = run_step(
        "convert", [*cli, "convert", *folder_data, *stream, "--out", str(beton)], env
    )
    record["beton_bytes"] = beton.stat().st_size
    storages = {
        "beton": (["--dataset", f"beton:{beton}"], [], {"name": f"beton:{beton}"}),
        "folder": (
            folder_data,
            stream,
            {
                "name": "imagefolder",
                "params": {"root": str(folder), "size": args.size, "stream": True},
            },
        ),
    }
    recipe = [
        *("--set", f"train.batch_size={args.score_batch_size or args.batch_size}"),
        *("--set", f"train.threads={args.threads}"),
    ]
    for name, (data, extra, dataset) in storages.items():
        scores, kept = work / f"{name}.parquet", work / f"{name}-kept.npy"
        steps[f"{name}/score"] = run_step(
            f"{name}/score",
            [*cli, "score", "--metric", "el2n", *data, *extra, *recipe, "--model",
             args.score_model, "--seeds", "1", "--epochs", "1", "--out", str(scores)],
            env,
        )  # fmt: skip
        steps[f"{name}/select"] = run_step(
            f"{name}/select",
            [*cli, "select", "--scores", str(scores), "--keep", "0.5", "--strategy", "hard",
             "--out", str(kept), *data, *extra],
            env,
        )  # fmt: skip
        config = _config(work / f"{name}.yaml", dataset, args)
        run_dir = work / f"run-{name}"
        steps[f"{name}/train"] = run_step(
            f"{name}/train",
            [*cli, "train", str(config), "--out", str(run_dir), "--indices", str(kept)],
            env,
        )
        summary = json.loads((run_dir / "summary.json").read_text())
        steps[f"{name}/train"]["test_accuracy"] = summary["final_test_acc"]
        steps[f"{name}/train"]["steps"] = summary["steps"]
        steps[f"{name}/train"]["train_seconds"] = round(summary["train_seconds"], 2)
    record["steps"] = steps
    record["all_under_2_gib"] = all(step["under_2_gib"] for step in steps.values())
    same = {
        name: json.loads(
            subprocess.run(
                [sys.executable, "-c", _SCORES_OF, str(work / f"{name}.parquet")],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for name in storages
    }
    record["scores_equal_across_storage"] = same["beton"] == same["folder"]
    print("[scale] throughput", flush=True)
    output = subprocess.run(
        [sys.executable, __file__, "--throughput-only", str(beton), str(folder),
         "--throughput-images", str(args.throughput_images), "--workers", str(args.workers)],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rates = json.loads(output.strip().splitlines()[-1])
    record["throughput_images_per_second"] = rates
    record["streamed_vs_memory"] = {
        key: round(value / rates["memory"], 3) for key, value in rates.items() if key != "memory"
    }
    record["note"] = (
        "wall times on a shared 2-core machine while other engineers ran tests (see "
        "machine.load_average); scoring used the score command's --model as the small "
        "proxy (scoring.model is another branch's work)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return record


# The hash of a scores file's score column (run in a child: pandas stays out of this process).
_SCORES_OF = (
    "import sys, json, hashlib, pandas as pd; t = pd.read_parquet(sys.argv[1]); "
    "print(json.dumps(hashlib.sha256(t['score'].to_numpy().tobytes()).hexdigest()))"
)


if __name__ == "__main__":
    main()
