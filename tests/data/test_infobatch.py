"""InfoBatchSampler: property tests of its invariants, resume, and a 2-rank gloo run."""

import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from datapruning import DataPruningError, InfoBatchSampler

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _losses(n: int, seed: int) -> torch.Tensor:
    # Ties included (rounded), so "below the mean" is tested with equal values too.
    return torch.from_numpy(np.random.default_rng(seed).gamma(1.0, size=n).round(1)).float()


def _fed(sampler: InfoBatchSampler, losses: torch.Tensor, through_epoch: int) -> None:
    """Run epochs 0..through_epoch-1, recording ``losses`` for every yielded example."""
    for epoch in range(through_epoch):
        sampler.set_epoch(epoch)
        index = torch.as_tensor(sampler.epoch_indices())
        sampler.update(index, losses[index])
    sampler.set_epoch(through_epoch)


@st.composite
def cases(draw):
    n = draw(st.integers(1, 300))
    epochs = draw(st.integers(1, 12))
    return {
        "n": n,
        "epochs": epochs,
        "prune": draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.9])),
        "anneal": draw(st.sampled_from([0.0, 0.125, 0.5, 1.0])),
        "seed": draw(st.integers(0, 2**16)),
        "world": draw(st.integers(1, 5)),
        "drop_last": draw(st.booleans()),
        "epoch": draw(st.integers(0, epochs - 1)),
    }


@SETTINGS
@given(cases())
def test_epoch_keeps_high_loss_and_drops_a_share_of_low_loss(case):
    n, prune = case["n"], case["prune"]
    sampler = InfoBatchSampler(
        n, case["epochs"], prune=prune, anneal=case["anneal"], seed=case["seed"]
    )
    losses = _losses(n, case["seed"])
    _fed(sampler, losses, case["epoch"])
    order = sampler.epoch_indices()
    assert len(set(order.tolist())) == len(order)  # no repeats
    weights = sampler.weights(torch.arange(n)).numpy()
    full_from = case["epochs"] - round(case["anneal"] * case["epochs"])
    if case["epoch"] == 0 or case["epoch"] >= full_from or prune == 0:
        assert sorted(order.tolist()) == list(range(n))  # first, anneal and unpruned: full
        assert (weights == 1).all()
        return
    values = losses.numpy()
    low = values < values.astype(np.float64).mean()
    kept = np.zeros(n, dtype=bool)
    kept[order] = True
    assert kept[~low].all()  # every example at or above the mean is kept
    assert kept[low].sum() == math.floor((1 - prune) * low.sum() + 1e-9)
    assert np.allclose(weights[kept & low], 1 / (1 - prune))
    assert (weights[kept & ~low] == 1).all()
    assert sampler.sizes[case["epoch"]] == len(order)


@SETTINGS
@given(cases())
# Pruning 1 of 2 examples would leave one of 2 ranks nothing under drop_last: it keeps 2.
@example(
    case={"n": 2, "epochs": 2, "prune": 0.3, "anneal": 0.0, "seed": 0, "world": 2,
          "drop_last": True, "epoch": 1}
)  # fmt: skip
def test_ranks_share_disjointly_and_cover_the_epoch(case):
    n, world = case["n"], case["world"]
    losses = _losses(n, case["seed"] + 1)
    samplers = []
    for rank in range(world):
        sampler = InfoBatchSampler(
            n, case["epochs"], prune=case["prune"], anneal=case["anneal"], seed=case["seed"],
            num_replicas=world, rank=rank, drop_last=case["drop_last"] and n >= world,
        )  # fmt: skip
        _fed(sampler, losses, case["epoch"])
        samplers.append(sampler)
    epoch = samplers[0].epoch_indices()
    for sampler in samplers[1:]:  # same seed, epoch and table: the same epoch everywhere
        assert np.array_equal(sampler.epoch_indices(), epoch)
    shares = [list(s) for s in samplers]
    assert len({len(share) for share in shares}) == 1
    assert all(len(share) == len(s) for share, s in zip(shares, samplers, strict=True))
    gathered = [i for share in shares for i in share]
    if samplers[0].drop_last:
        assert len(set(gathered)) == len(gathered)
        assert len(epoch) - len(gathered) < world
    else:
        assert set(gathered) == set(epoch.tolist())
        assert len(gathered) - len(epoch) < world


@SETTINGS
@given(cases())
def test_epoch_is_a_function_of_seed_epoch_and_losses(case):
    def make(seed):
        sampler = InfoBatchSampler(
            case["n"], case["epochs"], prune=case["prune"], anneal=case["anneal"], seed=seed
        )
        _fed(sampler, _losses(case["n"], case["seed"]), case["epoch"])
        return sampler

    first, again = make(case["seed"]), make(case["seed"])
    assert np.array_equal(first.epoch_indices(), again.epoch_indices())
    assert torch.equal(
        first.weights(torch.arange(case["n"])), again.weights(torch.arange(case["n"]))
    )
    # set_epoch on the epoch already planned does not replan (a resumed loop calls it again).
    again.update(torch.arange(case["n"]), torch.zeros(case["n"]))
    again.set_epoch(case["epoch"])
    assert np.array_equal(first.epoch_indices(), again.epoch_indices())


def test_another_seed_drops_other_examples():
    losses = _losses(200, 0)
    orders = set()
    for seed in range(3):
        sampler = InfoBatchSampler(200, 8, prune=0.5, seed=seed)
        _fed(sampler, losses, 2)
        orders.add(tuple(sorted(sampler.epoch_indices().tolist())))
    assert len(orders) == 3


def test_updates_during_an_epoch_change_only_later_epochs():
    sampler = InfoBatchSampler(50, 8, prune=0.5, seed=1)
    _fed(sampler, _losses(50, 2), 1)
    before = sampler.epoch_indices().copy()
    sampler.update(torch.arange(50), _losses(50, 3))
    assert np.array_equal(sampler.epoch_indices(), before)
    sampler.set_epoch(2)
    assert not np.array_equal(np.sort(sampler.epoch_indices()), np.sort(before))


def _walk(sampler, losses, batch, start=(0, 0), stop_after=None):
    """Batches of a run from ``start`` (epoch, position); stops after ``stop_after`` batches."""
    batches = []
    for epoch in range(start[0], sampler.epochs):
        sampler.set_epoch(epoch)
        first = start[1] if epoch == start[0] else 0
        for position in range(first, len(sampler), batch):
            index = torch.as_tensor(sampler.epoch_indices()[position : position + batch])
            batches.append(index.tolist())
            sampler.update(index, losses[index] * (epoch + 1) + position)
            if len(batches) == stop_after:
                return batches, (epoch, position + batch)
    return batches, None


def test_resume_mid_epoch_continues_identically():
    n, losses = 97, _losses(97, 5)

    def make():
        return InfoBatchSampler(n, 6, prune=0.6, anneal=0.2, seed=4)

    uninterrupted = make()
    full, _ = _walk(uninterrupted, losses, 10)
    interrupted = make()
    head, position = _walk(interrupted, losses, 10, stop_after=13)  # epoch 0 has 10 batches
    assert position is not None and position[0] == 1 and 0 < position[1] < len(interrupted)
    resumed = make()
    resumed.load_state_dict(interrupted.state_dict())
    tail, _ = _walk(resumed, losses, 10, start=position)
    assert head + tail == full
    assert torch.equal(resumed.losses, uninterrupted.losses)
    assert resumed.sizes == uninterrupted.sizes
    assert len(set(map(len, full))) > 1  # some epochs were pruned


def test_state_dict_round_trip_and_refusals():
    sampler = InfoBatchSampler(40, 4, seed=2)
    _fed(sampler, _losses(40, 0), 1)
    state = sampler.state_dict()
    other = InfoBatchSampler(40, 4, seed=2)
    other.load_state_dict(state)
    assert np.array_equal(other.epoch_indices(), sampler.epoch_indices())
    assert torch.equal(other.losses, sampler.losses)
    with pytest.raises(DataPruningError, match="seed"):
        InfoBatchSampler(40, 4, seed=3).load_state_dict(state)
    with pytest.raises(DataPruningError, match="same dataset"):
        InfoBatchSampler(41, 4, seed=2).load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prune": 1.0}, "prune 1.0"),
        ({"prune": -0.1}, "prune -0.1"),
        ({"anneal": 1.5}, "anneal 1.5"),
        ({"epochs": 0}, "epochs"),
    ],
)
def test_bad_settings_say_what_to_change(kwargs, message):
    with pytest.raises(DataPruningError, match=message):
        InfoBatchSampler(10, **{"epochs": 4, **kwargs})


def test_in_a_dataloader_len_follows_the_epoch():
    sampler = InfoBatchSampler(100, 4, prune=0.5, anneal=0.25, seed=0)
    loader = DataLoader(range(100), sampler=sampler, batch_size=8)
    lengths = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        index = torch.cat(list(loader))
        assert len(index) == len(sampler)
        lengths.append(len(loader))
        sampler.update(index, _losses(100, 1)[index])
    assert lengths[0] == lengths[3] == 13
    assert lengths[1] < 13 and lengths[2] < 13


# ---------------------------------------------------------------- DDP, 2 gloo ranks

WORLD, N, EPOCHS = 2, 101, 4


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        sampler = InfoBatchSampler(N, EPOCHS, prune=0.5, anneal=0.25, seed=7)
        loader = DataLoader(range(N), sampler=sampler, batch_size=8)
        truth = _losses(N, 11)
        epochs = []
        for epoch in range(EPOCHS):
            sampler.set_epoch(epoch)
            mine = []
            for index in loader:
                sampler.update(index, truth[index] + epoch)  # each rank records its own share
                mine.extend(index.tolist())
            gathered = [None] * WORLD
            dist.all_gather_object(gathered, mine)
            epochs.append(
                {"shares": gathered, "order": sampler.epoch_indices().tolist(), "len": len(sampler)}
            )
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump({"epochs": epochs}, f)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_agree_on_the_pruned_epochs(tmp_path):
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    # A single process seeing every example's loss plans the same epochs.
    reference = InfoBatchSampler(N, EPOCHS, prune=0.5, anneal=0.25, seed=7)
    truth = _losses(N, 11)
    for epoch in range(EPOCHS):
        reference.set_epoch(epoch)
        order = reference.epoch_indices()
        reference.update(torch.as_tensor(order), truth[order] + epoch)
        a, b = (r["epochs"][epoch] for r in results)
        assert a["order"] == b["order"] == order.tolist()
        assert a["shares"] == b["shares"]
        assert a["len"] == b["len"] == math.ceil(len(order) / WORLD)
        padded = np.resize(order, a["len"] * WORLD)  # padded by cycling, as DistributedSampler
        assert a["shares"] == [padded[rank::WORLD].tolist() for rank in range(WORLD)]
    assert len(results[0]["epochs"][1]["order"]) < N  # epochs 1 and 2 were pruned
    assert len(results[0]["epochs"][3]["order"]) == N  # the anneal epoch is full


def test_the_table_starts_on_the_given_device():
    sampler = InfoBatchSampler(10, 2, device="meta")  # meta: a device without memory
    assert sampler.losses.device.type == "meta"
    assert InfoBatchSampler(10, 2).losses.device.type == "cpu"


def test_the_epoch_sync_runs_where_the_process_group_needs_it(monkeypatch):
    from datapruning.data import infobatch

    monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    # NCCL: a table still on the CPU (epoch 0, nothing updated yet) is reduced on CUDA.
    assert infobatch.collective_device(torch.device("cpu")) == torch.device("cuda", 1)
    assert infobatch.collective_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "gloo")
    assert infobatch.collective_device(torch.device("cpu")) == torch.device("cpu")


def test_epoch_zero_syncs_the_untouched_table_through_the_collective_device(monkeypatch):
    from datapruning.data import infobatch

    reduced = []
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "gloo")
    monkeypatch.setattr(dist, "all_reduce", lambda tensor: reduced.append(tensor.device))
    moved = []
    real = infobatch.collective_device
    monkeypatch.setattr(
        infobatch, "collective_device", lambda device: moved.append(device) or real(device)
    )
    sampler = InfoBatchSampler(12, 4, num_replicas=2, rank=0)
    sampler.set_epoch(0)
    assert moved == [torch.device("cpu")] and reduced == [torch.device("cpu")]
