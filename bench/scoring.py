"""Scoring benchmarks; writes bench/results/scoring.json.

(a) k-means: faiss.Kmeans against scikit-learn's KMeans on the same N x d
    embeddings (default 100k x 128, k=100): wall time and inertia (sum of
    squared distances to the nearest centroid, computed the same way for both
    on all N points); also faiss seeded with k-means++ as the proto metric does.
(b) EL2N with K scoring models (default 8) on MNIST-1D: trained at once as one
    batched ensemble (scoring/ensemble.py: the folded model of scoring/folded.py)
    against one after another through the training loop, each path at one
    thread and at all cores, in --el2n-repeats interleaved rounds (medians
    reported); the ratios at equal threads, best against best, and with each
    path's default threads; plus how far the two sets of scores differ.
(c) proto vs EL2N: Spearman rank correlation of self-supervised prototype
    scores with (b)'s EL2N scores on the same MNIST-1D training set.

Run: .venv/bin/python bench/scoring.py [--n 100000 --dim 128 --k 100 --seeds 8 ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "scoring.json"


def embeddings(n: int, dim: int, centers: int, seed: int) -> np.ndarray:
    """Clustered synthetic embeddings: ``centers`` Gaussian blobs with unit noise."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centers, dim)).astype(np.float32)
    labels = rng.integers(0, centers, size=n)
    return means[labels] + rng.normal(size=(n, dim)).astype(np.float32)


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    distances, _ = index.search(x, 1)
    return float(distances.sum(dtype=np.float64))


def bench_kmeans(args: argparse.Namespace) -> dict[str, Any]:
    """faiss (random init, and k-means++-seeded as the proto metric runs it) vs scikit-learn.

    k-means results hang on the seeding, so each is run on ``--repeats`` datasets
    (seeds seed, seed+1, ...): the report gives the median time and the mean
    inertia ratio, and every run.
    """
    import faiss
    from sklearn.cluster import KMeans

    from datapruning.scoring.prototypes import kmeanspp_init

    runs = []
    for seed in range(args.seed, args.seed + args.repeats):
        x = embeddings(args.n, args.dim, args.k, seed)
        run: dict[str, Any] = {"seed": seed}

        start = time.perf_counter()
        km = faiss.Kmeans(args.dim, args.k, niter=args.niter, seed=seed, verbose=False)
        km.train(x)
        run["faiss"] = [time.perf_counter() - start, inertia(x, km.centroids)]

        # What prototypes.prototype_scores does: k-means++ on a sample, then faiss.
        start = time.perf_counter()
        init, sample_size = kmeanspp_init(x, args.k, seed)
        seeded = faiss.Kmeans(args.dim, args.k, niter=args.niter, seed=seed, verbose=False)
        seeded.train(x, init_centroids=init)
        run["faiss_kmeanspp"] = [time.perf_counter() - start, inertia(x, seeded.centroids)]

        start = time.perf_counter()
        sk = KMeans(n_clusters=args.k, n_init=1, random_state=seed).fit(x)
        run["sklearn"] = [time.perf_counter() - start, inertia(x, sk.cluster_centers_)]
        run["sklearn_iterations"] = int(sk.n_iter_)
        runs.append(run)
        print(f"kmeans seed {seed}: {run}", file=sys.stderr)

    def summary(name: str) -> dict[str, Any]:
        seconds = float(np.median([r[name][0] for r in runs]))
        ratio = float(np.mean([r[name][1] / r["sklearn"][1] for r in runs]))
        return {"median_seconds": seconds, "mean_inertia_vs_sklearn_percent": 100 * (ratio - 1)}

    sklearn_seconds = float(np.median([r["sklearn"][0] for r in runs]))
    result: dict[str, Any] = {
        "data": f"{args.n} x {args.dim} float32, {args.k} Gaussian blobs, "
        f"{args.repeats} datasets (seeds {args.seed}..{args.seed + args.repeats - 1})",
        "k": args.k,
        "settings": {
            "faiss": f"faiss.Kmeans(niter={args.niter}), random init, trains on a sample of "
            f"{args.k * km.cp.max_points_per_centroid} points",
            "faiss_kmeanspp": f"as faiss, seeded by k-means++ on {sample_size} sampled points "
            "(prototypes.kmeanspp_init, as the proto metric runs it; time includes seeding)",
            "sklearn": "KMeans(n_init=1): k-means++ init on all points, Lloyd, max_iter=300",
        },
        "sklearn": {"median_seconds": sklearn_seconds},
        "runs": runs,
    }
    for name in ("faiss", "faiss_kmeanspp"):
        result[name] = summary(name)
        result[name]["speedup_over_sklearn"] = sklearn_seconds / result[name]["median_seconds"]
    return result


def bench_el2n(args: argparse.Namespace) -> tuple[dict[str, Any], np.ndarray]:
    from datapruning.config import ModelConfig, ScoringConfig, TrainConfig
    from datapruning.data.sources import load_dataset
    from datapruning.scoring import score
    from datapruning.scoring.ensemble import ensemble_threads

    data = load_dataset("mnist1d")
    model = ModelConfig(name=args.model)
    train = TrainConfig()
    base = {"seeds": args.seeds, "epochs": args.epochs, "ensemble_size": args.seeds}
    cores = os.cpu_count() or 1

    def run_name(path: str, threads: int) -> str:
        return f"{path}_{threads}_thread" + ("s" if threads > 1 else "")

    # Each path at 1 thread and at every core: the user's alternative (one model
    # after another through the training loop) gets the same cores as the ensemble.
    runs = {}
    for threads in sorted({1, cores}):
        runs[run_name("sequential", threads)] = (
            ScoringConfig(**base, batched=False),
            TrainConfig(threads=threads),
        )
    for threads in sorted({1, cores}):
        runs[run_name("batched", threads)] = (
            ScoringConfig(**base, batched=True, ensemble_threads=threads),
            train,
        )
    # What `datapruning score` runs unless told otherwise: train.threads for one
    # model after another, every core (at most one per model) for the ensemble.
    defaults = (
        run_name("sequential", train.threads or cores),
        run_name("batched", ensemble_threads(None, args.seeds)),
    )
    # Rounds over all four runs, so a noisy moment on the machine hits every path
    # alike; each run's figure is its median over the rounds.
    timings: dict[str, list[float]] = {name: [] for name in runs}
    scores = {}
    for round_ in range(args.el2n_repeats):
        for name, (cfg, train_cfg) in runs.items():
            start = time.perf_counter()
            scores[name] = score(data, "el2n", cfg, model, train_cfg, progress=False)
            timings[name].append(time.perf_counter() - start)
            print(f"el2n {name} (round {round_}): {timings[name][-1]:.1f} s", file=sys.stderr)
    results = {
        name: {"seconds": float(np.median(seconds)), "rounds": seconds}
        for name, seconds in timings.items()
    }
    sequential = scores["sequential_1_thread"].values
    batched = scores["batched_1_thread"].values

    def best(prefix: str) -> float:
        return min(r["seconds"] for n, r in results.items() if n.startswith(prefix))

    return {
        "dataset": data.describe(),
        "model": args.model,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "runs": results,
        **{
            f"speedup_{run_name('batched', threads)}": results[run_name("sequential", threads)][
                "seconds"
            ]
            / results[run_name("batched", threads)]["seconds"]
            for threads in sorted({1, cores})
        },
        "speedup_best_batched_over_best_sequential": best("sequential") / best("batched"),
        "default_threads": {"sequential": defaults[0], "batched": defaults[1]},
        "speedup_with_default_threads": results[defaults[0]]["seconds"]
        / results[defaults[1]]["seconds"]
        if all(name in results for name in defaults)
        else None,
        "max_abs_score_difference_batched_vs_sequential": float(np.abs(batched - sequential).max()),
    }, batched


def bench_proto(el2n: np.ndarray) -> dict[str, Any]:
    from scipy.stats import spearmanr

    from datapruning.data.sources import load_dataset
    from datapruning.scoring import score

    data = load_dataset("mnist1d")
    start = time.perf_counter()
    proto = score(data, "proto", progress=False)
    seconds = time.perf_counter() - start
    return {
        "dataset": data.describe(),
        "proto_seconds": seconds,
        "proto_params": {
            key: value for key, value in proto.metadata["params"].items() if key != "cluster_sizes"
        },
        "spearman_proto_vs_el2n": float(spearmanr(proto.values, el2n).statistic),
    }


def environment() -> dict[str, Any]:
    import faiss
    import sklearn
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "load_average_at_start": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="k-means: embeddings")
    parser.add_argument("--dim", type=int, default=128, help="k-means: embedding width")
    parser.add_argument("--k", type=int, default=100, help="k-means: clusters")
    parser.add_argument("--niter", type=int, default=20, help="k-means: faiss iterations")
    parser.add_argument("--repeats", type=int, default=3, help="k-means: datasets to average")
    parser.add_argument("--seeds", type=int, default=8, help="EL2N: scoring models")
    parser.add_argument("--epochs", type=int, default=10, help="EL2N: epochs per model")
    parser.add_argument("--model", default="convnet1d", help="EL2N: scoring model")
    parser.add_argument("--el2n-repeats", type=int, default=5, help="EL2N: rounds of all runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only", choices=["kmeans", "el2n"], help="run one part (el2n includes proto)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from provenance import provenance

    from datapruning._io import write_json

    result: dict[str, Any] = {
        **provenance(__file__, argv, packages=("faiss-cpu", "scikit-learn")),
        "environment": environment(),
    }
    if args.only in (None, "kmeans"):
        result["kmeans"] = bench_kmeans(args)
        print(f"kmeans: {result['kmeans']}", file=sys.stderr)
    if args.only in (None, "el2n"):
        result["el2n"], el2n = bench_el2n(args)
        result["proto_vs_el2n"] = bench_proto(el2n)
    write_json(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
