"""A real two-process DDP run (torch.distributed, gloo, CPU) through FFCV loaders.

Each rank builds ``make_loader(..., distributed=True)`` from the initialised
process group, for RS2 (our sampler as FFCV's traversal order) and for a fixed
subset (FFCV's ``Loader(indices=...)``), and the gathered indices are checked.
"""

import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from datapruning.data.samplers import RS2Sampler

pytest.importorskip("ffcv")
pytestmark = pytest.mark.slow

WORLD = 2
NUM_SAMPLES = 103
EPOCHS = 3
SUBSET = np.random.default_rng(0).choice(NUM_SAMPLES, size=41, replace=False)
X = np.random.default_rng(1).standard_normal((NUM_SAMPLES, 6)).astype(np.float32)
Y = np.arange(NUM_SAMPLES) % 7


def _worker(rank: int, init_file: str, beton: str, out_dir: str) -> None:
    from datapruning.data.ffcv import make_loader

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        loaders = {
            "rs2": make_loader(beton, batch_size=8, rs2=0.3, seed=3, distributed=True),
            "indices": make_loader(beton, batch_size=8, indices=SUBSET, seed=3, distributed=True),
        }
        result = {}
        for name, loader in loaders.items():
            epochs = []
            for epoch in range(EPOCHS):
                loader.set_epoch(epoch)
                mine = []
                for x, y, index in loader:
                    assert torch.equal(x, torch.from_numpy(X[index.numpy()]))
                    assert torch.equal(y, torch.from_numpy(Y[index.numpy()]))
                    mine += index.tolist()
                gathered = [None] * WORLD
                dist.all_gather_object(gathered, mine)
                epochs.append(gathered)
            result[name] = {"batches": len(loader), "epochs": epochs}
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    from datapruning.data.beton import to_beton

    tmp = tmp_path_factory.mktemp("ffcv-ddp")
    beton = to_beton((X, Y), tmp / "data.beton")
    mp.spawn(_worker, args=(str(tmp / "init"), str(beton), str(tmp)), nprocs=WORLD, join=True)
    return [json.loads((tmp / f"rank{rank}.json").read_text()) for rank in range(WORLD)]


def test_rs2_ranks_get_their_rs2_sampler_shares(ddp_results):
    for rank, result in enumerate(ddp_results):
        sampler = RS2Sampler(NUM_SAMPLES, 0.3, seed=3, num_replicas=WORLD, rank=rank)
        assert result["rs2"]["batches"] == math.ceil(len(sampler) / 8)
        for epoch, shares in enumerate(result["rs2"]["epochs"]):
            sampler.set_epoch(epoch)
            assert shares[rank] == sampler.rank_indices().tolist()
            whole = set(sampler.epoch_indices().tolist())
            assert set(shares[0]) | set(shares[1]) == whole
            assert len(shares[0]) == len(shares[1]) == math.ceil(len(whole) / WORLD)


def test_fixed_subset_is_shared_disjointly_across_ranks(ddp_results):
    per_rank = math.ceil(len(SUBSET) / WORLD)
    for epoch in range(EPOCHS):
        shares = ddp_results[0]["indices"]["epochs"][epoch]
        assert shares == ddp_results[1]["indices"]["epochs"][epoch]
        assert [len(share) for share in shares] == [per_rank] * WORLD
        gathered = shares[0] + shares[1]
        assert set(gathered) == set(SUBSET.tolist())
        assert len(gathered) - len(SUBSET) < WORLD  # one index of padding at most
