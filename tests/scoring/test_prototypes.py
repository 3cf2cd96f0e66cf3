"""Self-supervised prototypes: clustering, the encoder, and that no label is read."""

import inspect
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from datapruning.config import ModelConfig, ScoringConfig
from datapruning.data.sources import load_dataset
from datapruning.errors import DataPruningError
from datapruning.scoring import _common, get_metric, score
from datapruning.scoring.params import ProtoParams
from datapruning.scoring.prototypes import (
    augment,
    default_k,
    nt_xent,
    prototype_scores,
    score_proto,
)

# A short encoder run: enough to check the plumbing, not the quality.
QUICK = ProtoParams(encoder_steps=20, embedding_dim=16, batch_size=128)


def blobs(n_per=100, k=4, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.eye(dim)[:k] * 5
    x = np.concatenate([c + rng.normal(size=(n_per, dim)) * 0.3 for c in centers])
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_prototype_scores_are_cosine_distances_to_the_nearest_centroid():
    x, _ = blobs()
    scores, info = prototype_scores(x, k=4, niter=20)
    assert scores.shape == (400,)
    assert info["k"] == 4 and info["niter"] == 20
    assert sorted(info["cluster_sizes"]) == [100, 100, 100, 100]
    # Spherical k-means converges to the blobs; each centroid is the normalised
    # mean direction of its blob, and a score is 1 - cos(x, centroid).
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    blob = np.repeat(np.arange(4), 100)
    centroids = np.stack([unit[blob == c].mean(axis=0) for c in range(4)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    want = 1 - np.einsum("nd,nd->n", unit, centroids[blob])
    np.testing.assert_allclose(scores, want, atol=1e-4)
    assert np.all((scores >= 0) & (scores <= 2))


def test_an_outlier_scores_hardest():
    x, _ = blobs()
    x[17] = np.ones(8)  # between every cluster
    scores, _ = prototype_scores(x, k=4)
    assert np.argmax(scores) == 17


def test_scale_does_not_matter():
    x, _ = blobs()
    rows = np.random.default_rng(1).uniform(0.1, 10, size=(400, 1)).astype(np.float32)
    np.testing.assert_allclose(
        prototype_scores(x * rows, 4)[0], prototype_scores(x, 4)[0], atol=1e-5
    )


@pytest.mark.parametrize(
    ("array", "k", "message"),
    [
        (np.ones((5, 3)), 6, "k=6 clusters for 5 examples"),
        (np.ones((5, 3)), 0, "k=0"),
        (np.array([[1.0, np.nan], [1.0, 2.0]]), 1, "NaN or inf"),
        (np.array([[1.0, np.inf], [1.0, 2.0]]), 1, "NaN or inf"),
        (np.array([[0.0, 0.0], [1.0, 2.0]]), 1, "all-zero rows"),
        (np.ones(5), 1, "2-D"),
    ],
)
def test_prototype_scores_refuse_bad_input(array, k, message):
    with pytest.raises(DataPruningError, match=message):
        prototype_scores(array, k)


def test_default_k():
    assert default_k(4000, 10) == 10
    assert default_k(4000, None) == 32  # sqrt(4000) / 2
    assert default_k(4, None) == 2
    assert default_k(10**8, None) == 1000


def test_augment_keeps_shapes_and_changes_values():
    generator = torch.Generator().manual_seed(0)
    for shape in [(8, 40), (8, 2, 40), (8, 3, 16, 16)]:
        x = torch.randn(shape)
        view = augment(x, generator)
        assert view.shape == x.shape
        assert not torch.allclose(view, x)
    # An image crop only moves pixels (flips and shifts with reflected borders).
    image = torch.rand(4, 3, 16, 16)
    view = augment(image, generator)
    assert view.min() >= image.min() and view.max() <= image.max()


def test_nt_xent_prefers_matching_views():
    z = torch.randn(16, 8)
    matched = nt_xent(z, z + 0.01 * torch.randn_like(z), 0.5)
    shuffled = nt_xent(z, z[torch.randperm(16)], 0.5)
    assert matched < shuffled


class LabelFreeView:
    """A dataset whose labels may be read only to fill the table's label column."""

    def __init__(self, dataset):
        self._dataset = dataset
        self.readers: list[str] = []

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    @property
    def y_train(self):
        caller = inspect.stack()[1]
        self.readers.append(f"{caller.frame.f_globals['__name__']}.{caller.function}")
        return self._dataset.y_train

    @property
    def y_test(self):
        raise AssertionError("proto read the test labels")


def test_proto_reads_no_labels(digits):
    view = LabelFreeView(digits)
    scores = score(view, "proto", ScoringConfig(params={"proto": QUICK}), progress=False)
    # The only read fills the label column after the scores are computed.
    assert view.readers == [f"{_common.__name__}.build_scores"]
    assert len(scores) == digits.num_train
    # Shuffled labels leave every score unchanged.
    shuffled = SimpleNamespace(
        **{**vars(digits), "y_train": np.random.default_rng(0).permutation(digits.y_train)}
    )
    shuffled.num_train = digits.num_train
    shuffled.input_shape = digits.input_shape
    shuffled.fingerprint = digits.fingerprint
    again = score(shuffled, "proto", ScoringConfig(params={"proto": QUICK}), progress=False)
    np.testing.assert_array_equal(again.values, scores.values)


def test_score_proto_trains_an_encoder_and_records_it(digits):
    assert get_metric("proto").function is score_proto
    scores = score(
        digits,
        "proto",
        ScoringConfig(params={"proto": QUICK}),
        ModelConfig(name="mlp", params={"hidden": 32}),
        progress=False,
    )
    meta = scores.metadata
    assert meta["metric"] == "proto"
    assert meta["params"]["k"] == 10  # the dataset's classes
    assert meta["params"]["niter"] == 25
    encoder = meta["params"]["encoder"]
    assert encoder["name"] == "simclr" and encoder["backbone"] == "mlp"
    assert encoder["budget"] == "steps" and encoder["steps"] == 20
    # One pass of 11 batches (the last of 67 rows), then 9 of the next.
    assert encoder["examples_seen"] == 1347 + 9 * 128 and encoder["epochs"] is None
    assert encoder["seconds"] > 0
    assert meta["model"] == {"name": "mlp", "params": {"hidden": 32}}
    assert list(scores.table.columns) == ["index", "score", "label", "score_seed0"]
    assert scores.values.std() > 0


def test_score_proto_with_user_embeddings(digits, tmp_path):
    path = tmp_path / "emb.npy"
    # The raw pixels as "embeddings": no encoder is trained.
    np.save(path, digits.x_train)
    scores = score(
        digits,
        "proto",
        ScoringConfig(params={"proto": ProtoParams(embeddings=path, k=7)}),
        progress=False,
    )
    assert scores.metadata["params"]["encoder"] == {"name": "user", "path": str(path)}
    assert scores.metadata["params"]["k"] == 7
    assert scores.metadata["model"] is None
    np.testing.assert_allclose(scores.values, prototype_scores(digits.x_train, 7)[0])


@pytest.mark.parametrize(
    ("embeddings", "k", "message"),
    [
        (np.ones((10, 4)), None, "10 rows but the training set has 1347"),
        ("nan", None, "NaN or inf"),
        (None, 5000, "larger than the 1347 training examples"),
    ],
)
def test_score_proto_refuses_bad_input(digits, tmp_path, embeddings, k, message):
    path = None
    if embeddings is not None:
        if isinstance(embeddings, str):
            embeddings = digits.x_train.copy()
            embeddings[3, 0] = np.nan
        path = tmp_path / "emb.npy"
        np.save(path, embeddings)
    cfg = ScoringConfig(params={"proto": ProtoParams(embeddings=path, k=k)})
    with pytest.raises(DataPruningError, match=message):
        score(digits, "proto", cfg, progress=False)
