"""Time-to-accuracy tables built from hand-made run directories.

Every run directory here is written by :func:`write_run` in the format the
training loop writes (summary.json + metrics.jsonl). Accuracies are multiples of
1/8 and times small integers or halves, so each interpolated crossing, median and
speed-up below is exact and worked out by hand in the comments.
"""

from __future__ import annotations

import math

import pytest
from runs_helper import write_run

from datapruning.errors import DataPruningError
from datapruning.report import (
    crossing_seconds,
    find_runs,
    tta_table,
    verdict,
    write_report,
)

KD = {"alpha": 0.5, "temperature": 4.0}
TARGET_DROP = 0.125
TEACHER = {"teacher_seconds": 4.5, "teacher_logits_seconds": 0.5}


@pytest.fixture
def experiment(tmp_path):
    """Full data, el2n-hard 30% with and without KD, random 50% with and without KD.

    Full-data final accuracies 0.875 and 0.875: target = 0.875 - 0.125 = 0.75.
    Each teacher (full-s0, full-s1) has two KD students: hard-kd and random-kd.
    """
    root = tmp_path / "exp"
    # full-s0 reaches 0.75 exactly at 4 s; full-s1 crosses it halfway from 4 s to 6 s: 5 s.
    # Median 4.5 s, range 4-5 s.
    write_run(root, "full-s0", [(2.0, 0.5), (4.0, 0.75), (6.0, 0.875)], recipe="full")
    write_run(root, "full-s1", [(2.0, 0.5), (4.0, 0.625), (6.0, 0.875)], recipe="full", seed=1)
    # el2n-hard 30 %: 0.5 + 0.25 / 0.5 * 0.5 = 0.75 s; first evaluation already there: 1 s.
    # Median 0.875 s; end to end + 0.5 s scoring = 1.375 s per student. Four students read
    # the el2n scores (hard and hard-kd, two seeds each): once per sweep each pays 0.5 / 4
    # = 0.125 s, 1.0 s end to end; owned scores cost nothing: 0.875 s.
    write_run(
        root,
        "hard-s0",
        [(0.5, 0.5), (1.0, 1.0)],
        recipe="el2n-hard",
        kept=0.3,
        scoring_seconds=0.5,
    )
    write_run(
        root,
        "hard-s1",
        [(1.0, 0.75), (2.0, 0.875)],
        recipe="el2n-hard",
        kept=0.3,
        seed=1,
        scoring_seconds=0.5,
    )
    # el2n-hard 30 % + KD: 0.5 s for both seeds. Teacher 4.5 s training + 0.5 s logits:
    # per student 0.5 + 0.5 + 5.0 = 6.0 s; once per sweep (2 students per teacher, 4 per
    # scores file) 0.5 + 0.125 + 2.5 = 3.125 s; owned 0.5 + 0.25 (logits, shared) = 0.75 s.
    write_run(
        root,
        "hard-kd-s0",
        [(0.25, 0.5), (0.5, 0.75)],
        recipe="el2n-hard",
        kept=0.3,
        kd=KD,
        scoring_seconds=0.5,
        **TEACHER,
    )
    write_run(
        root,
        "hard-kd-s1",
        [(0.5, 0.875)],
        recipe="el2n-hard",
        kept=0.3,
        kd=KD,
        seed=1,
        scoring_seconds=0.5,
        **TEACHER,
    )
    # random 50 % + KD: 1 s and 1 + 0.25 / 0.5 * 2 = 2 s, median 1.5 s; per student
    # 1.5 + 5 = 6.5 s, once per sweep 1.5 + 2.5 = 4 s, owned 1.5 + 0.25 = 1.75 s.
    write_run(root, "rand-kd-s0", [(1.0, 0.75)], recipe="random", kept=0.5, kd=KD, **TEACHER)
    write_run(
        root,
        "rand-kd-s1",
        [(1.0, 0.5), (3.0, 1.0)],
        recipe="random",
        kept=0.5,
        kd=KD,
        seed=1,
        **TEACHER,
    )
    # random 50 %: seed 0 reaches 0.75 at 1.5 s, seed 1 never does (best 0.625).
    write_run(root, "random-s0", [(1.0, 0.5), (2.0, 1.0)], recipe="random", kept=0.5)
    write_run(root, "random-s1", [(1.0, 0.5), (2.0, 0.625)], recipe="random", kept=0.5, seed=1)
    return root


def rows_by_key(table):
    return {(row.recipe, row.kept, bool(row.kd)): row for row in table.itertuples()}


def table_lines(text, recipe):
    return [line for line in text.splitlines() if line.startswith(f"| {recipe} |")]


def cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


# ---------------------------------------------------------------- the crossing


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([(1.0, 0.25), (3.0, 0.75)], 2.0),  # halfway between the two evaluations
        ([(1.0, 0.25), (2.0, 0.375), (4.0, 0.625)], 3.0),  # bracketed by the 2nd and 3rd
        ([(1.0, 0.5), (2.0, 0.875)], 1.0),  # the first evaluation already reached it
        ([(1.0, 0.25), (2.0, 0.5), (3.0, 0.25), (4.0, 1.0)], 2.0),  # first touch counts
        ([(1.0, 0.25), (2.0, 0.375)], None),  # never
    ],
    ids=["halfway", "later-bracket", "first-eval", "touch-then-dip", "never"],
)
def test_crossing_is_interpolated_between_the_bracketing_evaluations(points, expected):
    assert crossing_seconds(points, 0.5) == expected


# ---------------------------------------------------------------- the table


def test_target_is_mean_full_final_accuracy_minus_drop(experiment):
    _, target = tta_table(find_runs(experiment), TARGET_DROP)
    assert target == 0.75


def test_one_row_per_recipe_fraction_kd_and_budget(experiment):
    table, _ = tta_table(find_runs(experiment), TARGET_DROP)
    rows = rows_by_key(table)
    assert set(rows) == {
        ("full", 1.0, False),
        ("el2n-hard", 0.3, False),
        ("el2n-hard", 0.3, True),
        ("random", 0.5, False),
        ("random", 0.5, True),
    }
    assert table.iloc[0]["recipe"] == "full"  # the baseline comes first
    assert all(row.runs == 2 for row in rows.values())
    assert rows["el2n-hard", 0.3, False].final_acc == pytest.approx((1.0 + 0.875) / 2)
    assert rows["el2n-hard", 0.3, False].final_std == pytest.approx(0.125 / math.sqrt(2))
    assert rows["random", 0.5, False].best_acc == pytest.approx((1.0 + 0.625) / 2)


def test_medians_ranges_and_speedups(experiment):
    table, _ = tta_table(find_runs(experiment), TARGET_DROP)
    rows = rows_by_key(table)

    full = rows["full", 1.0, False]
    assert (full.tta_s, full.tta_min, full.tta_max) == (4.5, 4.0, 5.0)
    assert full.speedup == 1.0
    assert full.e2e_student_s == full.e2e_sweep_s == full.e2e_zero_s == 4.5

    hard = rows["el2n-hard", 0.3, False]
    assert (hard.tta_s, hard.tta_min, hard.tta_max) == (0.875, 0.75, 1.0)
    assert hard.speedup == 4.5 / 0.875
    # No teacher: the views differ by the scores alone (0.5 s, read by 4 students).
    assert hard.e2e_student_s == 1.375  # charged in full
    assert hard.e2e_sweep_s == 1.0  # 0.875 + 0.5 / 4
    assert hard.e2e_zero_s == 0.875  # scores owned: nothing
    assert hard.e2e_sweep_speedup == 4.5


def test_teacher_cost_three_ways(experiment):
    table, _ = tta_table(find_runs(experiment), TARGET_DROP)
    rows = rows_by_key(table)
    hard_kd = rows["el2n-hard", 0.3, True]
    assert hard_kd.tta_s == 0.5
    assert hard_kd.speedup == 9.0
    assert hard_kd.e2e_student_s == 6.0  # 0.5 + scoring 0.5 + teacher 4.5 + logits 0.5
    assert hard_kd.e2e_tta_s == 6.0  # the per-student view keeps its old name
    # Teacher and logits shared by its 2 KD students, the scores by their 4 readers.
    assert hard_kd.e2e_sweep_s == 0.5 + 0.5 / 4 + 5.0 / 2 == 3.125
    assert hard_kd.e2e_zero_s == 0.75  # only the logits, shared; the scores owned
    assert hard_kd.e2e_student_speedup == 0.75
    assert hard_kd.e2e_zero_speedup == 6.0
    rand_kd = rows["random", 0.5, True]
    assert (rand_kd.tta_s, rand_kd.tta_min, rand_kd.tta_max) == (1.5, 1.0, 2.0)
    assert (rand_kd.e2e_student_s, rand_kd.e2e_sweep_s, rand_kd.e2e_zero_s) == (6.5, 4.0, 1.75)


def test_recipe_reached_by_only_some_seeds_gets_no_time(experiment):
    table, _ = tta_table(find_runs(experiment), TARGET_DROP)
    rand = rows_by_key(table)["random", 0.5, False]
    assert rand.runs == 2
    assert rand.reached == 1
    assert (rand.tta_min, rand.tta_max) == (1.5, 1.5)  # the seed that did
    for value in (rand.tta_s, rand.speedup, rand.e2e_student_s, rand.e2e_sweep_s):
        assert math.isnan(value)

    _, text = write_report(experiment, TARGET_DROP)
    (row,) = [line for line in table_lines(text, "random") if cells(line)[2] == "no"]
    assert "not reached (1/2 reached it: 1.50–1.50)" in row
    assert "| 1/2 |" in row


def test_never_reached_says_not_reached(tmp_path):
    write_run(tmp_path, "full-s0", [(1.0, 0.5), (2.0, 1.0)], recipe="full")
    write_run(tmp_path, "rand-s0", [(1.0, 0.25), (2.0, 0.5)], recipe="random", kept=0.5)
    table, target = tta_table(find_runs(tmp_path), 0.25)
    assert target == 0.75
    row = rows_by_key(table)["random", 0.5, False]
    assert row.reached == 0
    assert math.isnan(row.tta_min)
    _, text = write_report(tmp_path, 0.25)
    (line,) = table_lines(text, "random")
    assert cells(line)[8] == "not reached"  # student time to target
    assert cells(line)[9] == "—"  # speed-up


def test_one_seed_has_a_time_without_range(tmp_path):
    # Full: crosses 0.5 a quarter of the way from 2 s to 6 s: 3 s. Hard: 0.75 s.
    write_run(tmp_path, "full-s0", [(2.0, 0.25), (6.0, 1.25)], recipe="full")
    write_run(tmp_path, "hard-s0", [(0.5, 0.25), (1.0, 0.75)], recipe="el2n-hard", kept=0.5)
    table, target = tta_table(find_runs(tmp_path), 0.75)
    assert target == 0.5
    rows = rows_by_key(table)
    assert rows["full", 1.0, False].tta_s == 3.0
    assert rows["el2n-hard", 0.5, False].tta_s == 0.75
    assert rows["el2n-hard", 0.5, False].final_std == 0.0
    _, text = write_report(tmp_path, 0.75)
    (line,) = table_lines(text, "el2n-hard")
    assert cells(line)[8] == "0.75"  # no [min–max] with one seed
    assert cells(line)[9] == "4.00×"


def test_budget_and_sparsity_split_rows_and_show(tmp_path):
    write_run(tmp_path, "full-s0", [(1.0, 0.5), (2.0, 1.0)], recipe="full")
    write_run(tmp_path, "hard-s0", [(1.0, 1.0)], recipe="el2n-hard", kept=0.5)
    write_run(tmp_path, "hard-steps-s0", [(1.0, 1.0)], recipe="el2n-hard", kept=0.5, budget="steps")
    write_run(
        tmp_path, "hard-sp-s0", [(1.0, 1.0)], recipe="el2n-hard-sp0.5", kept=0.5, sparsity=0.5
    )
    table, _ = tta_table(find_runs(tmp_path), 0.0)
    assert sorted(zip(table["recipe"], table["budget"], strict=True)) == [
        ("el2n-hard", "epochs"),
        ("el2n-hard", "steps"),
        ("el2n-hard-sp0.5", "epochs"),
        ("full", "epochs"),
    ]
    _, text = write_report(tmp_path, 0.0)
    budgets = sorted(cells(line)[4] for line in table_lines(text, "el2n-hard"))
    assert budgets == ["epochs", "steps"]
    (sparse,) = table_lines(text, "el2n-hard-sp0.5")
    assert cells(sparse)[5] == "50%"
    assert all(cells(line)[5] == "" for line in table_lines(text, "el2n-hard"))


def test_full_short_is_a_recipe_not_the_reference(tmp_path):
    # Only recipe "full" sets the target: 1.0 - 0.25 = 0.75 (full-short ends at 0.5).
    write_run(tmp_path, "full-s0", [(2.0, 0.5), (4.0, 1.0)], recipe="full")
    write_run(tmp_path, "short-s0", [(1.0, 0.25), (2.0, 0.5)], recipe="full-short")
    table, target = tta_table(find_runs(tmp_path), 0.25)
    assert target == 0.75
    rows = rows_by_key(table)
    assert rows["full", 1.0, False].tta_s == 3.0
    assert math.isnan(rows["full-short", 1.0, False].tta_s)


# ---------------------------------------------------------------- the answer line


def test_answer_line_uses_teacher_once_per_sweep(experiment):
    table, target = tta_table(find_runs(experiment), TARGET_DROP)
    sentence = verdict(table, target, "digits", 1000)
    # End to end, once per sweep: el2n-hard 1 s < KD 3.125 s < random KD 4 s < full 4.5 s.
    assert sentence.startswith(
        "To reach 75.0% soonest on digits (1,000 training examples), use **el2n-hard 30%** "
        "(1.00 s end to end, 4.50× full data's 4.50 s), "
        "teacher and scores counted once per sweep."
    )
    # The fastest student alone: el2n-hard + KD at 0.5 s, 9x.
    assert sentence.endswith("the fastest is el2n-hard 30% + KD (0.50 s, 9.00×).")


def test_answer_line_says_when_full_data_is_fastest(tmp_path):
    write_run(tmp_path, "full-s0", [(1.0, 0.5), (2.0, 1.0)], recipe="full")
    # 1.5 s of training, but 2 s of scoring (its only reader): 3.5 s end to end against full
    # data's 1.5 s, once per sweep too.
    write_run(tmp_path, "hard-s0", [(1.5, 1.0)], recipe="el2n-hard", kept=0.5, scoring_seconds=2)
    table, target = tta_table(find_runs(tmp_path), 0.25)
    sentence = verdict(table, target, "digits", 1000)
    assert sentence.startswith(
        "To reach 75.0% soonest on digits (1,000 training examples), no recipe beats "
        "full-data training end to end (1.50 s, teacher and scores counted once per sweep); the "
        "fastest "
        f"other, el2n-hard 50%, takes 3.50 s ({1.5 / 3.5:.2f}× full data)."
    )


def test_answer_line_when_nothing_reached(tmp_path):
    # Full finals 1.0 and 0.5: target (drop 0) = 0.75, which seed 1 never reached.
    write_run(tmp_path, "full-s0", [(1.0, 0.5), (2.0, 1.0)], recipe="full")
    write_run(tmp_path, "full-s1", [(1.0, 0.25), (2.0, 0.5)], recipe="full", seed=1)
    write_run(tmp_path, "hard-s0", [(0.5, 0.5)], recipe="el2n-hard", kept=0.3)
    table, target = tta_table(find_runs(tmp_path), 0.0)
    sentence = verdict(table, target)
    assert sentence == "No recipe reached 75.0% on this data in every run, full data included."
    assert "nan" not in sentence.lower()


def test_answer_line_when_only_a_recipe_reached(tmp_path):
    write_run(tmp_path, "full-s0", [(1.0, 0.5), (2.0, 1.0)], recipe="full")
    write_run(tmp_path, "full-s1", [(1.0, 0.25), (2.0, 0.5)], recipe="full", seed=1)
    write_run(tmp_path, "hard-s0", [(0.5, 0.75)], recipe="el2n-hard", kept=0.3)
    table, target = tta_table(find_runs(tmp_path), 0.0)
    sentence = verdict(table, target)
    assert "use **el2n-hard 30%** (0.50 s end to end" in sentence
    assert "full-data training did not reach it in every run" in sentence
    assert "nan" not in sentence.lower()


# ---------------------------------------------------------------- extra targets


def test_extra_targets_absolute_and_relative_get_a_table_each(experiment):
    _, text = write_report(experiment, TARGET_DROP, targets=["0.5", "0.5r"])
    # drop: 0.75; absolute 0.5; relative: 0.5 x 0.875 = 0.4375.
    headings = [line for line in text.splitlines() if line.startswith("### Target")]
    assert [h.split()[2] for h in headings] == ["75.0%", "50.0%", "43.8%"]
    assert len(table_lines(text, "full")) == 3
    # At 0.5 every full run's first evaluation (2 s) already reached it.
    full_at_half = table_lines(text, "full")[1]
    assert cells(full_at_half)[8] == "2.00 [2.00–2.00]"


@pytest.mark.parametrize("bad", ["1.5", "abc", "0r", "nan"])
def test_bad_extra_target_is_an_error(experiment, bad):
    with pytest.raises(DataPruningError, match="target"):
        write_report(experiment, TARGET_DROP, targets=[bad])
    assert not (experiment / "report.md").exists()


# ---------------------------------------------------------------- bad input


def test_missing_full_data_run_is_an_error(tmp_path):
    write_run(tmp_path, "hard", [(1.0, 0.8)], recipe="el2n-hard", kept=0.3)
    write_run(tmp_path, "rand", [(1.0, 0.8)], recipe="random", kept=0.3)
    with pytest.raises(DataPruningError, match="full"):
        tta_table(find_runs(tmp_path), 0.01)
    with pytest.raises(DataPruningError, match="full"):
        write_report(tmp_path)
    assert not (tmp_path / "report.md").exists()


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(DataPruningError, match="not found"):
        find_runs(tmp_path / "nowhere")
    with pytest.raises(DataPruningError, match="not found"):
        write_report(tmp_path / "nowhere")


def test_directory_without_runs_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataPruningError, match="no finished runs"):
        find_runs(tmp_path / "empty")
    # Files that are not run summaries do not count as runs either.
    (tmp_path / "other" / "sub").mkdir(parents=True)
    (tmp_path / "other" / "sub" / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "other" / "notes.json").write_text("{}")
    with pytest.raises(DataPruningError, match="no finished runs"):
        write_report(tmp_path / "other")


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("summary.json", '{"recipe": "full", "kept_fraction": 1.0, "final_te'),
        ("summary.json", ""),
        ("metrics.jsonl", '{"train_seconds": 1.0, "test_acc": 0.9}\n{"train_sec'),
    ],
    ids=["truncated-summary", "empty-summary", "truncated-metrics"],
)
def test_run_with_corrupt_json_is_an_error(tmp_path, filename, content):
    write_run(tmp_path, "full", [(1.0, 0.9)], recipe="full")
    broken = write_run(tmp_path, "hard", [(1.0, 0.9)], recipe="el2n-hard", kept=0.3)
    (broken / filename).write_text(content)
    with pytest.raises(DataPruningError, match="hard"):
        find_runs(tmp_path)
    with pytest.raises(DataPruningError, match="hard"):
        write_report(tmp_path)


def test_run_without_metrics_is_an_error(tmp_path):
    write_run(tmp_path, "full", [(1.0, 0.9)], recipe="full")
    (
        write_run(tmp_path, "hard", [(1.0, 0.9)], recipe="el2n-hard", kept=0.3) / "metrics.jsonl"
    ).unlink()
    with pytest.raises(DataPruningError, match="hard"):
        find_runs(tmp_path)


def test_run_with_binary_garbage_is_an_error(tmp_path):
    write_run(tmp_path, "full", [(1.0, 0.9)], recipe="full")
    broken = write_run(tmp_path, "hard", [(1.0, 0.9)], recipe="el2n-hard", kept=0.3)
    (broken / "summary.json").write_bytes(b"\xff\xfe\x00\x89PNG garbage")
    with pytest.raises(DataPruningError, match="hard"):
        find_runs(tmp_path)


@pytest.mark.parametrize(
    "summary",
    ["[1, 2, 3]", '{"recipe": "full", "kept_fraction": 1.0}'],
    ids=["not-a-mapping", "missing-keys"],
)
def test_json_that_is_not_a_run_summary_is_an_error(tmp_path, summary):
    write_run(tmp_path, "full-s0", [(1.0, 0.9)], recipe="full")
    (write_run(tmp_path, "full-s1", [(1.0, 0.9)], recipe="full") / "summary.json").write_text(
        summary
    )
    with pytest.raises(DataPruningError, match="full-s1"):
        write_report(tmp_path)


def test_steps_to_target_are_interpolated_like_seconds_and_give_a_load_free_speed_up(tmp_path):
    root = tmp_path / "exp"
    # Full data: 0.80 at step 200, 0.90 at step 300 -> 0.85 at step 250 (4.5 s).
    write_run(
        root, "full-s0", [(1.0, 0.5), (2.0, 0.8), (7.0, 0.9)], recipe="full", steps_per_eval=100
    )
    # A 50% subset logs every 50 steps: 0.70 at 50, 0.90 at 100 -> 0.85 at step 87.5,
    # reached at 5.0 s on a loaded machine (slower than full data in seconds).
    write_run(
        root, "hard-s0", [(2.0, 0.7), (6.0, 0.9)], recipe="el2n-hard", kept=0.5, steps_per_eval=50
    )
    # A run whose log has no steps gets no steps to target.
    write_run(root, "random-s0", [(1.0, 0.9)], recipe="random", kept=0.5)
    table, target = tta_table(find_runs(root), 0.05)
    assert target == pytest.approx(0.85)
    rows = rows_by_key(table)
    full, hard, rand = (
        rows[("full", 1.0, False)],
        rows[("el2n-hard", 0.5, False)],
        rows[("random", 0.5, False)],
    )
    assert full.tta_steps == pytest.approx(250.0)
    assert hard.tta_steps == pytest.approx(87.5)
    assert hard.steps_speedup == pytest.approx(250 / 87.5)
    assert hard.tta_s == pytest.approx(5.0) and hard.speedup < 1  # seconds said otherwise
    assert math.isnan(rand.tta_steps) and math.isnan(rand.steps_speedup)
    text = write_report(root, 0.05)[1]
    assert "| 88 | 2.86× |" in text  # steps to target, speed-up in steps
