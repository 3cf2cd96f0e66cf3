"""A real two-process DDP run (torch.distributed, gloo, CPU) through our samplers.

Each rank builds its sampler from the initialised process group (no rank
arguments), iterates a plain DataLoader, and the gathered indices are checked
against the epoch's subset computed in the parent process.
"""

import json
import math
from itertools import chain

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from datapruning.data.samplers import RS2Sampler, SubsetSampler

WORLD = 2
NUM_SAMPLES = 103  # odd, so the RS2 epoch (31) needs one index of padding
EPOCHS = 4
SUBSET = np.random.default_rng(0).choice(NUM_SAMPLES, size=40, replace=False)


def make_samplers():
    return {
        "subset": SubsetSampler(SUBSET, seed=3),
        "rs2": RS2Sampler(NUM_SAMPLES, 0.3, seed=3),
        "rs2_drop_last": RS2Sampler(NUM_SAMPLES, 0.3, seed=3, drop_last=True),
    }


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        result = {}
        for name, sampler in make_samplers().items():
            assert (sampler.num_replicas, sampler.rank) == (WORLD, rank)
            loader = DataLoader(range(NUM_SAMPLES), sampler=sampler, batch_size=4)
            epochs = []
            for epoch in range(EPOCHS):
                sampler.set_epoch(epoch)
                mine = torch.cat(list(loader)).tolist()
                gathered = [None] * WORLD
                dist.all_gather_object(gathered, mine)
                epochs.append(gathered)
            result[name] = {"len": len(sampler), "batches": len(loader), "epochs": epochs}
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return [json.loads((tmp / f"rank{rank}.json").read_text()) for rank in range(WORLD)]


@pytest.mark.parametrize("name", ["subset", "rs2", "rs2_drop_last"])
def test_ranks_share_each_epoch_disjointly_and_completely(ddp_results, name):
    reference = make_samplers()[name]  # a single-process sampler: the whole epoch
    drop_last = reference.drop_last
    per_rank = (
        reference.epoch_size // WORLD if drop_last else math.ceil(reference.epoch_size / WORLD)
    )
    for result in ddp_results:
        assert result[name]["len"] == per_rank
        assert result[name]["batches"] == math.ceil(per_rank / 4)
    for epoch in range(EPOCHS):
        # all_gather gives every rank the same view of who drew what.
        shares = ddp_results[0][name]["epochs"][epoch]
        assert shares == ddp_results[1][name]["epochs"][epoch]
        assert [len(share) for share in shares] == [per_rank] * WORLD
        reference.set_epoch(epoch)
        expected = set(reference.epoch_indices().tolist())
        gathered = [i for share in shares for i in share]
        if drop_last:
            assert len(set(gathered)) == len(gathered) == per_rank * WORLD
            assert set(gathered) <= expected
        else:
            assert set(gathered) == expected
            assert len(gathered) - len(expected) < WORLD
    # RS2 draws another subset each epoch.
    if name != "subset":
        firsts = {
            tuple(sorted(list(chain.from_iterable(r)))) for r in ddp_results[0][name]["epochs"]
        }
        assert len(firsts) == EPOCHS
