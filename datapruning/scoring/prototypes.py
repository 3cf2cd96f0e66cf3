"""Self-supervised prototype scores (Sorscher et al. 2022, "Beyond neural scaling laws").

No labels are used. Each training example is embedded by a self-supervised
encoder, trained here with a SimCLR-style contrastive objective (NT-Xent on two
augmented views: random shifts, amplitude scaling and noise for 1D signals;
padded random crops and horizontal flips for images), or an encoder the user
already has (``scoring.params.proto.encoder``: a ``checkpoint.pt`` of
``datapruning train``, whose penultimate features, the input of its last Linear
layer, are the embedding; or, in Python, an ``nn.Module`` whose outputs are), or
taken from the user's embeddings (``scoring.params.proto.embeddings``, a ``.npy``
with one row per example). With your own model (``score(data, "proto", cfg, model)``)
the encoder trained is that model, and its penultimate features are the embedding,
not its class outputs (``embedding_dim`` then sizes the projection head; a model
without a Linear layer embeds with its outputs). Embeddings are L2-normalised and
clustered by spherical ``faiss.Kmeans``; an example's score is its cosine distance to the
nearest centroid: far from every prototype = hard, close = easy (prototypical).
A checkpoint trained with labels makes the scores depend on them through its
weights; the scoring itself still reads none.

Cost. The encoder trains for ``encoder_steps`` batches whatever N (by default
500, or 30 epochs' worth when a set is small enough that that is fewer: the
same batches as the old recipe there), not for epochs over every example
(``encoder_epochs``, the old recipe: 30 epochs, 30 x N forward-backward passes
before anything is scored); then one
no-grad pass embeds every row, ``embed_batch_size`` rows at a time, each chunk
assigned to its nearest centroid as it comes, so memory holds the scores and one
chunk, never every embedding. The default comes from
``bench/results/proto_scale.json`` ("budget", 20k MNIST-1D examples): the
scores' Spearman correlation with the old recipe's is 0.57 at 250 steps, 0.62 at
500, 0.79 at 1000 and 0.87 at 2000, while the old recipe run with another
encoder seed agrees with itself at 0.61; 500 is the smallest budget measured that
reaches that floor. Students on the 30%/50% hardest/easiest it selects ("quality",
3 seeds) are within 0.29 points of those on the old scores' in all four cells,
where the old recipe's own second seed differs by up to 2.84 points. At 1M
examples ``datapruning score --metric proto`` took 20.9 s and 0.94 GiB peak RSS
("scale"), where the old recipe measured 230 s at 200k and extrapolated to about
20 minutes at 1M (issue 26).

The encoder and centroids are fitted once (:func:`prepare_proto`) and, with a
work dir, saved there: the k-means runs on a seeded sample of ``k x 256`` rows
(faiss subsamples to that many points per centroid anyway; every row when the
set is smaller), so a sharded scoring (``--shard i/n``) embeds and assigns each
shard's rows against the same centroids, in chunks cut where one pass cuts them,
and merges to the unsharded scores bit for bit (tests/scoring/test_shards.py,
tests/scoring/test_prototypes_scale.py).

Progress: a bar per phase on a terminal (encoder steps, embedded rows), else one
line on stderr per tenth of each. With a work dir the encoder saves a resume
point (weights, optimizer, batch order and RNG) at each tenth of its steps, and
a rerun continues from it to the same encoder bit for bit. SIGINT/SIGTERM stop
at once with a line saying where it stopped and what the rerun reuses (that
resume point, or the saved encoder and centroids once they are), as the
seed-group metrics' do.

``k`` defaults to the dataset's number of classes (the paper's choice, known
without reading any label), else ``sqrt(N) / 2`` capped at 1000.

Selection: the paper finds keeping hard examples best when data is abundant
and easy ones when it is scarce; ``datapruning.select(scores, keep, "auto")``
applies that rule (see there for the threshold).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datapruning import user
from datapruning._interrupt import immediate_stop
from datapruning._io import atomic_write, write_once
from datapruning._progress import Progress
from datapruning.config import ModelConfig
from datapruning.data.stream import ExampleSource, as_rows
from datapruning.errors import DataPruningError, Interrupted
from datapruning.scores import Scores
from datapruning.scoring._common import MetricJob, build_scores, check_features
from datapruning.scoring.params import ProtoParams
from datapruning.train.evaluation import eval_mode

MAX_DEFAULT_K = 1000


def default_k(num_examples: int, num_classes: int | None) -> int:
    """The number of classes when known, else sqrt(N)/2 (at least 2, at most 1000)."""
    if num_classes:
        return num_classes
    return int(min(MAX_DEFAULT_K, max(2, round(math.sqrt(num_examples) / 2))))


# k-means++ seeding runs on a seeded sample of this many points per centroid:
# enough to put one seed in every well-separated cluster, and small enough that
# seeding costs a fraction of faiss's own training (bench/scoring.py: on
# 100k x 128 with k=100, inertia within 1% of scikit-learn's KMeans over three
# datasets at over 10x its speed; seeding on faiss's whole 256-per-centroid
# sample took 4x longer for no better inertia).
KMEANSPP_POINTS_PER_CENTROID = 48


def kmeanspp_init(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, int]:
    """k-means++ centres (scikit-learn's greedy variant) from a seeded sample of ``x``.

    Returns the centres and the number of rows they were chosen from.
    """
    from sklearn.cluster import kmeans_plusplus
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    size = min(len(x), k * KMEANSPP_POINTS_PER_CENTROID)
    # float64: scikit-learn computes float32 distances through a chunked float64
    # upcast: 0.23 s against 0.04 s in float64 for 4800 x 128 rows, k=100.
    sample = x[rng.choice(len(x), size=size, replace=False)].astype(np.float64)
    # One BLAS thread: the products here are small (a few candidates x the
    # sample), and a multi-threaded BLAS leaves its threads spinning after them,
    # which doubled the time of the faiss k-means that follows on two cores.
    with threadpool_limits(limits=1, user_api="blas"):
        centres, _ = kmeans_plusplus(sample, k, random_state=seed)
    return np.ascontiguousarray(centres, dtype=np.float32), size


# faiss trains k-means on at most this many points per centroid (its
# ``max_points_per_centroid``); the sample clustered here is that size, drawn
# with the seed, so faiss clusters all of it and every shard of a scoring
# reads the same centroids.
SAMPLE_POINTS_PER_CENTROID = 256


def sample_rows(num_rows: int, k: int, seed: int) -> np.ndarray:
    """The rows k-means clusters: all of them up to k x 256, else a seeded sample (sorted)."""
    size = min(num_rows, k * SAMPLE_POINTS_PER_CENTROID)
    if size == num_rows:
        return np.arange(num_rows)
    return np.sort(np.random.default_rng(seed).choice(num_rows, size=size, replace=False))


def normalised(embeddings: np.ndarray) -> np.ndarray:
    """Rows of ``embeddings`` scaled to unit length (float32), refusing bad input."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise DataPruningError(f"embeddings must be a 2-D array (N, d), got shape {x.shape}")
    check_features(x, "embeddings")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise DataPruningError("embeddings contain all-zero rows, which have no direction")
    return x / norms


def cluster(x: np.ndarray, k: int, niter: int = 25, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Spherical k-means centroids (k, d) of unit rows ``x``, and a record of the clustering.

    faiss's k-means starts from k random points, which on well-separated
    clusters often leaves two centroids in one cluster and none in another
    (10% worse inertia than scikit-learn in bench/scoring.py); it is seeded
    here with k-means++ on a sample of k x 48 points.
    """
    import faiss

    if not 1 <= k <= len(x):
        raise DataPruningError(f"k={k} clusters for {len(x)} examples; choose k in 1..{len(x)}")
    kmeans = faiss.Kmeans(x.shape[1], k, niter=niter, spherical=True, seed=seed, verbose=False)
    init, sample_size = kmeanspp_init(x, k, seed)
    kmeans.train(x, init_centroids=init)
    info = {
        "k": k,
        "niter": niter,
        "init": f"k-means++ on {sample_size} sampled rows",
        "objective": float(kmeans.obj[-1]) if len(kmeans.obj) else None,
    }
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32), info


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distance of each unit row of ``x`` to its nearest centroid, and that centroid."""
    return Assigner(centroids, "exact")(x)


# Nearest-centroid search: exact (faiss IndexFlatIP, one BLAS product per chunk)
# unless ``index: hnsw`` asks for faiss's HNSW graph. Measured first
# (bench/results/proto_scale.json, "assign": 100k random unit rows, d=64, on this
# 2-core machine), the exact search is not the bottleneck at any k the default
# allows: 0.1-0.5 s for k=10..1000, 2.1 s at k=4096 and 3.9 s at 8192. HNSW took
# 3-15x longer from k=100 on and missed 0.7% (k=4096) to 2% (k=8192) of the
# nearest centroids; IVF (sqrt(k) lists, 8 probed; in the bench only) was 2-3x
# faster from k=4096 but found the nearest centroid for only 47-69% of the rows
# from k=1000 on. The k-means itself costs niter x 256 x k rows' products against
# the search's N x k, so the search only dominates past N = 6400 k examples.
# Exact is the default; HNSW is there for very large k on clustered embeddings,
# where graphs do better than on these random rows.
class Assigner:
    """Cosine distance to the nearest centroid, by exact search or an HNSW index (built once)."""

    def __init__(self, centroids: np.ndarray, index: str = "exact") -> None:
        import faiss

        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        dim = self.centroids.shape[1]
        self.kind = index
        if index == "exact":
            self.index = faiss.IndexFlatIP(dim)
        elif index == "hnsw":
            self.index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = 80
            self.index.hnsw.efSearch = 64
        else:
            raise DataPruningError(f"scoring.params.proto.index {index!r}: give exact or hnsw")
        self.index.add(self.centroids)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distances (float64) and nearest centroids of the unit rows ``x``."""
        similarity, assignment = self.index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
        # Rounding can leave a point a hair inside its centroid's direction.
        return np.clip(1.0 - similarity[:, 0].astype(np.float64), 0.0, 2.0), assignment[:, 0]

    def record(self) -> dict[str, Any]:
        if self.kind == "exact":
            return {"kind": "exact", "faiss": "IndexFlatIP"}
        return {"kind": "hnsw", "faiss": "IndexHNSWFlat", "M": 32, "ef_search": 64}


def prototype_scores(
    embeddings: np.ndarray, k: int, niter: int = 25, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Cosine distance of each row to its nearest spherical k-means centroid.

    The centroids are fitted on :func:`sample_rows` (every row up to k x 256).
    Returns the scores (N,) and a record of the clustering (k, niter, init,
    objective, cluster sizes).
    """
    x = normalised(embeddings)
    if not 1 <= k <= len(x):
        raise DataPruningError(f"k={k} clusters for {len(x)} examples; choose k in 1..{len(x)}")
    sample = sample_rows(len(x), k, seed)
    centroids, info = cluster(x[sample], k, niter, seed)
    scores, assignment = assign(x, centroids)
    info["cluster_sizes"] = np.bincount(assignment, minlength=k).tolist()
    return scores, info


# ----------------------------------------------------------------- encoder


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view of a batch: shifts/scale/noise for 1D signals, crops/flips for images."""
    if x.dim() == 4:  # images (B, C, H, W)
        pad = max(1, x.shape[-1] // 8)
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy, dx = torch.randint(0, 2 * pad + 1, (2, len(x)), generator=generator)
        rows = torch.arange(x.shape[-2])[None, :] + dy[:, None]
        cols = torch.arange(x.shape[-1])[None, :] + dx[:, None]
        batch = torch.arange(len(x))[:, None, None]
        crops = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        crops = crops.permute(0, 3, 1, 2)
        flip = torch.rand(len(x), generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], crops.flip(-1), crops)
    # signals (B, L) or (B, C, L): circular shift, amplitude scale, additive noise
    length = x.shape[-1]
    max_shift = max(1, length // 10)
    shifts = torch.randint(-max_shift, max_shift + 1, (len(x),), generator=generator)
    positions = (torch.arange(length)[None, :] - shifts[:, None]) % length
    view = torch.gather(x, -1, positions.view(len(x), *([1] * (x.dim() - 2)), length).expand_as(x))
    scale = 1 + 0.2 * (2 * torch.rand(len(x), generator=generator) - 1)
    view = view * scale.view(-1, *([1] * (x.dim() - 1)))
    noise = torch.randn(x.shape, generator=generator) * 0.1 * x.std()
    return view + noise


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy over 2B views."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    n = len(z1)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(similarity, targets)


def new_encoder(
    example: np.ndarray,
    model_name: str,
    model_params: dict[str, Any],
    proto: ProtoParams,
    build: Callable[[], nn.Module] | None = None,
) -> tuple[nn.Module, int]:
    """An untrained encoder (from torch's RNG) and its embedding size; ``example``: 2 rows.

    A registered model is built with ``proto.embedding_dim`` outputs, which are the
    embedding. The user's model (``build``) is a classifier as given: its penultimate
    features (the input of its last ``nn.Linear``) are the embedding, not its class
    outputs; a model without a Linear layer embeds with its outputs.
    """
    from datapruning.models import build_model

    if build is None:
        dim = proto.embedding_dim
        return build_model(model_name, tuple(example.shape[1:]), dim, **model_params), dim
    encoder = build()
    if any(isinstance(module, nn.Linear) for module in encoder.modules()):
        encoder = Penultimate(encoder)
    return encoder, output_dim(encoder, example)


def output_dim(encoder: nn.Module, example: np.ndarray) -> int:
    """The size of ``encoder``'s flattened output on ``example`` (2 rows)."""
    with torch.no_grad(), eval_mode(encoder):
        return int(encoder(torch.as_tensor(example)).reshape(len(example), -1).shape[1])


# The default step budget is capped at this many epochs (the recipe before the step
# budget) on sets small enough that the default would be more: 4000 examples in
# batches of 256 take 480 steps, as they did; the batches are the same.
DEFAULT_MAX_EPOCHS = 30


@dataclass
class Stage:
    """Where a proto scoring is, and what it has saved: the interrupt message's parts."""

    now: str = "preparing"
    saved: str | None = None


class Batches:
    """The encoder's batches (row indices): ``encoder_steps`` batches walking seeded
    permutations of the rows (a new one each time one is used up), or
    ``encoder_epochs`` passes over every row. A last batch of one is dropped: NT-Xent
    needs a negative for every view. Its position is part of the encoder's resume point.
    """

    def __init__(
        self, num_rows: int, batch_size: int, proto: ProtoParams, generator: torch.Generator
    ) -> None:
        self.num_rows, self.batch_size, self.generator = num_rows, batch_size, generator
        self.starts = [
            s for s in range(0, num_rows - 1, batch_size) if min(s + batch_size, num_rows) - s > 1
        ]
        if proto.steps is None:
            assert proto.encoder_epochs is not None
            self.total = proto.encoder_epochs * len(self.starts)
        elif proto.encoder_steps is None:
            # The default budget, but never more than the old recipe's epochs on a small set.
            self.total = min(proto.steps, DEFAULT_MAX_EPOCHS * len(self.starts))
        else:
            self.total = proto.steps
        self.order: torch.Tensor | None = None
        self.position, self.given = 0, 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        while self.given < self.total:
            if self.order is None or self.position == len(self.starts):
                self.order = torch.randperm(self.num_rows, generator=self.generator)
                self.position = 0
            start_at = self.starts[self.position]
            self.position += 1
            self.given += 1
            yield self.order[start_at : start_at + self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {
            "order": self.order,
            "position": self.position,
            "given": self.given,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.position, self.given = state["order"], state["position"], state["given"]
        self.generator.set_state(state["generator"])


# The layout of the encoder's resume file (proto-<key>.encoder.pt); bump on change.
ENCODER_RESUME_FORMAT = 1


def train_encoder(
    x: np.ndarray | ExampleSource,
    model_name: str,
    model_params: dict[str, Any],
    proto: ProtoParams,
    progress: bool | None = None,
    build: Callable[[], nn.Module] | None = None,
    resume: Path | None = None,
    stage: Stage | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A SimCLR-style encoder on ``x`` alone; returns it and its training record.

    Its budget is ``proto.encoder_steps`` batches whatever the size of ``x`` (or
    ``proto.encoder_epochs`` passes over every row, the cost growing with N).
    ``build`` makes the user's own encoder instead of the registered ``model_name``
    with ``proto.embedding_dim`` outputs; its outputs are then the embedding.
    With ``resume`` (a file path), a resume point is saved there atomically at each
    tenth of the steps and training continues from it when it exists: the same
    encoder, bit for bit, as training in one go.
    """
    start = time.perf_counter()
    data = as_rows(x)  # a streaming set: each batch read from the source (uint8 until then)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(proto.seed)
        encoder, dim = new_encoder(np.asarray(data[:2]), model_name, model_params, proto, build)
        # The projection head; scores use the encoder's output before it. A registered
        # encoder already outputs embedding_dim; the user's gets a head to that size.
        projection = dim if build is None else proto.embedding_dim
        head = nn.Sequential(nn.ReLU(), nn.Linear(dim, projection))
    generator = torch.Generator().manual_seed(proto.seed)
    parameters = [*encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=proto.lr)
    batch_size = min(proto.batch_size, len(data))
    batches = Batches(len(data), batch_size, proto, generator)
    total = batches.total
    # Counters: steps, examples seen, the running block's loss sum and rows, last block's mean.
    counts: dict[str, Any] = {"seen": 0, "block_loss": 0.0, "block_rows": 0, "last_loss": None}
    earlier_seconds = 0.0
    if resume is not None and resume.is_file():
        try:
            state = torch.load(resume, map_location="cpu", weights_only=True)
            if state.get("format") != ENCODER_RESUME_FORMAT:
                raise ValueError("another layout")
            encoder.load_state_dict(state["encoder"])
            head.load_state_dict(state["head"])
            optimizer.load_state_dict(state["optimizer"])
            batches.load_state_dict(state["batches"])
            counts = json.loads(state["counts"])
            earlier_seconds = float(counts.pop("seconds"))
        except (OSError, RuntimeError, EOFError, ValueError, KeyError, pickle.UnpicklingError):
            # A damaged or foreign file: train from the start.
            return train_encoder(x, model_name, model_params, proto, progress, build, None, stage)
    bar = Progress("proto encoder", total, "steps", progress)
    if batches.given:
        bar.update(batches.given)
    resumed_at = batches.given
    encoder.train()
    try:
        for index in batches:
            batch = data[index]
            z1 = head(encoder(augment(batch, generator)))
            z2 = head(encoder(augment(batch, generator)))
            loss = nt_xent(z1, z2, proto.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            counts["block_loss"] += loss.item() * len(batch)
            counts["block_rows"] += len(batch)
            counts["seen"] += len(batch)
            steps = batches.given
            if steps % max(1, total // 10) == 0 or steps == total:
                counts["last_loss"] = counts["block_loss"] / counts["block_rows"]
                counts["block_loss"], counts["block_rows"] = 0.0, 0
                bar.update(steps - bar.done, f"loss {counts['last_loss']:.3f}")
                if resume is not None and steps < total:
                    seconds = earlier_seconds + time.perf_counter() - start
                    _save_resume(resume, encoder, head, optimizer, batches, counts, seconds)
                    if stage is not None:
                        stage.saved = (
                            f"encoder step {steps} of {total} saved in "
                            f"{str(resume.parent)!r}, the rerun continues from it"
                        )
    finally:
        bar.close()
    encoder.eval()
    record = {
        "name": "simclr",
        "backbone": model_name,
        "backbone_params": dict(model_params),
        "embedding_dim": dim,
        **(
            {}
            if build is None
            else {
                "features": "penultimate (the input of its last Linear layer)"
                if isinstance(encoder, Penultimate)
                else "outputs",
                "projection_dim": projection,
            }
        ),
        "budget": "epochs" if proto.encoder_epochs is not None else "steps",
        "epochs": proto.encoder_epochs,
        "steps": batches.given,
        "examples_seen": counts["seen"],
        "batch_size": batch_size,
        "lr": proto.lr,
        "temperature": proto.temperature,
        "final_loss": counts["last_loss"],  # mean NT-Xent over the last tenth of the steps
        "seconds": earlier_seconds + time.perf_counter() - start,
        "resumed_at_step": resumed_at,
    }
    return encoder, record


def _save_resume(
    path: Path,
    encoder: nn.Module,
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Batches,
    counts: dict[str, Any],
    seconds: float,
) -> None:
    state = {
        "format": ENCODER_RESUME_FORMAT,
        "encoder": encoder.state_dict(),
        "head": head.state_dict(),
        "optimizer": optimizer.state_dict(),
        "batches": batches.state_dict(),
        "counts": json.dumps({**counts, "seconds": seconds}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _chunk(x: np.ndarray | ExampleSource, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` as a float32 tensor (a stored uint8 set becomes float here)."""
    if isinstance(x, ExampleSource):
        return torch.from_numpy(x.read_float(np.arange(start, stop)))
    return torch.from_numpy(np.ascontiguousarray(x[start:stop], dtype=np.float32))


def chunks(rows: range, size: int) -> Iterator[tuple[int, int]]:
    """``rows`` in chunks whose bounds are multiples of ``size`` (as in an unsharded pass),
    so a shard's rows are cut where one pass over every row cuts them."""
    start = rows.start
    while start < rows.stop:
        stop = min(rows.stop, (start // size + 1) * size)
        yield start, stop
        start = stop


@torch.no_grad()
def embed(
    encoder: nn.Module,
    x: np.ndarray | ExampleSource,
    batch_size: int = 4096,
    rows: range | np.ndarray | None = None,
) -> np.ndarray:
    """Embeddings (n, d) float32 of ``rows`` of ``x`` (all by default) in no-grad chunks."""
    return np.concatenate(list(embed_chunks(encoder, x, batch_size, rows)))


@torch.no_grad()
def embed_chunks(
    encoder: nn.Module,
    x: np.ndarray | ExampleSource,
    batch_size: int,
    rows: range | np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """The embeddings of ``rows`` of ``x``, one float32 chunk of ``batch_size`` rows at a
    time (a range is cut at multiples of ``batch_size``: :func:`chunks`)."""
    if rows is None:
        rows = range(len(x))
    if isinstance(rows, range):
        parts: Iterator[torch.Tensor] = (_chunk(x, a, b) for a, b in chunks(rows, batch_size))
    else:
        parts = (_chunk_at(x, rows[i : i + batch_size]) for i in range(0, len(rows), batch_size))
    for part in parts:
        yield encoder(part).reshape(len(part), -1).numpy()


def _chunk_at(x: np.ndarray | ExampleSource, indices: np.ndarray) -> torch.Tensor:
    if isinstance(x, ExampleSource):
        return torch.from_numpy(x.read_float(np.asarray(indices, dtype=np.int64)))
    return torch.from_numpy(np.ascontiguousarray(x[indices], dtype=np.float32))


class Penultimate(nn.Module):
    """A classifier's penultimate features: the input of its last ``nn.Linear``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise DataPruningError(
                f"{type(model).__name__} has no nn.Linear layer whose input could serve as "
                "penultimate features; give scoring.params.proto.encoder an nn.Module instead"
            )
        self.model, self.last = model, linears[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen: list[torch.Tensor] = []
        handle = self.last.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        return seen[-1].reshape(len(x), -1)


def file_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def given_encoder(encoder: Any, dataset: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The user's encoder (``scoring.params.proto.encoder``) in eval mode, and its record:
    a checkpoint of this project's training loop (its penultimate features) or a module
    (its outputs)."""
    example = dataset.read_train(np.arange(min(2, dataset.num_train)))
    if isinstance(encoder, nn.Module):
        encoder.eval()
        kind = type(encoder)
        record = {
            "name": "module",
            "class": f"{kind.__module__}.{kind.__qualname__}",
            "weights": user.weights_hash(encoder),
        }
    else:
        from datapruning.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, load_model

        path = Path(encoder)
        if path.is_dir():
            path = path / CHECKPOINT_NAME
        state = load_checkpoint(path)  # one-line errors for a missing or foreign file
        shape = tuple(state.get("input_shape") or ())
        if shape != tuple(dataset.input_shape):
            raise DataPruningError(
                f"scoring.params.proto.encoder {str(path)!r} takes inputs of shape {shape}, "
                f"this dataset's are {tuple(dataset.input_shape)}; give an encoder of this input"
            )
        model = load_model(path)
        encoder = Penultimate(model).eval()
        record = {
            "name": "checkpoint",
            "path": str(path),
            "blake2b": file_hash(path),
            "model": state["model"],
            "model_params": state["model_params"],
            "trained_on": state.get("dataset_fingerprint"),
            "features": "penultimate (the input of its last Linear layer)",
        }
    record["embedding_dim"] = output_dim(encoder, np.asarray(example, dtype=np.float32))
    return encoder, record


def load_embeddings(path: str | os.PathLike[str], num_examples: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DataPruningError(f"embeddings file {str(path)!r} not found")
    try:
        # Memory-mapped: a shard reads only its own rows.
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError):  # EOFError: an empty file
        raise DataPruningError(f"{str(path)!r} is not a .npy array of embeddings") from None
    if array.ndim != 2:
        raise DataPruningError(f"embeddings must be a 2-D array (N, d), got shape {array.shape}")
    if len(array) != num_examples:
        raise DataPruningError(
            f"embeddings have {len(array)} rows but the training set has {num_examples}; "
            "give one row per training example, in dataset order"
        )
    if not np.issubdtype(array.dtype, np.number):
        raise DataPruningError(f"embeddings must be numeric, got dtype {array.dtype}")
    return array


@dataclass
class Prepared:
    """What every shard of a proto scoring shares: the encoder (None: user embeddings),
    the centroids, and the record of both."""

    encoder: nn.Module | None
    centroids: np.ndarray
    params: dict[str, Any]
    model: dict[str, Any] | None
    seconds: float


# The layout of prepared.pt (encoder state, centroids, record); part of the key.
# 3: a user model's encoder is its penultimate features, with its own projection head.
PREPARED_FORMAT = 3


def _threads(job: MetricJob) -> AbstractContextManager[None]:
    """Of ``job.train`` only ``threads`` applies to proto (the encoder has its own recipe)."""

    @contextmanager
    def limited() -> Iterator[None]:
        previous = torch.get_num_threads()
        if job.train.threads:
            torch.set_num_threads(job.train.threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    return limited()


def _k(job: MetricJob) -> int:
    proto, num_examples = job.params, job.dataset.num_train
    k = proto.k if proto.k is not None else default_k(num_examples, job.dataset.num_classes)
    if k > num_examples:
        raise DataPruningError(
            f"scoring.params.proto.k={k} is larger than the {num_examples} training examples; lower k"
        )
    return k


def _prepared_path(
    job: MetricJob, model: dict[str, Any] | None, k: int, given: dict[str, Any] | None
) -> Path | None:
    if job.work_dir is None:
        return None
    identity = {
        "dataset": job.dataset.fingerprint,
        "params": job.params.model_dump(mode="json"),
        "model": model,
        # A given encoder by its content (a checkpoint's file hash, a module's weights).
        "encoder": given,
        "k": k,
        "format": PREPARED_FORMAT,
    }
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    return Path(job.work_dir) / f"proto-{hashlib.blake2b(blob, digest_size=8).hexdigest()}.pt"


def _encoder_builder(job: MetricJob) -> Callable[[], nn.Module] | None:
    return None if isinstance(job.model, ModelConfig) else user.per_seed(job.model)


def _prepare(job: MetricJob, stage: Stage) -> Prepared:
    """Train the encoder (or take the user's encoder or embeddings), embed the clustered
    sample and fit the centroids; saved in ``job.work_dir`` and read back from there by
    every shard. ``stage`` is told where the work is, for an interrupt's message."""
    start = time.perf_counter()
    dataset, proto = job.dataset, job.params
    x = dataset.x_train
    k = _k(job)
    check_features(x)
    given_record = None
    encoder: nn.Module | None = None
    if proto.encoder is not None:
        encoder, given_record = given_encoder(proto.encoder, dataset)
    trains = proto.embeddings is None and proto.encoder is None
    model = user.record(job.model, dataset) if trains else None
    path = _prepared_path(job, model, k, given_record)
    if path is not None and path.is_file():
        prepared = _load_prepared(job, path, model, encoder)
        if prepared is not None:
            stage.saved = (
                f"encoder and centroids saved in {str(path.parent)!r}, "
                "the rerun only embeds and assigns"
            )
            return prepared
    sample = sample_rows(dataset.num_train, k, proto.seed)
    if proto.embeddings is not None:
        source = load_embeddings(proto.embeddings, dataset.num_train)
        embeddings = np.asarray(source if len(sample) == len(source) else source[sample])
        encoder_record: dict[str, Any] = {"name": "user", "path": str(proto.embeddings)}
    else:
        if encoder is None:
            assert model is not None
            stage.now = "training the encoder"
            resume = path.with_name(path.stem + ".encoder.pt") if path is not None else None
            encoder, encoder_record = train_encoder(
                x,
                model["name"],
                model["params"],
                proto,
                job.progress,
                _encoder_builder(job),
                resume,
                stage,
            )
        else:
            assert given_record is not None
            encoder_record = given_record
        stage.now = "embedding the clustered sample"
        rows = range(dataset.num_train) if len(sample) == dataset.num_train else sample
        embeddings = embed(encoder, x, proto.embed_batch_size, rows)
    stage.now = "clustering"
    centroids, clustering = cluster(normalised(embeddings), k, proto.niter, proto.seed)
    params = {
        **clustering,
        "clustered_rows": len(sample),
        "embedding_dim": int(embeddings.shape[1]),
        "encoder": encoder_record,
        "seed": proto.seed,
    }
    seconds = time.perf_counter() - start
    if path is not None:
        state = {
            # Only a trained encoder is saved: a given one is the user's to keep.
            "encoder": encoder.state_dict() if trains and encoder is not None else None,
            "centroids": torch.from_numpy(centroids),
            "record": json.dumps({"params": params, "seconds": seconds}),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        written = write_once(path, lambda tmp: torch.save(state, tmp))
        stage.saved = (
            f"encoder and centroids saved in {str(path.parent)!r}, "
            "the rerun only embeds and assigns"
        )
        path.with_name(path.stem + ".encoder.pt").unlink(missing_ok=True)
        if not written:
            # Another shard saved first: use its encoder and centroids, as every shard does.
            prepared = _load_prepared(job, path, model, encoder)
            if prepared is not None:
                return prepared
    return Prepared(encoder, centroids, params, model, seconds)


def _load_prepared(
    job: MetricJob, path: Path, model: dict[str, Any] | None, given: nn.Module | None
) -> Prepared | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        record = json.loads(state["record"])
    except (OSError, RuntimeError, EOFError, ValueError, KeyError, pickle.UnpicklingError):
        return None  # a damaged file is prepared again
    encoder = given
    if state["encoder"] is not None:
        assert model is not None
        encoder, _ = new_encoder(
            job.dataset.read_train(np.arange(2)),  # from memory or the stream
            model["name"],
            model["params"],
            job.params,
            _encoder_builder(job),
        )
        encoder.load_state_dict(state["encoder"])
        encoder.eval()
    return Prepared(
        encoder, state["centroids"].numpy(), record["params"], model, float(record["seconds"])
    )


@contextmanager
def _interruptible(job: MetricJob, stage: Stage) -> Iterator[None]:
    """SIGINT/SIGTERM stop at once with a line saying what is saved for the rerun (as the
    seed-group metrics' :class:`~datapruning.scoring._common.SeedStore` does)."""
    try:
        with immediate_stop():
            yield
    except Interrupted as exc:
        if job.work_dir is None:
            saved = "nothing saved (no work dir)"
        elif stage.saved is not None:
            saved = stage.saved
        else:
            saved = f"nothing saved yet in {str(job.work_dir)!r}"
        raise Interrupted(exc.signum, f"proto stopped while {stage.now}; {saved}") from None


def prepare_proto(job: MetricJob) -> float:
    """Encoder and centroids of a sharded proto scoring, saved in ``job.work_dir``; seconds."""
    stage = Stage()
    with _threads(job), _interruptible(job, stage):
        return _prepare(job, stage).seconds


def score_proto(job: MetricJob) -> Scores:
    """Self-supervised prototype scores; reads only ``dataset.x_train``, never labels.

    The encoder has its own recipe (``scoring.params.proto``); of ``job.train``
    only ``threads`` applies. The encoder and centroids are computed once
    (:func:`prepare_proto`); with ``job.shard`` they are read from ``work_dir``
    when a shard saved them there, and only the shard's rows are embedded and
    assigned, a chunk of ``embed_batch_size`` rows at a time: memory holds the
    scores and one chunk, not the embeddings of every row.
    """
    stage = Stage()
    with _threads(job), _interruptible(job, stage):
        prepared = _prepare(job, stage)
        began = time.perf_counter()
        rows = job.rows()
        proto = job.params
        assigner = Assigner(prepared.centroids, proto.index)
        values = np.empty(len(rows), dtype=np.float64)
        assignment = np.empty(len(rows), dtype=np.int64)
        if prepared.encoder is None:
            source = load_embeddings(proto.embeddings, job.dataset.num_train)
            parts: Iterator[np.ndarray] = (
                np.asarray(source[a:b]) for a, b in chunks(rows, proto.embed_batch_size)
            )
        else:
            parts = embed_chunks(
                prepared.encoder, job.dataset.x_train, proto.embed_batch_size, rows
            )
        stage.now = "embedding and assigning"
        bar = Progress("proto embed", len(rows), "rows", job.progress)
        done = 0
        try:
            for part in parts:
                values[done : done + len(part)], assignment[done : done + len(part)] = assigner(
                    normalised(part)
                )
                done += len(part)
                bar.update(len(part))
        finally:
            bar.close()
        params = dict(prepared.params)
        params["assignment"] = assigner.record()
        params["cluster_sizes"] = np.bincount(
            assignment, minlength=len(prepared.centroids)
        ).tolist()
        seconds = time.perf_counter() - began
        prepare_seconds = prepared.seconds
        if job.shard is None:
            seconds, prepare_seconds = seconds + prepare_seconds, 0.0
        # else the preparation is counted once, when the shards merge
        return build_scores(
            job.dataset,
            "proto",
            {proto.seed: values},
            params=params,
            model=prepared.model,
            seconds=seconds,
            shard=job.shard,
            prepare_seconds=prepare_seconds,
        )
