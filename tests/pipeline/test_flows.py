"""Flows under a Prefect test server: reuse, retries, failures, accounting, runners, bad input."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli_helper import assert_one_line_error, run_cli

from datapruning.config import parse_config
from datapruning.pipeline import failures, grid, score_cells, train_cells
from datapruning.pipeline.recipes import StudentRecipe
from datapruning.train.checkpoint import CHECKPOINT_NAME

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "name": "tiny",
    "dataset": {"name": "mnist1d", "params": {"num_samples": 400}},
    "model": {"name": "convnet1d", "params": {"channels": 8}},
    "train": {"epochs": 2, "batch_size": 50, "targets": [0.2]},
    "scoring": {"metric": "el2n", "seeds": 2, "epochs": 1, "ensemble_size": 1},
    "students": {
        "fractions": [0.5],
        "strategies": ["random", "hard"],
        "kd": [False, True],
        "seeds": [0],
    },
}
STUDENTS = {"random-f0.5-s0", "random-f0.5-kd-s0", "el2n-hard-f0.5-s0", "el2n-hard-f0.5-kd-s0"}


def write_config(tmp_path: Path, **changes) -> Path:
    raw = json.loads(json.dumps(TINY)) | {"output_dir": str(tmp_path / "runs")}
    for key, value in changes.items():
        raw[key] = value
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def checkpoint_mtimes(root: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in root.glob(f"*/{CHECKPOINT_NAME}")}


def summary(root: Path, name: str) -> dict:
    return json.loads((root / name / "summary.json").read_text())


# ------------------------------------------------------------------ without Prefect


def test_accounting_charges_what_each_student_used_whatever_the_order(tmp_path, one_thread):
    for order in ("forward", "reverse"):
        cfg = parse_config(TINY | {"output_dir": str(tmp_path / order)})
        (exp,) = grid.experiments(cfg)
        teacher = train_cells.run_teacher(exp.cfg, 0)
        scores = score_cells.merge_scores(exp.cfg, "el2n")
        recipes = exp.recipes if order == "forward" else exp.recipes[::-1]
        for recipe in recipes:
            train_cells.run_student(exp.cfg, recipe, scores, teacher)
        root = exp.root
        for recipe in exp.recipes:
            s = summary(root, recipe.run_name)
            assert s["scoring_seconds"] == (scores["seconds"] if recipe.needs_scores else 0.0)
            assert s["teacher_seconds"] == (teacher["train_seconds"] if recipe.kd else 0.0)
            # Every KD student pays the teacher's logits, the same recorded cost.
            assert s["teacher_logits_seconds"] == (teacher["logits_seconds"] if recipe.kd else 0)
            assert math.isclose(
                s["end_to_end_seconds"],
                s["train_seconds"]
                + s["scoring_seconds"]
                + s["teacher_seconds"]
                + s["teacher_logits_seconds"],
            )
        assert teacher["logits_seconds"] > 0

        # The report lists the shared costs once, besides the per-student charges.
        from datapruning.report import write_report

        _, text = write_report(root)
        assert "| teacher full-s0: training |" in text
        assert "| teacher full-s0: logits |" in text
        assert "| scoring: el2n |" in text

    # A crash mid-run leaves no summary.json: rerunning the cells retrains that one only.
    victim = exp.recipes[1].run_name
    (root / victim / "summary.json").unlink()
    statuses = {
        r.run_name: train_cells.run_student(exp.cfg, r, scores, teacher)["status"]
        for r in exp.recipes
    }
    assert statuses == {
        r.run_name: "trained" if r.run_name == victim else "reused" for r in exp.recipes
    }
    assert train_cells.run_teacher(exp.cfg, 0)["status"] == "reused"


def test_sweep_grid_expands_datasets_models_metrics_and_sparsity(tmp_path):
    cfg = parse_config(
        TINY
        | {
            "output_dir": str(tmp_path),
            "sweep": {
                "models": [{"name": "convnet1d"}, {"name": "mlp"}],
                "metrics": ["el2n", "random"],
                "sparsity": [0.0, 0.5],
            },
        }
    )
    exps = grid.experiments(cfg)
    assert [e.root.name for e in exps] == ["mnist1d-convnet1d", "mnist1d-mlp"]
    assert {e.root.parent for e in exps} == {tmp_path / "tiny"}
    names = {r.run_name for r in exps[0].recipes}
    # random students do not read scores: once per sparsity, not once per metric.
    assert len(names) == 2 * 2 * (1 + 2)
    assert "el2n-hard-sp0.5-f0.5-kd-s0" in names and "random-f0.5-s0" in names
    assert exps[0].scored_metrics == ["el2n", "random"]


def test_transient_errors_only():
    assert failures.is_transient(OSError("disk"))
    assert failures.is_transient(type("KilledWorker", (Exception,), {})())
    assert not failures.is_transient(ValueError("bad"))
    from datapruning.errors import DataPruningError

    assert not failures.is_transient(DataPruningError("bad input"))


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--runner", "threads"], ["unknown runner 'threads'", "sequential, processes, dask"]),
        (["--runner", "dask", "--dask-address", "tcp://127.0.0.1:9"], ["unreachable"]),
        (["--workers", "2"], ["--workers needs --runner processes or dask"]),
        (["--set", "students.kd=[]"], ["students.kd", "empty grid axis"]),
        (["--set", "sweep.metrics=[]"], ["sweep.metrics", "empty grid axis"]),
    ],
)
def test_run_refuses_bad_input_before_any_work(tmp_path, capsys, monkeypatch, args, fragments):
    from datapruning.flows import runners

    monkeypatch.setattr(runners, "CONNECT_TIMEOUT", 1)
    config = write_config(tmp_path)
    code, _, err = run_cli(capsys, "run", config, *args)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "runs").exists()


def test_a_flow_takes_a_config_file_with_overrides_or_a_loaded_config_as_is(tmp_path):
    from datapruning.errors import DataPruningError
    from datapruning.flows.tasks import config_of

    loaded = config_of(str(write_config(tmp_path)), ["train.epochs=1"])
    assert loaded.train.epochs == 1
    assert config_of(loaded, None) is loaded  # `datapruning run` hands its config down
    with pytest.raises(DataPruningError, match="loaded already"):
        config_of(loaded, ["train.epochs=3"])


def test_a_cell_waiting_for_an_input_no_cell_makes_is_an_error_not_a_hang():
    from datapruning.flows.queue import CellQueue

    queue = CellQueue(slots=1)
    queue.add(("student", 0, "el2n-hard-f0.5-s0"), (3, -0.5), [("scores", 0, "el2n")], None)
    with pytest.raises(RuntimeError, match="no cell makes"):
        list(queue.run())


def test_a_cell_on_several_processes_takes_as_many_slots():
    from datapruning.flows.queue import CellQueue

    queue = CellQueue(slots=2)
    queue.add(("teacher", 0, 0), 0, [], None, width=2)
    queue.add(("teacher", 0, 1), 0, [], None)
    queue.add(("student", 0, "wide"), 0, [], None, width=3)
    assert queue.fits(("teacher", 0, 0), [])
    assert not queue.fits(("teacher", 0, 0), [("teacher", 0, 1)])  # 1 + 2 > 2 slots
    assert queue.fits(("teacher", 0, 1), [])
    assert queue.fits(("student", 0, "wide"), [])  # wider than all slots: alone
    assert not queue.fits(("teacher", 0, 1), [("student", 0, "wide")])


def test_a_prefect_server_that_does_not_start_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    from prefect.server.api.server import SubprocessASGIServer

    def times_out(self, timeout=None):
        raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")

    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setattr(SubprocessASGIServer, "start", times_out)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # No API configured, even when the session's test server has already started.
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        code, _, err = run_cli(capsys, "run", write_config(tmp_path))
    assert_one_line_error(code, err, "did not start within", "prefect server start")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_sigterm_stops_run_with_one_line_and_takes_its_temporary_server_along(tmp_path):
    """A SIGTERM left to its default action ended `run` without Python's exit, so the
    temporary Prefect server it had started (a child process) ran on, orphaned."""
    config = write_config(
        tmp_path,
        train=TINY["train"] | {"epochs": 400},  # a teacher that trains long enough to be hit
        students={"fractions": [0.5], "strategies": ["random"], "kd": [False], "seeds": [0]},
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")  # its own server, not the session's
    script = shutil.which("datapruning", path=str(Path(sys.executable).parent))
    assert script is not None
    log = tmp_path / "run.log"
    started = tmp_path / "runs" / "tiny" / "full-s0" / "metrics.jsonl"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [script, "run", str(config)], cwd=tmp_path, env=env, stdout=err, stderr=err
        )
        deadline = time.monotonic() + 180
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert started.exists(), log.read_text()[-2000:]
        children = [
            int(pid)
            for task in Path(f"/proc/{proc.pid}/task").iterdir()
            for pid in (task / "children").read_text().split()
        ]
        assert children  # the temporary server
        try:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and any(
                Path(f"/proc/{pid}").exists() for pid in children
            ):
                time.sleep(0.2)
            alive = [pid for pid in children if Path(f"/proc/{pid}").exists()]
        finally:  # whatever failed, leave no run or server running behind the test
            if proc.poll() is None:
                proc.kill()
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert code == 128 + signal.SIGTERM
    assert not alive, "the temporary Prefect server outlived the run"
    lines = [line for line in log.read_text().splitlines() if line.startswith("interrupted")]
    assert lines == [
        "interrupted by SIGTERM: stopped; to continue, run: datapruning run " + str(config)
    ]


# ------------------------------------------------------------------ flows


@pytest.mark.slow
def test_rerun_reuses_everything_and_a_changed_setting_retrains_only_its_runs(
    tmp_path, prefect_server, capsys
):
    config = write_config(tmp_path)
    root = tmp_path / "runs" / "tiny"
    code, out, _ = run_cli(capsys, "run", config)
    assert code == 0, out
    assert "5 runs: 5 trained, 0 reused" in out
    first = checkpoint_mtimes(root)
    assert set(first) == STUDENTS | {"full-s0"}
    scores_mtime = (root / "scores" / "el2n.parquet").stat().st_mtime_ns

    code, out, _ = run_cli(capsys, "run", config)
    assert code == 0 and "5 runs: 0 trained, 5 reused" in out
    assert checkpoint_mtimes(root) == first
    assert (root / "scores" / "el2n.parquet").stat().st_mtime_ns == scores_mtime

    # A KD setting: only the distilled students train again.
    code, out, _ = run_cli(capsys, "run", config, "--set", "kd.temperature=2.0")
    assert code == 0 and "5 runs: 2 trained, 3 reused" in out
    changed = {name for name, t in checkpoint_mtimes(root).items() if t != first[name]}
    assert changed == {"random-f0.5-kd-s0", "el2n-hard-f0.5-kd-s0"}

    # --refresh recomputes what it runs, scores included (on a smaller grid, to save time).
    fewer = ["--set", "students.strategies=[hard]", "--set", "students.kd=[false]"]
    code, out, _ = run_cli(capsys, "run", config, *fewer, "--refresh")
    assert code == 0 and "2 runs: 2 trained, 0 reused" in out
    assert (root / "scores" / "el2n.parquet").stat().st_mtime_ns != scores_mtime


@pytest.mark.slow
def test_run_reads_its_config_file_once(tmp_path, capsys, prefect_server, monkeypatch):
    # The CLI loads and checks the config; the flow and its cells subflow take it as loaded.
    import datapruning.config
    from datapruning.flows import tasks

    read: list[str] = []
    real = datapruning.config.load_config

    def counting(path, overrides=None):
        read.append(str(path))
        return real(path, overrides)

    monkeypatch.setattr(datapruning.config, "load_config", counting)
    monkeypatch.setattr(tasks, "load_config", counting)
    students = {"fractions": [0.5], "strategies": ["random"], "kd": [False], "seeds": [0]}
    config = write_config(tmp_path, name="once", students=students)
    code, out, _ = run_cli(capsys, "run", config, "--set", "train.epochs=1")
    assert code == 0 and "2 runs: 2 trained, 0 reused" in out
    assert read == [str(config)]
    assert summary(tmp_path / "runs" / "once", "random-f0.5-s0")["config"]["train"]["epochs"] == 1


@pytest.mark.slow
def test_retry_after_a_transient_error_and_a_cell_that_fails_for_good(
    tmp_path, prefect_server, monkeypatch
):
    from datapruning.flows.pipeline import pipeline

    calls: dict[str, int] = {}
    real = train_cells.run_student

    def flaky(cfg, recipe: StudentRecipe, scores, teacher, *, refresh=False):
        calls[recipe.run_name] = calls.get(recipe.run_name, 0) + 1
        if recipe.run_name == "random-f0.5-s0" and calls[recipe.run_name] == 1:
            raise OSError("shared filesystem hiccup")
        if recipe.run_name == "el2n-hard-f0.5-kd-s0":
            raise ValueError("this cell is broken")
        return real(cfg, recipe, scores, teacher, refresh=refresh)

    monkeypatch.setattr(train_cells, "run_student", flaky)
    # Its own name: artifact keys (results-NAME, ...) are shared by every run of a name.
    result = pipeline(str(write_config(tmp_path, name="flaky")), retries=2, retry_delay=0.1)
    assert calls["random-f0.5-s0"] == 2  # failed once, passed on retry
    assert calls["el2n-hard-f0.5-kd-s0"] == 1  # not transient: no retry
    assert result["counts"] == {"trained": 4, "reused": 0, "failed": 1}
    root = tmp_path / "runs" / "flaky"
    assert set(checkpoint_mtimes(root)) == (STUDENTS - {"el2n-hard-f0.5-kd-s0"}) | {"full-s0"}
    report = (root / "report.md").read_text()
    assert "| el2n-hard-f0.5-kd-s0 | ValueError: this cell is broken |" in report

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        keys = ["results-flaky", "progress-flaky", "tta-report-flaky"]
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    by_key = {a.key: a for a in found}
    assert set(by_key) == set(keys)
    table = by_key["results-flaky"].data
    table = json.loads(table) if isinstance(table, str) else table
    assert {row["run"]: row["status"] for row in table}["el2n-hard-f0.5-kd-s0"] == "failed"
    assert float(by_key["progress-flaky"].data) == 100.0


def test_a_student_that_reads_neither_teacher_nor_scores_starts_before_they_finish(
    tmp_path, prefect_server, monkeypatch
):
    # The teacher waits until the plain random student has started: with two task
    # slots this finishes only if that student does not wait for the teacher.
    import threading

    from prefect.task_runners import ThreadPoolTaskRunner

    from datapruning.flows.pipeline import cells

    started = threading.Event()
    done = {"final_test_acc": 0.5, "train_seconds": 1.0}

    def teacher(cfg, seed, *, record=None, refresh=False):
        assert started.wait(60), "the random student waited for the teacher"
        return {"run": "full-s0", "status": "trained", **done, "logits_seconds": 0.0}

    def student(cfg, recipe, scores, teacher, *, refresh=False):
        if recipe.run_name == "random-f0.5-s0":
            started.set()
        return {"run": recipe.run_name, "status": "trained", **done}

    monkeypatch.setattr(train_cells, "run_teacher", teacher)
    monkeypatch.setattr(train_cells, "run_student", student)
    monkeypatch.setattr(score_cells, "score_group", lambda cfg, metric, seeds: list(seeds))
    monkeypatch.setattr(score_cells, "reusable_scores", lambda cfg, metric: None)
    monkeypatch.setattr(
        score_cells,
        "merge_scores",
        lambda cfg, metric: {"reused": False, "seconds": 0.0, "path": "-"},
    )
    config = write_config(tmp_path, name="order")
    runner = ThreadPoolTaskRunner(max_workers=2)
    result = cells.with_options(task_runner=runner)(str(config), retries=0)
    assert result["counts"] == {"trained": 5, "reused": 0, "failed": 0}
    assert [r["run"] for r in result["records"]] == sorted(STUDENTS | {"full-s0"})


def test_one_slot_runs_what_students_wait_for_first_then_the_longest_students(
    tmp_path, prefect_server, monkeypatch
):
    # With one slot the order is the queue's: the teacher, scoring's groups and merge before
    # any student, then students longest first; a scoring group that fails for good fails
    # the students that read its scores without sending them.
    from prefect.task_runners import ThreadPoolTaskRunner

    from datapruning.flows.pipeline import cells

    ran: list[str] = []
    done = {"final_test_acc": 0.5, "train_seconds": 1.0}

    def teacher(cfg, seed, *, record=None, refresh=False):
        ran.append("teacher")
        return {"run": "full-s0", "status": "trained", **done, "logits_seconds": 0.0}

    def group(cfg, metric, seeds):
        ran.append(f"group{seeds[0]}")
        if seeds == [1]:
            raise ValueError("scoring model diverged")
        return list(seeds)

    def student(cfg, recipe, scores, teacher, *, refresh=False):
        ran.append(recipe.run_name)
        return {"run": recipe.run_name, "status": "trained", **done}

    monkeypatch.setattr(train_cells, "run_teacher", teacher)
    monkeypatch.setattr(train_cells, "run_student", student)
    monkeypatch.setattr(score_cells, "score_group", group)
    monkeypatch.setattr(score_cells, "reusable_scores", lambda cfg, metric: None)
    students = {"fractions": [0.3, 0.7], "strategies": ["random", "hard"], "kd": [False, True]}
    config = write_config(tmp_path, name="queue", students=students | {"seeds": [0]})
    result = cells.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))(
        str(config), retries=0, slots=1
    )
    assert ran == [
        "teacher",
        "group0",
        "group1",
        "random-f0.7-kd-s0",
        "random-f0.7-s0",
        "random-f0.3-kd-s0",
        "random-f0.3-s0",
    ]
    failed = {r["run"]: r["error"] for r in result["records"] if r["status"] == "failed"}
    assert set(failed) == {f"el2n-hard-f{f}{kd}-s0" for f in (0.3, 0.7) for kd in ("", "-kd")}
    assert all(e == "scoring failed: ValueError: scoring model diverged" for e in failed.values())


def test_one_slot_sends_a_sweeps_bigger_experiments_work_first(
    tmp_path, prefect_server, monkeypatch
):
    # Two sizes of one dataset, the small one listed first: with one slot the queue sends
    # the bigger teacher first and then students by their work in full-data steps, so a
    # big experiment's 50% student goes before a small one's 70%.
    from prefect.task_runners import ThreadPoolTaskRunner

    from datapruning.flows.pipeline import cells

    ran: list[str] = []
    done = {"final_test_acc": 0.5, "train_seconds": 1.0}

    def teacher(cfg, seed, *, record=None, refresh=False):
        ran.append(f"{cfg.name}/teacher")
        return {"run": "full-s0", "status": "trained", **done, "logits_seconds": 0.0}

    def student(cfg, recipe, scores, teacher, *, refresh=False):
        ran.append(f"{cfg.name}/{recipe.run_name}")
        return {"run": recipe.run_name, "status": "trained", **done}

    monkeypatch.setattr(train_cells, "run_teacher", teacher)
    monkeypatch.setattr(train_cells, "run_student", student)
    students = {"fractions": [0.5, 0.7], "strategies": ["random"], "kd": [False], "seeds": [0]}
    sizes = [
        {"name": "mnist1d", "label": "small", "params": {"num_samples": 400}},
        {"name": "mnist1d", "label": "big", "params": {"num_samples": 800}},
    ]
    config = write_config(tmp_path, name="sizes", students=students, sweep={"datasets": sizes})
    result = cells.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))(
        str(config), retries=0, slots=1
    )
    assert result["counts"] == {"trained": 6, "reused": 0, "failed": 0}
    # Full-data steps: big 2 epochs x 13 batches = 26, small 2 x 7 = 14; students 0.7 x 26,
    # 0.5 x 26, 0.7 x 14, 0.5 x 14.
    assert ran == [
        "big/teacher",
        "small/teacher",
        "big/random-f0.7-s0",
        "big/random-f0.5-s0",
        "small/random-f0.7-s0",
        "small/random-f0.5-s0",
    ]


@pytest.mark.slow
def test_dask_runner_on_a_local_cluster_of_two_workers(tmp_path, prefect_server):
    from datapruning.flows.pipeline import pipeline

    # Scoring's seed groups, a teacher and the students it feeds, on two worker processes.
    students = {"fractions": [0.5], "strategies": ["hard"], "kd": [False, True], "seeds": [0]}
    result = pipeline(str(write_config(tmp_path, students=students)), runner="dask", workers=2)
    assert result["counts"] == {"trained": 3, "reused": 0, "failed": 0}
    root = tmp_path / "runs" / "tiny"
    fanned = {"el2n-hard-f0.5-s0", "el2n-hard-f0.5-kd-s0", "full-s0"}
    assert set(checkpoint_mtimes(root)) == fanned
    assert (root / "report.md").is_file()
    # Each cell ran in a worker process, not in the flow's.
    import os

    pids = {summary(root, name).get("pid") for name in fanned}
    assert os.getpid() not in pids and None not in pids


@pytest.mark.slow
def test_score_and_train_flows_fan_out_and_reuse(tmp_path, prefect_server):
    from datapruning.flows.score import score
    from datapruning.flows.train import train

    config = str(write_config(tmp_path))
    (record,) = score(config)["scores"]
    path = Path(record["path"])
    assert not record["reused"] and path.is_file()
    assert score_cells.seed_groups(parse_config(TINY), "el2n") == [[0], [1]]  # two cells, one merge
    assert not path.with_name(path.name + ".parts").exists()
    mtime = path.stat().st_mtime_ns
    (again,) = score(config)["scores"]
    assert again["reused"] and path.stat().st_mtime_ns == mtime

    out = str(tmp_path / "one")
    assert train(config, ["train.epochs=1"], out=out)["status"] == "trained"
    mtime = (Path(out) / CHECKPOINT_NAME).stat().st_mtime_ns
    assert train(config, ["train.epochs=1"], out=out)["status"] == "reused"
    assert (Path(out) / CHECKPOINT_NAME).stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_sweep_flow_runs_every_model_and_sparsity_target(tmp_path, prefect_server):
    from datapruning.flows.pipeline import sweep

    sweep_section = {
        "models": [{"name": "convnet1d", "params": {"channels": 8}}, {"name": "mlp"}],
        "metrics": ["random"],
        "sparsity": [0.0, 0.5],
    }
    students = {"fractions": [0.5], "strategies": ["hard"], "kd": [False], "seeds": [0]}
    config = write_config(tmp_path, sweep=sweep_section, students=students)
    result = sweep(str(config))
    assert result["counts"] == {"trained": 6, "reused": 0, "failed": 0}
    root = tmp_path / "runs" / "tiny"
    for experiment in ("mnist1d-convnet1d", "mnist1d-mlp"):
        runs = set(checkpoint_mtimes(root / experiment))
        assert runs == {"full-s0", "random-hard-f0.5-s0", "random-hard-sp0.5-f0.5-s0"}
        assert (root / experiment / "report.md").is_file()
        sparse = summary(root / experiment, "random-hard-sp0.5-f0.5-s0")
        assert sparse["config"]["train"]["sparsity"]["target"] == 0.5
    # One report per experiment, and the sweep's own beside them.
    assert result["reports"] == [
        str(root / "mnist1d-convnet1d" / "report.md"),
        str(root / "mnist1d-mlp" / "report.md"),
        str(root / "report.md"),
    ]


@pytest.mark.slow
def test_a_diverging_run_fails_its_cells_and_the_others_finish(tmp_path, prefect_server):
    from datapruning.flows.pipeline import sweep

    students = {"fractions": [0.5], "strategies": ["random"], "kd": [False], "seeds": [0]}
    datasets = [
        {"name": "mnist1d", "params": {"num_samples": 400}, "label": "ok"},
        # lr 1000, unclipped: the loss is NaN after the first epoch; the loop stops the run
        # there.
        {
            "name": "mnist1d",
            "params": {"num_samples": 400},
            "label": "bad",
            "train": {"lr": 1000.0, "clip_grad_norm": None},
        },
    ]
    config = write_config(tmp_path, name="diverge", students=students, sweep={"datasets": datasets})
    result = sweep(str(config), retries=1, retry_delay=0.1)
    records = {(r["experiment"], r["run"]): r for r in result["records"]}
    statuses = {key: record["status"] for key, record in records.items()}
    assert statuses == {
        ("ok", "full-s0"): "trained",
        ("ok", "random-f0.5-s0"): "trained",
        ("bad", "full-s0"): "failed",
        ("bad", "random-f0.5-s0"): "failed",
    }
    error = records[("bad", "full-s0")]["error"]
    assert "the run diverged; lower train.lr (1000)" in error and "\n" not in error
