"""Property tests of the sampler invariants over many sizes, fractions, ranks and epochs."""

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datapruning.data.samplers import RS2Sampler, SubsetSampler

# Timing is not what these test: a loaded CI machine must not fail them.
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def subset_samplers(draw):
    num_samples = draw(st.integers(1, 300))
    size = draw(st.integers(1, num_samples))
    seed = draw(st.integers(0, 2**16))
    indices = np.random.default_rng(seed).choice(num_samples, size=size, replace=False)
    world = draw(st.integers(1, 8))
    drop_last = draw(st.booleans())
    if drop_last and size < world:
        drop_last = False  # too few indices to give every rank one
    shuffle = draw(st.booleans())

    def make(rank):
        return SubsetSampler(
            indices, shuffle=shuffle, seed=seed, num_replicas=world, rank=rank, drop_last=drop_last
        )

    return make, world, drop_last, draw(st.integers(0, 50))


@st.composite
def rs2_samplers(draw):
    num_samples = draw(st.integers(1, 300))
    fraction = draw(st.floats(0.01, 1.0))
    replacement = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    world = draw(st.integers(1, 8))
    drop_last = draw(st.booleans())
    if drop_last and math.ceil(fraction * num_samples - 1e-9) < world:
        drop_last = False
    stratify = None
    if draw(st.booleans()):
        stratify = np.random.default_rng(seed).integers(0, draw(st.integers(1, 5)), num_samples)

    def make(rank):
        return RS2Sampler(
            num_samples,
            fraction,
            replacement=replacement,
            stratify=stratify,
            seed=seed,
            num_replicas=world,
            rank=rank,
            drop_last=drop_last,
        )

    return make, world, drop_last, draw(st.integers(0, 50))


def check_sharding(make, world, drop_last, epoch):
    samplers = [make(rank) for rank in range(world)]
    for sampler in samplers:
        sampler.set_epoch(epoch)
    epoch_indices = samplers[0].epoch_indices()
    # Every rank computes the same epoch.
    for sampler in samplers[1:]:
        np.testing.assert_array_equal(sampler.epoch_indices(), epoch_indices)
    shares = [list(sampler) for sampler in samplers]
    # Equal sizes, and len() is what each rank yields.
    assert {len(share) for share in shares} == {len(samplers[0])}
    gathered = [i for share in shares for i in share]
    if drop_last:
        assert len(samplers[0]) == len(epoch_indices) // world
        # Disjoint, and all drawn from the epoch.
        assert len(set(gathered)) == len(gathered)
        assert set(gathered) <= set(epoch_indices.tolist())
        assert len(epoch_indices) - len(gathered) < world
    else:
        assert len(samplers[0]) == math.ceil(len(epoch_indices) / world)
        # The union is the epoch; only the padding (fewer than `world`) repeats.
        assert set(gathered) == set(epoch_indices.tolist())
        assert len(gathered) - len(epoch_indices) < world
        if len(epoch_indices) % world == 0:
            assert len(set(gathered)) == len(gathered)
    return epoch_indices


@SETTINGS
@given(subset_samplers())
def test_subset_sampler_shards_like_distributed_sampler(case):
    make, world, drop_last, epoch = case
    epoch_indices = check_sharding(make, world, drop_last, epoch)
    # The epoch is exactly the subset.
    assert sorted(epoch_indices.tolist()) == sorted(make(0).indices.tolist())


@SETTINGS
@given(rs2_samplers())
def test_rs2_sampler_shards_like_distributed_sampler(case):
    make, world, drop_last, epoch = case
    epoch_indices = check_sharding(make, world, drop_last, epoch)
    sampler = make(0)
    # A subset of distinct, in-range indices, the same size every epoch.
    assert len(epoch_indices) == sampler.epoch_size
    assert len(set(epoch_indices.tolist())) == len(epoch_indices)
    assert epoch_indices.min() >= 0 and epoch_indices.max() < sampler.num_samples


@SETTINGS
@given(rs2_samplers())
def test_samplers_are_deterministic_for_a_seed(case):
    make, _, _, epoch = case
    first, second = make(0), make(0)
    second.set_epoch(epoch + 1)  # visiting another epoch first changes nothing
    list(second)
    first.set_epoch(epoch)
    second.set_epoch(epoch)
    assert list(first) == list(second)


@SETTINGS
@given(
    num_samples=st.integers(1, 400),
    fraction=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**16),
    walk=st.integers(0, 5),
)
def test_rs2_without_replacement_covers_everything_once_per_pass(num_samples, fraction, seed, walk):
    sampler = RS2Sampler(num_samples, fraction, seed=seed)
    passes = sampler.epochs_per_pass
    assert passes <= math.ceil(1 / fraction - 1e-9)
    seen = []
    for epoch in range(walk * passes, (walk + 1) * passes):
        sampler.set_epoch(epoch)
        seen.extend(sampler.epoch_indices().tolist())
    assert set(seen) == set(range(num_samples))
    # Topping up the last chunk repeats fewer examples than one subset holds.
    assert len(seen) - num_samples < sampler.epoch_size


@SETTINGS
@given(
    num_samples=st.integers(10, 400),
    fraction=st.floats(0.05, 1.0),
    classes=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    replacement=st.booleans(),
)
def test_rs2_stratified_draws_each_class_in_proportion(
    num_samples, fraction, classes, seed, replacement
):
    labels = np.random.default_rng(seed).integers(0, classes, num_samples)
    sampler = RS2Sampler(num_samples, fraction, replacement, stratify=labels, seed=seed)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        drawn = np.bincount(labels[sampler.epoch_indices()], minlength=classes)
        expected = np.bincount(labels, minlength=classes) * sampler.epoch_size / num_samples
        assert drawn.sum() == sampler.epoch_size
        assert np.all(np.abs(drawn - expected) < 1 + 1e-9)


@st.composite
def stratified_rs2(draw):
    num_samples = draw(st.integers(2, 300))
    classes = draw(st.integers(2, 12))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    # Skewed class sizes, so that some classes are owed less than one slot per epoch.
    weights = rng.dirichlet(np.full(classes, draw(st.sampled_from([0.2, 1.0, 5.0]))))
    labels = rng.choice(classes, size=num_samples, p=weights)
    fraction = draw(st.floats(0.005, 1.0))
    replacement = draw(st.booleans())
    return RS2Sampler(num_samples, fraction, replacement, stratify=labels, seed=seed), labels


@SETTINGS
@given(stratified_rs2(), st.integers(1, 60))
def test_rs2_stratified_share_over_epochs_is_proportional(case, epochs):
    sampler, labels = case
    _, label_ids = np.unique(labels, return_inverse=True)
    sizes = np.bincount(label_ids)
    owed = sampler.epoch_size * sizes / len(labels)  # slots per epoch each class is owed
    drawn = np.zeros_like(sizes)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        counts = np.bincount(label_ids[sampler.epoch_indices()], minlength=len(sizes))
        np.testing.assert_array_equal(counts, sampler.class_counts())
        # Every epoch: floor or ceil of the class's share.
        assert np.all((counts == np.floor(owed)) | (counts == np.ceil(owed)))
        drawn += counts
        # Over the epochs so far: within one example of the share, fractional slots carried.
        assert np.all(np.abs(drawn - (epoch + 1) * owed) < 1 - 1e-9)


@SETTINGS
@given(stratified_rs2(), st.integers(0, 40))
def test_rs2_stratified_without_replacement_sees_every_example(case, start):
    sampler, labels = case
    if sampler.replacement:
        return
    seen = set()
    for epoch in range(start, start + 2 * sampler.epochs_per_pass):
        sampler.set_epoch(epoch)
        seen.update(sampler.epoch_indices().tolist())
    assert seen == set(range(len(labels)))
