"""A scoring's fan-out, listed once for every flow: seed groups, or prepare + shards, then merge."""

from __future__ import annotations

from datapruning.config import parse_config
from datapruning.pipeline.score_cells import ScoringCell, fan_out


def config(**scoring):
    return parse_config({"scoring": {"seeds": 3, "ensemble_size": 2, **scoring}})


def test_seed_groups_fan_out_then_one_merge_reads_them_all():
    assert fan_out(config(), "el2n") == [
        ScoringCell("group", ([0, 1],)),
        ScoringCell("group", ([2],)),
        ScoringCell("merge", (), (0, 1)),
    ]


def test_shards_wait_for_every_prepared_group_and_the_merge_for_every_shard():
    cells = fan_out(config(shards=3), "grand")
    assert [cell.kind for cell in cells] == ["prepare"] * 2 + ["shard"] * 3 + ["merge"]
    assert [cell.args for cell in cells[:2]] == [([0, 1],), ([2],)]
    assert all(cell.needs == (0, 1) for cell in cells[2:5])
    assert [cell.args for cell in cells[2:5]] == [(1, 3), (2, 3), (3, 3)]
    assert cells[-1].needs == (2, 3, 4)


def test_one_pass_metrics_are_one_merge_and_proto_prepares_once():
    # One seed group, or a metric without seed groups: the merge scores it all.
    assert fan_out(config(seeds=2), "el2n") == [ScoringCell("merge", ())]
    assert fan_out(config(shards=3), "forgetting") == [
        ScoringCell("group", ([0, 1],)),
        ScoringCell("group", ([2],)),
        ScoringCell("merge", (), (0, 1)),
    ]
    proto = fan_out(config(shards=2), "proto")
    assert [(cell.kind, cell.args, cell.needs) for cell in proto] == [
        ("prepare", (None,), ()),
        ("shard", (1, 2), (0,)),
        ("shard", (2, 2), (0,)),
        ("merge", (), (1, 2)),
    ]
