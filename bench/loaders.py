"""Throughput of FFCV against torch DataLoaders on the same 32x32 RGB subset.

    .venv/bin/python bench/loaders.py            # writes bench/results/loaders.json

Generates ``--images`` structured 32x32 RGB images (a class-coloured gradient
and a random rectangle plus noise, 10 classes) and keeps a seeded random
``--subset`` of them. Every loader yields the same thing per example, a float32
(3, 32, 32) tensor in [0, 1] and an int64 label, in batches of
``--batch-size`` drawn in a new random order of the subset every epoch, with
``--workers`` workers:

- ``ffcv``: :func:`datapruning.data.ffcv.make_loader` over a raw (exact pixels)
  ``.beton`` with ``indices=subset``; ``--workers`` decoding threads;
- ``torch_png``: the common case, a ``DataLoader`` over a map-style dataset
  that opens one PNG file per example with PIL (an image folder) and converts
  it like torchvision's ``ToTensor``; ``--workers`` worker processes;
- ``torch_memory``: a ``DataLoader`` over a map-style dataset indexing the
  same pixels held in memory as a uint8 array (the best case for a torch
  loader without custom batching); ``--workers`` worker processes.

For reference, not a DataLoader and not in the ratios: ``memory_batches``,
the project's ``loader: memory`` (whole batches gathered from a float32
tensor already in memory, in the main process), the upper bound when a
decoded training set fits in RAM.

Each loader runs one untimed warm-up epoch (FFCV compiles its pipeline, torch
starts its persistent workers), then ``--epochs`` timed epochs; the rate is
examples per second over the timed epochs. Set-up (writing files) is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from datapruning._io import write_json
from datapruning.data.loaders import TensorBatches
from datapruning.data.samplers import SubsetSampler

RESULTS = Path(__file__).parent / "results" / "loaders.json"


def make_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` structured (3, 32, 32) uint8 images and their labels in 0..9."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    palette = rng.integers(40, 216, (10, 3))
    ramp = np.linspace(0, 1, 32, dtype=np.float32)
    images = np.empty((count, 3, 32, 32), dtype=np.uint8)
    for start in range(0, count, 1000):
        stop = min(start + 1000, count)
        n = stop - start
        angle = rng.uniform(0, 2 * np.pi, (n, 1, 1))
        gradient = np.cos(angle) * ramp[None, :, None] + np.sin(angle) * ramp[None, None, :]
        base = palette[labels[start:stop]][:, :, None, None] * (0.6 + 0.4 * gradient[:, None])
        noise = rng.normal(0, 12, (n, 3, 32, 32))
        batch = base + noise
        corners = rng.integers(0, 24, (n, 2))
        for i, (top, left) in enumerate(corners):
            batch[i, :, top : top + 8, left : left + 8] = rng.integers(0, 256, 3)[:, None, None]
        images[start:stop] = np.clip(batch, 0, 255).astype(np.uint8)
    return images, labels


def to_tensor(pixels_hwc: np.ndarray) -> torch.Tensor:
    """What torchvision's ToTensor does to an RGB uint8 image: (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(pixels_hwc).permute(2, 0, 1).float().div(255)


class PNGFolder(Dataset):
    """One PNG file per example, decoded with PIL on every access."""

    def __init__(self, files: list[Path], labels: np.ndarray) -> None:
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[i]) as image:
            pixels = np.array(image.convert("RGB"))  # writable, as torchvision copies it
        return to_tensor(pixels), int(self.labels[i])


class InMemory(Dataset):
    """The pixels as one (N, H, W, 3) uint8 array, one example per access."""

    def __init__(self, pixels_hwc: np.ndarray, labels: np.ndarray) -> None:
        self.pixels, self.labels = pixels_hwc, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return to_tensor(self.pixels[i]), int(self.labels[i])


def write_pngs(images: np.ndarray, folder: Path) -> list[Path]:
    files = []
    for i, image in enumerate(tqdm(images, desc="png", unit="img", leave=False)):
        path = folder / f"{i:06d}.png"
        Image.fromarray(image.transpose(1, 2, 0)).save(path)
        files.append(path)
    return files


def measure(
    name: str,
    epochs: int,
    set_epoch: Callable[[int], None],
    loader: Iterable[Any],
    subset_size: int,
    expected_shape: tuple[int, ...],
) -> dict[str, Any]:
    """One warm-up epoch, then ``epochs`` timed ones: examples per second."""
    seconds, warmup = [], 0.0
    for epoch in range(epochs + 1):
        set_epoch(epoch)
        seen = 0
        start = time.perf_counter()
        for batch in loader:
            x, y = batch[0], batch[1]
            seen += len(y)
        elapsed = time.perf_counter() - start
        if seen != subset_size:
            raise RuntimeError(f"{name}: an epoch yielded {seen} examples, not {subset_size}")
        if x.dtype != torch.float32 or tuple(x.shape[1:]) != expected_shape:
            raise RuntimeError(f"{name}: batches of {x.dtype} {tuple(x.shape)}")
        if epoch:
            seconds.append(elapsed)
        else:  # epoch 0 warms up
            warmup = elapsed
        print(f"{name}: epoch {epoch} {subset_size / elapsed:,.0f} examples/s", file=sys.stderr)
    return {
        "examples_per_second": subset_size * len(seconds) / sum(seconds),
        "epoch_seconds": [round(s, 4) for s in seconds],
        "warmup_seconds": round(warmup, 4),
        "median_epoch_seconds": statistics.median(seconds),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=25_000, help="images generated")
    parser.add_argument("--subset", type=int, default=20_000, help="images loaded per epoch")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per loader")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not 0 < args.subset <= args.images:
        parser.error("--subset must lie in 1..--images")
    args.out.parent.mkdir(parents=True, exist_ok=True)

    from datapruning.data.beton import to_beton
    from datapruning.data.ffcv import make_loader

    images, labels = make_images(args.images, args.seed)
    subset = np.sort(np.random.default_rng(args.seed).choice(args.images, args.subset, False))
    shape = (3, 32, 32)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-loaders-") as tmp:
        work = Path(tmp)
        files = write_pngs(images, work)
        beton = to_beton((images, labels), work / "images.beton")
        pixels_hwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))

        # torch first: its worker processes fork before FFCV's threads exist.
        for name, dataset in (
            ("torch_png", PNGFolder(files, labels)),
            ("torch_memory", InMemory(pixels_hwc, labels)),
        ):
            sampler = SubsetSampler(subset, seed=args.seed)
            loader = DataLoader(
                dataset,
                batch_size=args.batch_size,
                sampler=sampler,
                num_workers=args.workers,
                persistent_workers=args.workers > 0,
            )
            results[name] = measure(
                name, args.epochs, sampler.set_epoch, loader, args.subset, shape
            )
            del loader

        floats = torch.from_numpy(images).float().div_(255)
        sampler = SubsetSampler(subset, seed=args.seed)
        batches = TensorBatches(floats, torch.from_numpy(labels), sampler, args.batch_size)
        results["memory_batches"] = measure(
            "memory_batches", args.epochs, sampler.set_epoch, batches, args.subset, shape
        )
        del floats, batches

        ffcv = make_loader(
            beton,
            batch_size=args.batch_size,
            indices=subset,
            seed=args.seed,
            num_workers=args.workers,
        )
        results["ffcv"] = measure("ffcv", args.epochs, ffcv.set_epoch, ffcv, args.subset, shape)

    ffcv_rate = results["ffcv"]["examples_per_second"]
    report = {
        "command": " ".join(
            [
                ".venv/bin/python",
                "bench/loaders.py",
                *map(shlex.quote, sys.argv[1:] if argv is None else argv),
            ]
        ),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "images_generated": args.images,
            "subset": args.subset,
            "image_shape": list(shape),
            "batch_size": args.batch_size,
            "workers": args.workers,
            "timed_epochs": args.epochs,
            "seed": args.seed,
            "ffcv": "raw RGBImageField beton, Loader(indices=subset), random order",
            "torch_png": "DataLoader, map-style dataset: PIL PNG decode + ToTensor per example",
            "torch_memory": "DataLoader, map-style dataset over an in-memory uint8 array",
            "memory_batches": "reference: datapruning's loader memory, batches gathered "
            "from a float32 tensor in RAM (no DataLoader, main process)",
        },
        "examples_per_second": {k: round(v["examples_per_second"]) for k, v in results.items()},
        "ratio_ffcv_to_torch_png": ffcv_rate / results["torch_png"]["examples_per_second"],
        "ratio_ffcv_to_torch_memory": ffcv_rate / results["torch_memory"]["examples_per_second"],
        "details": results,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "load_average_1m": os.getloadavg()[0],
        },
        "versions": {
            "python": platform.python_version(),
            **{pkg: version(pkg) for pkg in ("torch", "ffcv", "numpy", "numba", "Pillow")},
        },
    }
    write_json(args.out, report)
    summary = ("examples_per_second", "ratio_ffcv_to_torch_png", "ratio_ffcv_to_torch_memory")
    print(json.dumps({key: report[key] for key in summary}, indent=2))
    return report


if __name__ == "__main__":
    main()
