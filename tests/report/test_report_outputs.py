"""What ``write_report`` writes: report.md, report.html and the PNGs, for one experiment
and for a study root of several (different training-set sizes).

Run directories are hand-made with :func:`write_run`; the numbers are exact (see
tests/report/test_report.py for the table arithmetic).
"""

from __future__ import annotations

import json
import re

import pytest
from runs_helper import write_run

import datapruning
from datapruning.report import HTML_NAME, REPORT_NAME, RunRecord, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KD = {"alpha": 0.5, "temperature": 4.0}
ONE_EXPERIMENT_PNGS = ["pruning_curve.png", "time_to_target.png", "tta.png"]


def small_experiment(root, num_train=None, scale=1.0, dataset="digits", hard_tta=1.0):
    """Full data reaches 0.75 at 4 s x scale; el2n-hard 50% at ``hard_tta`` x scale after
    2 s of scoring; a KD student of full-s0 at 1 s x scale, its teacher 8 s x scale."""
    size = {"num_train": num_train, "dataset": dataset}
    write_run(root, "full-s0", [(2.0 * scale, 0.5), (4.0 * scale, 0.75)], recipe="full", **size)
    write_run(
        root,
        "hard-s0",
        [(hard_tta * scale, 0.75)],
        recipe="el2n-hard",
        kept=0.5,
        scoring_seconds=2.0,
        **size,
    )
    write_run(
        root,
        "rand-kd-s0",
        [(1.0 * scale, 0.75)],
        recipe="random",
        kept=0.5,
        kd=KD,
        teacher_seconds=8.0 * scale,
        **size,
    )
    return root


def cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_write_report_writes_markdown_html_and_pngs(tmp_path):
    root = small_experiment(tmp_path / "exp")
    path, text = write_report(root, 0.0, command="datapruning report exp")
    assert path == root / REPORT_NAME
    assert path.read_text() == text
    for name in ONE_EXPERIMENT_PNGS:
        png = (root / name).read_bytes()
        assert png.startswith(PNG_MAGIC), name
        assert len(png) > 1000
        assert f"]({name})" in text  # linked from the markdown
    # Atomic writes leave no temporary files behind.
    files = sorted(p.name for p in root.iterdir() if p.is_file())
    assert files == sorted([*ONE_EXPERIMENT_PNGS, REPORT_NAME, HTML_NAME])
    # The answer line at the top: el2n-hard 1 s + 2 s scoring = 3 s < full 4 s;
    # random + KD 1 s + 8 s teacher (its only student) = 9 s.
    first = text.splitlines()[2]
    assert first == (
        "- To reach 75.0% soonest on digits (1,000 training examples), use **el2n-hard 50%** "
        "(3.00 s end to end, 1.33× full data's 4.00 s), teacher and scores counted once per "
        "sweep. "
        "Student training alone, the fastest is el2n-hard 50% (1.00 s, 4.00×)."
    )
    assert "| teacher full-s0: training | 4.00 |" in text
    (kd,) = [line for line in text.splitlines() if line.startswith("| random | 50% | yes |")]
    assert cells(kd)[14:20] == ["9.00", "0.44×", "9.00", "0.44×", "1.00", "4.00×"]


def test_html_is_self_contained_with_plots_tables_and_provenance(tmp_path):
    root = small_experiment(tmp_path / "exp")
    write_report(root, 0.0, command="datapruning report exp --target-drop 0")
    page = (root / HTML_NAME).read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(ONE_EXPERIMENT_PNGS)
    import base64

    embedded = {base64.b64decode(data) for data in images}
    assert embedded == {(root / name).read_bytes() for name in ONE_EXPERIMENT_PNGS}
    assert page.count('class="dataframe sortable"') >= 2  # the table and the shared costs
    assert "<td>el2n-hard</td>" in page
    assert "<script>" in page and "addEventListener" in page  # the sort script, inline
    assert not re.search(r'(src|href)="https?:', page)  # nothing fetched from elsewhere
    assert "datapruning report exp --target-drop 0" in page
    for key in ("platform", "cpu", "python", "torch", "numpy", "pandas", "datapruning"):
        assert f"<td>{key}</td>" in page
    assert f"<td>{datapruning.__version__}</td>" in page
    assert "<b>el2n-hard 50%</b>" in page  # the answer line, bold as in the markdown
    # report.md ends with the same provenance.
    text = (root / "report.md").read_text()
    made_by = text[text.index("## Made by") :]
    assert "- command: `datapruning report exp --target-drop 0`" in made_by
    assert f"- datapruning: `{datapruning.__version__}`" in made_by and "- cpu: `" in made_by


def test_write_report_can_be_rerun_and_ignores_its_own_output(tmp_path):
    root = small_experiment(tmp_path / "exp")
    first_path, first = write_report(root, 0.0)
    second_path, second = write_report(root, 0.0)
    assert (first_path, first) == (second_path, second)


def test_failed_cells_are_listed_with_their_errors(tmp_path):
    root = small_experiment(tmp_path / "exp")
    cell = root / "forgetting-hard-f0.3-s0"
    cell.mkdir()
    (cell / "failure.json").write_text(
        json.dumps({"run": cell.name, "recipe": "forgetting-hard", "error": "ValueError: bad | x"})
    )
    _, text = write_report(root, 0.0)
    assert "Failed runs (1; the tables leave them out):" in text
    assert "| forgetting-hard-f0.3-s0 | ValueError: bad / x |" in text
    assert "forgetting-hard-f0.3-s0" in (root / HTML_NAME).read_text()


def test_report_says_when_the_teacher_ran_online(tmp_path):
    root = small_experiment(tmp_path / "exp")
    write_run(
        root, "rand-on-s0", [(1.0, 0.75)], recipe="random", kept=0.3, kd=KD, kd_teacher="online"
    )
    _, text = write_report(root, 0.0)
    kd_cells = sorted(cells(line)[2] for line in text.splitlines() if line.startswith("| random"))
    assert kd_cells == ["yes", "yes (online)"]


def test_overhead_counts_scoring_teacher_training_and_teacher_logits(tmp_path):
    kd = {"scoring_seconds": 1.5, "teacher_seconds": 4.0, "teacher_logits_seconds": 0.25}
    assert RunRecord(tmp_path, {**kd, "kd": KD}, []).overhead_seconds == 5.75
    # Without KD a stray teacher cost is not charged; scoring still is.
    assert RunRecord(tmp_path, {**kd, "kd": None}, []).overhead_seconds == 1.5
    assert RunRecord(tmp_path, {"teacher_seconds": None}, []).overhead_seconds == 0.0


@pytest.fixture
def study(tmp_path):
    """Three MNIST-1D sizes: training time grows with size, scoring stays 2 s.

    1,000: full 4 s, el2n-hard 3.5 + 2 = 5.5 s: full data wins.
    4,000: full 16 s, el2n-hard 4 x 1 + 2 = 6 s (2.67x); KD 4 + 32 = 36 s.
    16,000: full 64 s, el2n-hard 16 + 2 = 18 s (3.56x).
    """
    root = tmp_path / "study"
    small_experiment(root / "mnist1d-1k", 1000, 1.0, "mnist1d", hard_tta=3.5)
    small_experiment(root / "mnist1d-4k", 4000, 4.0, "mnist1d")
    small_experiment(root / "mnist1d-16k", 16000, 16.0, "mnist1d")
    return root


def test_study_root_gets_a_summary_per_target_and_the_smallest_size(study):
    _, text = write_report(study, 0.0, targets=["0.5"])
    lines = text.splitlines()
    # One answer line per experiment at the top, smallest size first.
    answers = [line for line in lines[:6] if line.startswith("- ")]
    assert [re.search(r"\(([\d,]+) training", a).group(1) for a in answers] == [
        "1,000",
        "4,000",
        "16,000",
    ]
    assert [a.split(":")[0] for a in answers] == ["- mnist1d-1k", "- mnist1d-4k", "- mnist1d-16k"]
    assert "no recipe beats full-data training end to end (4.00 s" in answers[0]
    assert "use **el2n-hard 50%** (6.00 s end to end, 2.67× full data's 16.00 s)" in answers[1]

    start = lines.index("## Study summary, target drop 0")
    summary = [cells(line) for line in lines[start + 4 : start + 7]]
    assert [row[0] for row in summary] == ["mnist1d-1k", "mnist1d-4k", "mnist1d-16k"]
    assert [row[2] for row in summary] == ["1,000", "4,000", "16,000"]
    assert [row[4] for row in summary] == ["4.00", "16.00", "64.00"]
    assert [row[5] for row in summary] == ["full data", "el2n-hard 50%", "el2n-hard 50%"]
    assert summary[2][7] == "18.00"  # end to end once per sweep
    assert summary[2][10] == f"{64 / 18:.2f}×"
    assert (
        "The smallest training-set size at which the best recipe beats full-data training end "
        "to end, teacher and scores counted once per sweep, is **4,000 examples** (mnist1d, "
        "el2n-hard 50%: "
        "2.67× full data)." in text
    )
    assert "## Study summary, target 0.5" in text
    # Each experiment has its own section, tables and plots, named after it.
    for name in ("mnist1d-1k", "mnist1d-4k", "mnist1d-16k"):
        assert f"## {name}" in lines
        for plot in ONE_EXPERIMENT_PNGS:
            stem, suffix = plot.split(".")
            assert (study / f"{stem}-{name}.{suffix}").read_bytes().startswith(PNG_MAGIC)
    assert (study / "speedup_vs_size.png").read_bytes().startswith(PNG_MAGIC)
    assert "](speedup_vs_size.png)" in text
    page = (study / HTML_NAME).read_text()
    assert page.count("data:image/png;base64,") == 1 + 3 * len(ONE_EXPERIMENT_PNGS)
    assert "Study summary" in page


def test_study_where_pruning_never_pays_says_so(tmp_path):
    root = tmp_path / "study"
    small_experiment(root / "a", 1000, 1.0, hard_tta=3.5)
    small_experiment(root / "b", 2000, 2.0, hard_tta=3.5)
    _, text = write_report(root, 0.0)
    assert (
        "At no training-set size here does any recipe beat full-data training end to end "
        "with the teacher and scores counted once per sweep." in text
    )


def test_experiment_without_full_data_in_a_study_is_noted_not_fatal(tmp_path):
    root = tmp_path / "study"
    small_experiment(root / "a", 1000)
    write_run(root / "b", "hard-s0", [(1.0, 0.75)], recipe="el2n-hard", kept=0.5)
    _, text = write_report(root, 0.0)
    assert "No full-data run (recipe 'full') in this experiment" in text
    assert "## a" in text.splitlines()


def test_where_the_time_goes_sums_each_experiments_work_once(study):
    _, text = write_report(study, 0.0)
    lines = text.splitlines()
    start = lines.index("## Where the time goes")
    header = cells(lines[start + 4])
    rows = {
        row[0]: dict(zip(header, row, strict=True))
        for row in map(cells, lines[start + 6 : start + 9])
    }
    # mnist1d-4k (scale 4): full data 16 s; students 4 s (el2n-hard) + 4 s (random + KD);
    # three runs evaluated for 0.25 s each; no scores files, no logits record.
    four = rows["mnist1d-4k"]
    assert (four["train size"], four["runs"]) == ("4,000", "3")
    assert (four["teachers s"], four["students s"], four["evaluation s"]) == ("16.0", "8.0", "0.8")
    assert (four["scoring s"], four["total s"]) == ("0.0", "24.8")
    assert "<h2>Where the time goes</h2>" in (study / HTML_NAME).read_text()


def test_identical_full_data_runs_show_the_clocks_spread(tmp_path):
    """Full-data runs of the same work in two experiments (one recording scores, whose
    bookkeeping inside the clock is taken off) sit side by side with slowest / fastest."""
    import json

    root = tmp_path / "study"
    for name, seconds, inside in (("a", 10.0, 0.0), ("a-runs", 13.0, 1.0), ("b", 4.0, 0.0)):
        run = write_run(root / name, "full-s0", [(seconds, 0.9)], recipe="full")
        summary = json.loads((run / "summary.json").read_text())
        summary["steps"] = 300 if name != "b" else 100  # b did other work: not a repeat
        summary["dynamics"] = {"seconds_in_training": inside}
        (run / "summary.json").write_text(json.dumps(summary))
    _, text = write_report(root, 0.0)
    lines = text.splitlines()
    start = lines.index("## How steady the clock was")
    header = cells(lines[start + 4])
    (row,) = [dict(zip(header, cells(line), strict=True)) for line in lines[start + 6 : start + 7]]
    assert row["runs"] == "a/full-s0, a-runs/full-s0"
    assert (row["training s"], row["slowest / fastest"]) == ("10.0 / 12.0", "1.20x")
    assert "Largest spread between identical runs: 1.20x." in text
    assert "<h2>How steady the clock was</h2>" in (root / HTML_NAME).read_text()
