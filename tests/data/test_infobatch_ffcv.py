"""InfoBatchSampler as an FFCV traversal order: the loader yields each (shorter) pruned epoch."""

import numpy as np
import pytest
import torch

from datapruning.data.infobatch import InfoBatchSampler

pytest.importorskip("ffcv")
from datapruning.data.beton import to_beton
from datapruning.data.ffcv import make_loader


@pytest.mark.slow  # FFCV's first loader compiles its pipeline (over a minute on a loaded 2-core box)
def test_ffcv_loader_follows_the_pruned_epochs(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((150, 4)).astype(np.float32), rng.integers(0, 3, 150)
    beton = to_beton((x, y), tmp_path / "v.beton")
    sampler = InfoBatchSampler(150, 4, prune=0.6, anneal=0.25, seed=2)
    loader = make_loader(beton, batch_size=16, sampler=sampler)
    losses = torch.from_numpy(rng.gamma(1.0, size=150)).float()
    lengths = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        index = torch.cat([batch[2] for batch in loader])
        assert index.tolist() == list(sampler)
        lengths.append(len(index))
        sampler.update(index, losses[index])
    assert lengths[0] == lengths[3] == 150
    assert lengths[1] < 150 and lengths[2] < 150
