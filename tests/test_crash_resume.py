"""``datapruning train`` and ``datapruning score`` resume exactly after being killed.

Each command runs in its own process with checkpointing on (train: a resume
point every 5 steps; score: each finished seed saved) and is killed at seeded
random moments (SIGKILL), then run again with the same arguments. The rerun
must really resume (``resumed_from_step`` equal to the step of the resume file
the kill left; the finished seeds reused, ``reused_seeds``) and end where an
uninterrupted run ends: the same weights bit for bit (``torch.equal`` on every
tensor of the state dicts), the same evaluations in ``metrics.jsonl`` (no line
from after the resume point left behind), the same scores. A kill that lands
before the first resume point, or after the run finished, is counted apart: its
rerun must still end with the same result. SIGINT and SIGTERM must stop at a
resume point, exit 130 / 143 with one line giving the command that continues,
and that command must finish the job exactly.

Processes: a fresh Python interpreter spends 5-15 s importing torch,
scikit-learn and the package on this 2-core machine, which would leave room for
two or three kill points a minute. So the commands run in processes forked from
one server process (started here) that has done those imports once; each child
runs ``datapruning.cli.main(argv)``, what the console script runs, and is
signalled by its own pid. One SIGINT goes to the real ``datapruning`` console
script, to cover the entry point itself. The kill points tried and how many
resumed exactly are printed (``pytest -s``) as ``kill points: ...``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import torch

from datapruning.scores import Scores
from datapruning.train.state import Progress

pytestmark = pytest.mark.slow

# Forks a child per request: {"argv", "cwd", "stdout", "stderr"} -> {"pid"}, then {"code"}
# (the exit status, or minus the signal that ended it).
FORK_SERVER = """
import json, os, sys, traceback
import datapruning.cli
import datapruning.train.loop, datapruning.scoring.el2n, datapruning.data.sources
import datapruning.scores, datapruning.models, sklearn.datasets, sklearn.model_selection
import torch._dynamo, torch._inductor  # torch.use_deterministic_algorithms imports them

for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(request["cwd"])
            for fd, name in ((1, "stdout"), (2, "stderr")):
                os.dup2(os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            sys.argv = ["datapruning", *request["argv"]]
            code = datapruning.cli.main(request["argv"])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
"""

TRAIN_CONFIG = """\
dataset: {name: digits}
model: {name: mlp, params: {hidden: 32}}
train:
  epochs: 8
  batch_size: 32
  lr: 0.1
  threads: 1
  deterministic: true
  checkpoint_every: 5
"""
# 6 seeds trained one group (of one) at a time, each saved as it finishes.
SCORE_ARGS = [
    "--dataset", "digits", "--metric", "el2n", "--seeds", "6", "--epochs", "2",
    "--model", "mlp", "--set", "model.params.hidden=16", "--set", "scoring.ensemble_size=1",
    "--set", "scoring.ensemble_threads=1", "--set", "train.threads=1",
]  # fmt: skip
TIMEOUT = 300  # seconds any one command may take before the test fails


class ForkServer:
    """Runs ``datapruning ARGV`` in children of one process that imported everything once."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _read(self) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        assert ready, "the fork server did not answer"
        line = self.proc.stdout.readline()
        assert line, f"the fork server exited ({self.proc.poll()})"
        return json.loads(line)

    def start(self, argv: list[str], cwd: Path, log: Path) -> int:
        request = {
            "argv": [str(arg) for arg in argv],
            "cwd": str(cwd),
            "stdout": str(log.with_suffix(".out")),
            "stderr": str(log.with_suffix(".err")),
        }
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()["pid"]

    def wait(self) -> int:
        return self._read()["code"]

    def run(self, argv: list[str], cwd: Path, log: Path) -> int:
        self.start(argv, cwd, log)
        return self.wait()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server():
    server = ForkServer()
    yield server
    server.close()


@dataclass
class Tally:
    """Kill points tried and what their reruns did."""

    tried: int = 0
    resumed: int = 0  # a resume point existed; the rerun continued from it and matched
    before_first: int = 0  # no resume point yet; the rerun started over and matched
    after_finish: int = 0  # the command had finished; nothing to resume
    orphan_lines: int = 0  # kills that left metrics.jsonl lines past the resume point
    notes: list[str] = field(default_factory=list)

    def line(self, what: str) -> str:
        return (
            f"kill points: {what}: {self.tried} tried, {self.resumed} resumed exactly, "
            f"{self.before_first} before the first resume point (rerun from scratch, exact), "
            f"{self.after_finish} after the end"
        )


def kill_after(server: ForkServer, argv, cwd, log, delay: float, signum: int) -> int:
    pid = server.start(argv, cwd, log)
    time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):  # already finished and reaped
        os.kill(pid, signum)
    return server.wait()


def wait_for(condition, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def last_error_line(log: Path) -> str:
    lines = log.with_suffix(".err").read_text().strip().splitlines()
    assert lines, "nothing on stderr"
    return lines[-1]


# --- train -------------------------------------------------------------------------------


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["state_dict"]


def assert_same_weights(run_dir: Path, reference: Path) -> None:
    a, b = weights(run_dir), weights(reference)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


EVAL_KEYS = ("epoch", "step", "train_loss", "test_loss", "test_acc", "lr")


def evaluations(run_dir: Path) -> list[list]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [[json.loads(line)[k] for k in EVAL_KEYS] for line in lines]


def resume_step(run_dir: Path) -> int | None:
    path = run_dir / "resume.pt"
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return Progress.from_json(state["progress"]).step


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def train_setup(server, tmp_path_factory):
    """The uninterrupted run, and how long it spends before and in its training loop."""
    root = tmp_path_factory.mktemp("train")
    (root / "train.yaml").write_text(TRAIN_CONFIG)
    start = time.monotonic()
    server.start(["train", "train.yaml", "--out", "ref"], root, root / "ref")
    wait_for((root / "ref" / "metrics.jsonl").exists)  # written as the loop starts
    setup_seconds = time.monotonic() - start
    code = server.wait()
    assert code == 0, (root / "ref.err").read_text()
    return root, setup_seconds, time.monotonic() - start - setup_seconds


def check_rerun(server, root: Path, name: str, expected_step: int | None, reference: Path):
    code = server.run(["train", "train.yaml", "--out", name], root, root / f"{name}-rerun")
    assert code == 0, (root / f"{name}-rerun.err").read_text()
    assert summary(root / name)["resumed_from_step"] == expected_step
    assert_same_weights(root / name, reference)
    assert evaluations(root / name) == evaluations(reference)
    assert not (root / name / "resume.pt").exists()
    assert not list((root / name).glob(".*")), "a killed write's temporary was left"


def test_train_resumes_exactly_after_sigkill_at_random_moments(server, train_setup):
    root, setup_seconds, loop_seconds = train_setup
    reference = root / "ref"
    assert summary(reference)["resumed_from_step"] is None
    rng = random.Random(20261201)
    tally = Tally()
    for i in range(7):
        name = f"kill{i}"
        args = ["train", "train.yaml", "--out", name]
        # One kill in four falls while the command sets up (loading, building the
        # model), the rest while the loop runs, where resume points are written (in
        # the first 70% of the reference's loop time: on a busy machine a run's pace
        # varies, and a kill after the end tests nothing).
        if rng.random() < 0.25:
            where, delay = "setup", rng.uniform(0.0, setup_seconds)
            code = kill_after(server, args, root, root / name, delay, signal.SIGKILL)
        else:
            where, delay = "loop", rng.uniform(0.0, 0.7 * loop_seconds)
            pid = server.start(args, root, root / name)
            wait_for((root / name / "metrics.jsonl").exists)
            time.sleep(delay)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            code = server.wait()
        tally.tried += 1
        if code == 0:  # finished before the kill
            tally.after_finish += 1
            continue
        assert code == -signal.SIGKILL
        step = resume_step(root / name)
        logged = evaluations(root / name) if (root / name / "metrics.jsonl").exists() else []
        if step is not None and any(line[1] > step for line in logged):
            tally.orphan_lines += 1
        check_rerun(server, root, name, step, reference)
        if step is None:
            tally.before_first += 1
        else:
            assert step > 0
            tally.resumed += 1
        tally.notes.append(f"{where}+{delay:.2f}s->{step}")
    print(f"\n{tally.line('train SIGKILL')}; {tally.orphan_lines} left orphan log lines; "
          f"kill moment->resume step: {' '.join(tally.notes)}")  # fmt: skip
    assert tally.resumed >= 1  # the moments are seeded; most land after a resume point


def test_train_drops_log_lines_a_kill_left_past_the_resume_point(server, train_setup, tmp_path):
    root = train_setup[0]
    # Resume points only at the end of epoch 5 (step 215, 43 steps an epoch): a kill
    # after epoch 6's evaluation leaves lines in metrics.jsonl past the resume point.
    args = ["train", "train.yaml", "--out", "orphans", "--set", "train.checkpoint_every=215"]
    pid = server.start(args, root, root / "orphans")
    log = root / "orphans" / "metrics.jsonl"
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 6)
    os.kill(pid, signal.SIGKILL)
    assert server.wait() == -signal.SIGKILL
    step = resume_step(root / "orphans")
    assert step == 215
    assert [line[1] for line in evaluations(root / "orphans")][:6] == [43 * k for k in range(1, 7)]
    code = server.run(args, root, root / "orphans-rerun")
    assert code == 0, (root / "orphans-rerun.err").read_text()
    assert summary(root / "orphans")["resumed_from_step"] == 215
    assert evaluations(root / "orphans") == evaluations(root / "ref")
    assert_same_weights(root / "orphans", root / "ref")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("entry", ["fork", "console-script"])
def test_train_stops_on_a_signal_with_a_resume_point_and_says_how_to_continue(
    server, train_setup, signum, entry
):
    if entry == "console-script" and signum == signal.SIGTERM:
        pytest.skip("one signal through the real entry point is enough (SIGINT)")
    root = train_setup[0]
    name = f"{signal.Signals(signum).name}-{entry}"
    args = ["train", "train.yaml", "--out", name]
    resume = root / name / "resume.pt"
    if entry == "fork":
        pid = server.start(args, root, root / name)
        wait_for(resume.exists)
        os.kill(pid, signum)
        code = server.wait()
    else:
        script = shutil.which("datapruning", path=str(Path(sys.executable).parent))
        assert script is not None
        with (root / f"{name}.err").open("w") as err:
            proc = subprocess.Popen(
                [script, *args], cwd=root, stdout=subprocess.DEVNULL, stderr=err
            )
            wait_for(resume.exists)
            proc.send_signal(signum)
            code = proc.wait(timeout=TIMEOUT)
    assert code == 128 + signum
    step = resume_step(root / name)
    assert step is not None and step > 0
    message = last_error_line(root / name)
    prefix = f"interrupted by {signal.Signals(signum).name}: resume point at step {step} of 344"
    assert message.startswith(prefix), message
    assert f"written to {str(Path(name) / 'resume.pt')!r}" in message
    command = message.split("; to continue, run: ")[1]
    assert shlex.split(command) == ["datapruning", *args]
    assert not (root / name / "summary.json").exists()
    # The printed command finishes the run exactly.
    code = server.run(shlex.split(command)[1:], root, root / f"{name}-rerun")
    assert code == 0
    assert summary(root / name)["resumed_from_step"] == step
    assert_same_weights(root / name, root / "ref")
    assert evaluations(root / name) == evaluations(root / "ref")
    print(
        f"\nkill points: train {signal.Signals(signum).name} ({entry}): 1 tried, 1 resumed exactly"
    )


# --- score -------------------------------------------------------------------------------


def saved_seeds(parts: Path) -> list[int]:
    return sorted(int(p.stem.removeprefix("seed")) for p in parts.glob("*/seed*.npz"))


@pytest.fixture(scope="module")
def score_setup(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    start = time.monotonic()
    code = server.run(["score", *SCORE_ARGS, "--out", "ref.parquet"], root, root / "ref")
    assert code == 0, (root / "ref.err").read_text()
    return root, time.monotonic() - start


def scores_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def check_score_rerun(server, root: Path, name: str, reused: list[int]) -> None:
    out = f"{name}.parquet"
    code = server.run(["score", *SCORE_ARGS, "--out", out], root, root / f"{name}-rerun")
    assert code == 0, (root / f"{name}-rerun.err").read_text()
    scores = Scores.load(root / out)
    assert scores.metadata["reused_seeds"] == reused
    pd.testing.assert_frame_equal(scores_table(root / out), scores_table(root / "ref.parquet"))
    assert not (root / f"{out}.parts").exists()
    if reused:
        stdout = (root / f"{name}-rerun.out").read_text()
        assert f"{len(reused)} finished seeds reused" in stdout


def test_score_resumes_exactly_after_sigkill_at_random_moments(server, score_setup):
    root, reference_seconds = score_setup
    rng = random.Random(1201)
    tally = Tally()
    for i in range(5):
        name = f"kill{i}"
        delay = rng.uniform(0.0, reference_seconds)
        args = ["score", *SCORE_ARGS, "--out", f"{name}.parquet"]
        code = kill_after(server, args, root, root / name, delay, signal.SIGKILL)
        tally.tried += 1
        if code == 0:
            tally.after_finish += 1
            continue
        assert code == -signal.SIGKILL
        seeds = saved_seeds(root / f"{name}.parquet.parts")
        check_score_rerun(server, root, name, seeds)
        if seeds:
            tally.resumed += 1
        else:
            tally.before_first += 1
        tally.notes.append(f"{delay:.2f}s->{len(seeds)} seeds")
    print(f"\n{tally.line('score SIGKILL')}; kill moment->seeds saved: {' '.join(tally.notes)}")
    assert tally.resumed >= 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_score_stops_on_a_signal_and_says_how_to_continue(server, score_setup, signum):
    root, _ = score_setup
    name = f"{signal.Signals(signum).name}"
    out = f"{name}.parquet"
    args = ["score", *SCORE_ARGS, "--out", out]
    parts = root / f"{out}.parts"
    pid = server.start(args, root, root / name)
    wait_for(lambda: len(saved_seeds(parts)) >= 2)
    os.kill(pid, signum)
    assert server.wait() == 128 + signum
    seeds = saved_seeds(parts)
    assert 2 <= len(seeds) < 6
    message = last_error_line(root / name)
    assert message.startswith(
        f"interrupted by {signal.Signals(signum).name}: {len(seeds)} of 6 seeds saved in "
        f"{str(Path(out + '.parts'))!r}; to continue, run: "
    ), message
    command = message.split("; to continue, run: ")[1]
    assert shlex.split(command) == ["datapruning", *args]
    assert not (root / out).exists()
    check_score_rerun(server, root, name, seeds)
    print(f"\nkill points: score {signal.Signals(signum).name}: 1 tried, 1 resumed exactly")
