"""Time-to-accuracy reports built from hand-made run directories.

Every run directory here is written by :func:`write_run` in the format the
training loop writes (summary.json + metrics.jsonl), with accuracy curves
chosen so that each expected number can be worked out by hand.
"""

from __future__ import annotations

import math

import pytest
from runs_helper import write_run

from datapruning.errors import DataPruningError
from datapruning.report import find_runs, render_markdown, tta_table, verdict, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


KD = {"alpha": 0.5, "temperature": 4.0}
TARGET_DROP = 0.02


@pytest.fixture
def experiment(tmp_path):
    """Two full-data seeds, a hard subset with and without KD, and a half-reached random one.

    Full-data final accuracies 0.90 and 0.88: target = 0.89 - 0.02 = 0.87.
    """
    root = tmp_path / "exp"
    # full: first >= 0.87 at 3.0 s and 5.0 s -> mean 4.0 s.
    write_run(root, "full-s0", [(1.0, 0.50), (2.0, 0.80), (3.0, 0.875), (4.0, 0.90)], recipe="full")
    write_run(root, "full-s1", [(1.5, 0.55), (2.5, 0.82), (3.5, 0.86), (5.0, 0.88)], recipe="full")
    # el2n-hard 30 % without KD: 1.0 s and 1.2 s -> 1.1 s; scoring adds 0.5 s.
    write_run(
        root,
        "hard-s0",
        [(0.5, 0.60), (1.0, 0.88), (1.5, 0.89)],
        recipe="el2n-hard",
        kept=0.3,
        scoring_seconds=0.5,
    )
    write_run(
        root,
        "hard-s1",
        [(0.4, 0.70), (0.8, 0.86), (1.2, 0.90)],
        recipe="el2n-hard",
        kept=0.3,
        scoring_seconds=0.5,
    )
    # el2n-hard 30 % with KD: 0.6 s alone, but 0.6 + 0.5 + 4.5 = 5.6 s end to end.
    write_run(
        root,
        "hard-kd-s0",
        [(0.3, 0.80), (0.6, 0.871), (0.9, 0.88)],
        recipe="el2n-hard",
        kept=0.3,
        kd=KD,
        scoring_seconds=0.5,
        teacher_seconds=4.5,
    )
    # random 50 %: seed 0 reaches 0.87 at 2.0 s, seed 1 never does (best 0.86).
    write_run(root, "random-s0", [(1.0, 0.70), (2.0, 0.88)], recipe="random", kept=0.5)
    write_run(root, "random-s1", [(1.0, 0.70), (2.0, 0.86)], recipe="random", kept=0.5)
    return root


def rows_by_key(table):
    return {(row.recipe, row.kept, bool(row.kd)): row for row in table.itertuples()}


def test_target_is_mean_full_final_accuracy_minus_drop(experiment):
    _, target = tta_table(find_runs(experiment), TARGET_DROP)
    assert target == pytest.approx((0.90 + 0.88) / 2 - TARGET_DROP)


def test_one_row_per_recipe_fraction_and_kd(experiment):
    table, _ = tta_table(find_runs(experiment), TARGET_DROP)
    rows = rows_by_key(table)
    assert set(rows) == {
        ("full", 1.0, False),
        ("el2n-hard", 0.3, False),
        ("el2n-hard", 0.3, True),
        ("random", 0.5, False),
    }
    assert table.iloc[0]["recipe"] == "full"  # the baseline comes first
    assert rows["full", 1.0, False].runs == 2
    assert rows["el2n-hard", 0.3, False].runs == 2
    assert rows["el2n-hard", 0.3, True].runs == 1
    assert rows["el2n-hard", 0.3, False].final_acc == pytest.approx((0.89 + 0.90) / 2)
    assert rows["el2n-hard", 0.3, False].best_acc == pytest.approx((0.89 + 0.90) / 2)
    assert rows["random", 0.5, False].best_acc == pytest.approx((0.88 + 0.86) / 2)


def test_times_to_target_and_speedups(experiment):
    table, _ = tta_table(find_runs(experiment), TARGET_DROP)
    rows = rows_by_key(table)
    full_tta = (3.0 + 5.0) / 2

    full = rows["full", 1.0, False]
    assert full.tta_s == pytest.approx(full_tta)
    assert full.speedup == pytest.approx(1.0)
    assert full.e2e_tta_s == pytest.approx(full_tta)  # no scoring or teacher cost

    hard = rows["el2n-hard", 0.3, False]
    assert hard.reached == 2
    assert hard.tta_s == pytest.approx((1.0 + 1.2) / 2)
    assert hard.speedup == pytest.approx(full_tta / 1.1)
    assert hard.e2e_tta_s == pytest.approx(1.1 + 0.5)  # + scoring
    assert hard.e2e_speedup == pytest.approx(full_tta / 1.6)

    hard_kd = rows["el2n-hard", 0.3, True]
    assert hard_kd.tta_s == pytest.approx(0.6)
    assert hard_kd.speedup == pytest.approx(full_tta / 0.6)
    assert hard_kd.e2e_tta_s == pytest.approx(0.6 + 0.5 + 4.5)  # + scoring + teacher
    assert hard_kd.e2e_speedup == pytest.approx(full_tta / 5.6)


def test_recipe_reached_by_only_some_seeds_gets_no_time(experiment):
    table, target = tta_table(find_runs(experiment), TARGET_DROP)
    rand = rows_by_key(table)["random", 0.5, False]
    assert rand.runs == 2
    assert rand.reached == 1
    assert math.isnan(rand.tta_s)
    assert math.isnan(rand.speedup)
    assert math.isnan(rand.e2e_tta_s)

    text = render_markdown(table, target, TARGET_DROP, "exp")
    (row,) = [line for line in text.splitlines() if line.startswith("| random |")]
    assert "not reached" in row
    assert "1/2" in row


def test_time_is_first_evaluation_at_or_above_target(tmp_path):
    # Binary fractions keep the arithmetic exact: target = 0.75 - 0.25 = 0.5.
    write_run(tmp_path, "full", [(1.0, 0.25), (4.0, 0.5), (8.0, 0.75)], recipe="full")
    # Touches the target exactly at 2 s, dips below, then climbs: the first touch counts.
    write_run(
        tmp_path,
        "rand",
        [(1.0, 0.25), (2.0, 0.5), (3.0, 0.375), (4.0, 0.625)],
        recipe="random",
        kept=0.5,
    )
    # Crosses the target between evaluations: the later evaluation counts.
    write_run(tmp_path, "easy", [(1.5, 0.4375), (3.0, 0.5625)], recipe="el2n-easy", kept=0.5)
    table, target = tta_table(find_runs(tmp_path), 0.25)
    assert target == 0.5
    rows = rows_by_key(table)
    assert rows["full", 1.0, False].tta_s == 4.0
    assert rows["random", 0.5, False].tta_s == 2.0
    assert rows["random", 0.5, False].speedup == pytest.approx(2.0)
    assert rows["el2n-easy", 0.5, False].tta_s == 3.0


def test_zero_drop_targets_the_full_run_final_accuracy(tmp_path):
    write_run(tmp_path, "full", [(1.0, 0.5), (2.0, 0.75), (3.0, 0.625)], recipe="full")
    write_run(tmp_path, "rand", [(0.5, 0.625), (1.0, 0.6875)], recipe="random", kept=0.3)
    table, target = tta_table(find_runs(tmp_path), 0.0)
    assert target == 0.625
    rows = rows_by_key(table)
    assert rows["full", 1.0, False].tta_s == 2.0  # 0.75 at 2 s is the first >= 0.625
    assert rows["random", 0.3, False].tta_s == 0.5
    assert rows["random", 0.3, False].speedup == pytest.approx(4.0)


def test_verdict_names_fastest_pruned_recipe(experiment):
    table, target = tta_table(find_runs(experiment), TARGET_DROP)
    sentence = verdict(table, target)
    # Fastest student: el2n-hard 30 % with KD at 0.6 s, 4.0 / 0.6 = 6.67x the full run.
    assert "el2n-hard 30% + KD" in sentence
    assert "0.60" in sentence
    assert f"{4.0 / 0.6:.2f}" in sentence
    assert "random" not in sentence


def test_verdict_without_kd_names_plain_recipe(tmp_path):
    write_run(tmp_path, "full", [(2.0, 0.5), (6.0, 0.75)], recipe="full")
    write_run(tmp_path, "slow", [(3.0, 0.75)], recipe="random", kept=0.5)
    write_run(tmp_path, "fast", [(1.5, 0.75)], recipe="el2n-hard", kept=0.7)
    write_run(tmp_path, "kd", [(1.0, 0.5), (3.5, 0.75)], recipe="el2n-hard", kept=0.7, kd=KD)
    table, target = tta_table(find_runs(tmp_path), 0.0)
    sentence = verdict(table, target)
    assert "el2n-hard 70%" in sentence
    assert "+ KD" not in sentence
    assert "random" not in sentence
    assert "1.50" in sentence  # its time to the target
    assert f"{6.0 / 1.5:.2f}" in sentence  # its speed-up


def test_verdict_says_when_no_pruned_recipe_reached_target(tmp_path):
    write_run(tmp_path, "full", [(1.0, 0.6), (2.0, 0.9)], recipe="full")
    write_run(tmp_path, "hard", [(0.5, 0.5), (1.0, 0.85)], recipe="el2n-hard", kept=0.3)
    write_run(tmp_path, "kd", [(0.5, 0.7), (1.0, 0.88)], recipe="el2n-hard", kept=0.3, kd=KD)
    table, target = tta_table(find_runs(tmp_path), 0.01)
    assert target == pytest.approx(0.89)
    assert table["tta_s"].isna().sum() == 2
    sentence = verdict(table, target)
    assert sentence.lower().startswith("no pruned recipe reached")
    assert "Fastest" not in sentence
    assert "el2n-hard" not in sentence
    text = render_markdown(table, target, 0.01, "exp")
    assert sentence in text
    assert "not reached" in text


def test_verdict_never_prints_nan(tmp_path):
    # Full finals 0.75 and 0.5; target (drop 0) = 0.625, which seed 1 never reached.
    write_run(tmp_path, "full-s0", [(1.0, 0.5), (2.0, 0.75)], recipe="full")
    write_run(tmp_path, "full-s1", [(1.0, 0.25), (2.0, 0.5)], recipe="full")
    write_run(tmp_path, "hard", [(0.5, 0.75)], recipe="el2n-hard", kept=0.3)
    table, target = tta_table(find_runs(tmp_path), 0.0)
    assert math.isnan(rows_by_key(table)["full", 1.0, False].tta_s)
    assert "nan" not in verdict(table, target).lower()


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


def test_write_report_writes_markdown_and_png(experiment):
    path, text = write_report(experiment, TARGET_DROP)
    assert path == experiment / "report.md"
    assert path.read_text() == text

    png = (experiment / "tta.png").read_bytes()
    assert png.startswith(PNG_MAGIC)
    assert len(png) > 1000

    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) > 3 and cells[0] in {"full", "el2n-hard", "random"}:
            rows.setdefault((cells[0], cells[1], cells[2]), []).append(line)
    assert set(rows) == {
        ("full", "100%", "no"),
        ("el2n-hard", "30%", "no"),
        ("el2n-hard", "30%", "yes"),
        ("random", "50%", "no"),
    }
    assert all(len(lines) == 1 for lines in rows.values())

    (hard,) = rows["el2n-hard", "30%", "no"]
    for number in (1.1, 4.0 / 1.1, 1.6, 4.0 / 1.6):
        assert f"{number:.2f}" in hard
    (hard_kd,) = rows["el2n-hard", "30%", "yes"]
    for number in (0.6, 4.0 / 0.6, 5.6, 4.0 / 5.6):
        assert f"{number:.2f}" in hard_kd
    (rand,) = rows["random", "50%", "no"]
    assert "1/2" in rand

    assert f"{(0.90 + 0.88) / 2 - TARGET_DROP:.1%}" in text  # the target
    assert "el2n-hard 30% + KD" in text  # the verdict
    assert "digits" in text
    assert "tta.png" in text
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in experiment.iterdir() if p.is_file()) == ["report.md", "tta.png"]


def test_write_report_can_be_rerun_and_ignores_its_own_output(experiment):
    first_path, first = write_report(experiment, TARGET_DROP)
    second_path, second = write_report(experiment, TARGET_DROP)
    assert first_path == second_path
    assert first == second
    assert (experiment / "tta.png").read_bytes().startswith(PNG_MAGIC)


def test_write_report_finds_nested_runs(tmp_path):
    write_run(tmp_path / "baseline", "seed0", [(1.0, 0.5), (2.0, 0.75)], recipe="full")
    write_run(tmp_path / "students", "hard", [(0.5, 0.75)], recipe="el2n-hard", kept=0.5)
    _, text = write_report(tmp_path, 0.0)
    assert "| full |" in text
    assert "| el2n-hard |" in text
    assert "el2n-hard 50%" in text  # 0.5 s vs 2.0 s: 4x
    assert f"{4.0:.2f}" in text


def test_overhead_counts_scoring_teacher_training_and_teacher_logits(tmp_path):
    from pathlib import Path

    from datapruning.report import RunRecord

    summary = {"scoring_seconds": 1.5, "teacher_seconds": 4.0, "teacher_logits_seconds": 0.25}
    assert RunRecord(Path(tmp_path), summary, []).overhead_seconds == 5.75
    assert RunRecord(Path(tmp_path), {"teacher_seconds": None}, []).overhead_seconds == 0.0


def test_report_says_when_the_teacher_ran_online(experiment):
    # An augmented KD student: its teacher ran on every augmented batch.
    write_run(
        experiment,
        "rand-kd-s0",
        [(1.0, 0.80), (2.0, 0.88)],
        recipe="random",
        kept=0.5,
        kd=KD,
        kd_teacher="online",
    )
    _, text = write_report(experiment, TARGET_DROP)
    lines = [line for line in text.splitlines() if line.startswith("| random | 50% |")]
    assert sorted(line.split("|")[3].strip() for line in lines) == ["no", "yes (online)"]
    cached = [line for line in text.splitlines() if line.startswith("| el2n-hard | 30% | yes |")]
    assert len(cached) == 1  # KD from cached logits stays a plain yes
