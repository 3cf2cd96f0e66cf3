"""One run on several processes (datapruning.train.distributed): torchrun, gloo, 2 ranks.

The end-to-end tests start ``datapruning train --nproc 2`` (torchrun in the process
it starts) and compare with a one-process run of the same global batch and order:
the ranks' step-k batches together are the one-process step-k batch, so the weights
agree but for the order of floating-point sums (DDP averages two half-batch
gradients). An MLP keeps that difference at the float32 rounding level after 50
steps; a convnet's first chaotic steps amplify it (bench/ddp.py measures both).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from datapruning.errors import DataPruningError
from datapruning.train import distributed
from datapruning.train.distributed import World, per_rank_batch
from datapruning.train.run import _check_world
from datapruning.train.settings import DynamicsConfig, TrainConfig

CLI = [sys.executable, "-m", "datapruning"]

CONFIG = """\
dataset:
  name: mnist1d
  params: {num_samples: 5000, seed: 42}
model:
  name: mlp
train:
  epochs: 2
  batch_size: 100
  lr: 0.05
  eval_every: 1
  threads: 1
  targets: [0.9]
"""


def test_per_rank_batch_divides_the_global_batch() -> None:
    assert per_rank_batch(100, World(size=2)) == 50
    with pytest.raises(DataPruningError, match=r"train\.batch_size is 100, which 3 processes"):
        per_rank_batch(100, World(size=3))


def test_nproc_without_torchrun_is_refused_in_one_line() -> None:
    with pytest.raises(DataPruningError, match=r"not started by torchrun.*--nproc 2"):
        _check_world(TrainConfig(nproc=2), distributed.SINGLE)
    assert _check_world(TrainConfig(), distributed.SINGLE).nproc == 1


def test_the_world_sets_nproc_and_refuses_what_it_cannot_run() -> None:
    world = World(rank=0, size=2)
    assert _check_world(TrainConfig(), world).nproc == 2  # under torchrun: its count
    with pytest.raises(DataPruningError, match=r"train\.nproc is 4 but torchrun started 2"):
        _check_world(TrainConfig(nproc=4), world)
    recording = TrainConfig(record=DynamicsConfig(forgetting=True))
    with pytest.raises(DataPruningError, match=r"train\.record needs the whole run"):
        _check_world(recording, world)


def test_launched_reads_torchruns_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "x"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    assert not distributed.launched()
    monkeypatch.setenv("MASTER_PORT", "1234")
    assert distributed.launched()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not distributed.launched()


def test_cli_refuses_a_bad_nproc(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CONFIG)
    done = subprocess.run(
        [*CLI, "train", "c.yaml", "--out", "r", "--nproc", "0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: --nproc is 0; give 1 or more processes"]


def _train(cwd: Path, out: str, *args: str, nproc: int = 1) -> subprocess.CompletedProcess[str]:
    command = [*CLI, "train", "c.yaml", "--out", out, *args]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    # Debug mode: the ranks' pruning masks are compared at each update.
    env = {**os.environ, "DATAPRUNING_DEBUG": "1"}
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return done


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=False)["state_dict"]


def _max_difference(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe",
    [
        ["--set", "train.steps=50"],  # plain cross-entropy
        ["--set", "train.steps=50", "--teacher", "teacher"],  # KD from cached logits
        # GMP to 80%: masks updated every 2% of the run from 10% to 50% of it.
        ["--set", "train.steps=50", "--set", "train.sparsity.target=0.8",
         "--set", "train.sparsity.end=0.5"],
        ["--set", "train.data.mode=infobatch"],  # 2 epochs: the second one pruned
    ],
    ids=["ce", "kd", "gmp", "infobatch"],
)  # fmt: skip
def test_two_ranks_train_what_one_process_trains(
    tmp_path: Path, recipe: list[str], teacher_dir: Path
) -> None:
    (tmp_path / "c.yaml").write_text(CONFIG)
    shutil.copytree(teacher_dir, tmp_path / "teacher")
    _train(tmp_path, "one", *recipe)
    done = _train(tmp_path, "two", *recipe, nproc=2)
    assert len(done.stdout.strip().splitlines()) == 1  # rank 0 speaks for the run
    assert _max_difference(tmp_path / "one", tmp_path / "two") < 1e-5
    import json

    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["distributed"] == {"world_size": 2, "backend": "gloo", "per_rank_batch": 50}
    assert one["distributed"]["world_size"] == 1
    # Examples counted over both ranks (selection seconds are each rank's clock).
    for cost in (one["cost"], two["cost"]):
        cost.pop("selection_seconds")
    assert two["cost"] == one["cost"]
    assert two["steps"] == one["steps"]
    assert abs(two["final_test_acc"] - one["final_test_acc"]) <= 0.002  # one test example
    assert two["config"]["train"]["nproc"] == 2


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("teacher")
    (root / "c.yaml").write_text(CONFIG)
    _train(root, "teacher", "--set", "train.steps=50")
    return root / "teacher"


def _rank_pid(rank: int, launcher: int) -> int:
    """The pid of the process torchrun started as ``rank`` under ``launcher``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = next(int(line.split()[1]) for line in status.splitlines() if line[:5] == "PPid:")
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    raise AssertionError(f"no rank {rank} under {launcher}")


def _start_and_wait_for_resume_point(cwd: Path, out: str) -> subprocess.Popen[str]:
    launcher = subprocess.Popen(
        [*CLI, "train", "c.yaml", "--out", out, "--nproc", "2"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (cwd / out / "resume.pt").exists():
        assert launcher.poll() is None, launcher.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # into the training after the first resume point
    return launcher


LONG = CONFIG.replace("epochs: 2", "epochs: 12") + "  checkpoint_every: 20\n"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_kill_of_a_rank_stops_the_other_and_the_rerun_resumes_exactly(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(LONG)
    _train(tmp_path, "whole", nproc=2)
    launcher = _start_and_wait_for_resume_point(tmp_path, "killed")
    os.kill(_rank_pid(1, launcher.pid), signal.SIGKILL)
    start = time.monotonic()
    _, stderr = launcher.communicate(timeout=60)
    assert time.monotonic() - start < 30
    assert launcher.returncode == 1
    # Beside rank 0's progress lines (one per epoch): what happened, from rank 0 and
    # from the launcher, which names the process that died.
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("train epoch")]
    assert lines[-1].startswith("error: process 1 of 2 was killed by SIGKILL"), stderr
    assert all(line.startswith("error: ") for line in lines) and len(lines) <= 2, stderr
    assert (tmp_path / "killed" / "resume.pt").exists()
    done = _train(tmp_path, "killed", nproc=2)
    assert "resumed at step" in done.stdout
    assert _max_difference(tmp_path / "whole", tmp_path / "killed") == 0.0


@pytest.mark.slow
def test_sigterm_to_the_launcher_leaves_a_resume_point(tmp_path: Path) -> None:
    # Far longer than the test waits, so a run that lost the signal cannot pass by ending
    # (CI once saw a 12-epoch run finish after the SIGTERM: see the agreement test below).
    (tmp_path / "c.yaml").write_text(LONG.replace("epochs: 12", "epochs: 500"))
    launcher = _start_and_wait_for_resume_point(tmp_path, "stopped")
    launcher.send_signal(signal.SIGTERM)
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode == 143, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted by SIGTERM: resume point at"), stderr
    assert not (tmp_path / "stopped" / "summary.json").exists()
    state = torch.load(tmp_path / "stopped" / "resume.pt", weights_only=True)
    assert len(state["ranks"]) == 2  # each rank's own generators, sampler and partial loss


def test_debug_mode_refuses_masks_that_differ_between_ranks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from datapruning.train.algorithms.pruning import Pruning

    class Disagreeing:
        size = 2

        def reduce(self, values: list[float], op: str = "sum") -> list[float]:
            return [v + (1 if op == "max" else 0) for v in values]  # rank 1 kept one more

    monkeypatch.setattr(distributed, "current", lambda: Disagreeing())
    pruner = SimpleNamespace(masks={"w": torch.tensor([True, False, True])})
    with pytest.raises(
        DataPruningError, match=r"masks differ between the 2 processes after step 7"
    ):
        Pruning(pruner)._check_ranks_agree(7)  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_pipeline_cell_with_nproc_trains_on_that_many_processes(tmp_path: Path) -> None:
    """A cell (here the one-run cell) hands a train.nproc > 1 run to torchrun and reads
    back its summary; a failure there is one line naming the run."""
    from datapruning.config import PipelineConfig
    from datapruning.pipeline.train_cells import run_single

    def config(nproc: int, batch_size: int = 100) -> PipelineConfig:
        return PipelineConfig.model_validate(
            {
                "dataset": {"name": "mnist1d", "params": {"num_samples": 5000, "seed": 42}},
                "model": {"name": "mlp"},
                "train": {"steps": 20, "batch_size": batch_size, "nproc": nproc},
            }
        )

    one = run_single(config(1), tmp_path / "one")
    two = run_single(config(2), tmp_path / "two")
    assert two["status"] == "trained" and not (tmp_path / "two" / "job.pkl").exists()
    assert abs(two["final_test_acc"] - one["final_test_acc"]) <= 0.002
    assert _max_difference(tmp_path / "one", tmp_path / "two") < 1e-5
    import json

    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["distributed"]["world_size"] == 2
    assert run_single(config(2), tmp_path / "two")["status"] == "reused"
    with pytest.raises(DataPruningError, match=r"on 2 processes failed: train\.batch_size is 99"):
        run_single(config(2, batch_size=99), tmp_path / "odd")


def _after_join(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rank: int, then: str) -> None:
    """Make the processes torchrun starts run the statement ``then`` on ``rank`` once
    they have joined the group (a sitecustomize on PYTHONPATH wraps distributed.join):
    the other rank cannot fail before both have joined."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(
        "import os, time\n"
        f"if os.environ.get('RANK') == '{rank}' and 'TORCHELASTIC_RUN_ID' in os.environ:\n"
        "    from datapruning.train import distributed\n"
        "    join = distributed.join\n"
        "    def joined(device):\n"
        "        world = join(device)\n"
        f"        {then}\n"
        "        return world\n"
        "    distributed.join = joined\n"
    )
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", path)


@pytest.mark.slow
def test_the_first_process_to_fail_says_why_though_rank_0_was_stopped_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchrun stops the other processes as soon as one exits, so rank 0 may be stopped
    before it gets as far as the error: the launcher prints the line the failed process
    left (CLI) or puts it in the cell's error. Rank 0 is held once the processes have
    joined (a sitecustomize they import): the race a loaded machine loses at random."""
    from datapruning.config import PipelineConfig
    from datapruning.pipeline.train_cells import run_single

    _after_join(tmp_path, monkeypatch, rank=0, then="time.sleep(300)")
    (tmp_path / "c.yaml").write_text(CONFIG)
    said = "train.batch_size is 99, which 2 processes cannot share evenly"
    done = subprocess.run(
        [*CLI, "train", "c.yaml", "--out", "odd", "--nproc", "2", "--set", "train.batch_size=99"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {said}"), done.stderr
    cell = PipelineConfig.model_validate(
        {
            "dataset": {"name": "mnist1d", "params": {"num_samples": 5000, "seed": 42}},
            "model": {"name": "mlp"},
            "train": {"steps": 20, "batch_size": 99, "nproc": 2},
        }
    )
    with pytest.raises(DataPruningError, match=f"on 2 processes failed: {said}"):
        run_single(cell, tmp_path / "cell")


@pytest.mark.slow
def test_a_bug_in_one_process_is_one_line_naming_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error in a process (here rank 1 raises once it has joined) is one
    line naming the log with its traceback, from `--nproc` and in a cell's error, not
    the other processes' consequences or the bare exit status."""
    from datapruning.config import PipelineConfig
    from datapruning.pipeline.train_cells import run_single

    _after_join(tmp_path, monkeypatch, rank=1, then="raise RuntimeError('boom on rank 1')")
    monkeypatch.setenv("DATAPRUNING_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "c.yaml").write_text(CONFIG)
    done = subprocess.run(
        [*CLI, "train", "c.yaml", "--out", "broken", "--nproc", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    said = "error: unexpected RuntimeError in `datapruning train`: boom on rank 1 (full trace"
    assert len(lines) == 1 and lines[0].startswith(said), done.stderr
    cell = PipelineConfig.model_validate(
        {
            "dataset": {"name": "mnist1d", "params": {"num_samples": 5000, "seed": 42}},
            "model": {"name": "mlp"},
            "train": {"steps": 20, "batch_size": 100, "nproc": 2},
        }
    )
    with pytest.raises(DataPruningError) as failed:
        run_single(cell, tmp_path / "cell")
    message = str(failed.value)
    assert "on 2 processes failed: unexpected RuntimeError in `a run's process`: boom" in message
    logs = list((tmp_path / "cache" / "logs").glob("crash-*.log"))
    assert len(logs) == 2 and all(str(log) in done.stderr + message for log in logs)
    assert all("RuntimeError: boom on rank 1" in log.read_text() for log in logs)


@pytest.mark.slow
def test_batchnorm_models_train_on_two_processes_and_sync_bn_needs_cuda(tmp_path: Path) -> None:
    """Without train.sync_bn each process normalises by its own half-batch's statistics
    (close to, not equal to, one process); torch's SyncBatchNorm runs only on GPUs, so on
    a CPU the setting is refused in one line before anything is written."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.arange(240) % 4
    x = (rng.normal(size=(240, 3, 16, 16)) + y[:, None, None, None]).astype(np.float32)
    np.savez(tmp_path / "images.npz", x=x[:200], y=y[:200], x_test=x[200:], y_test=y[200:])
    (tmp_path / "c.yaml").write_text(
        "dataset: {name: npz, params: {path: images.npz}}\n"
        "model: {name: resnet18, params: {width: 4}}\n"
        "train: {steps: 10, batch_size: 40, threads: 1, targets: [0.9]}\n"
    )
    _train(tmp_path, "one")
    _train(tmp_path, "apart", nproc=2)
    # Not the one-process run: the running statistics are rank 0's half-batch ones.
    assert _max_difference(tmp_path / "one", tmp_path / "apart") > 1e-6
    done = subprocess.run(
        [*CLI, "train", "c.yaml", "--out", "synced", "--nproc", "2", "--set", "train.sync_bn=true"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: train.sync_bn needs CUDA (torch's SyncBatchNorm runs on GPUs only); set "
        "train.sync_bn=false on this device: each process then normalises by its share"
    ]
    assert not (tmp_path / "synced").exists()


def test_a_signal_that_lands_while_the_ranks_agree_is_kept_for_the_next_step() -> None:
    """Found under load (the SIGTERM test above, 1 run in 3 with both cores busy): a rank
    waiting in the all-reduce runs the signal's handler as the call returns; writing the
    agreed value back over the request erased the signal and the run never stopped."""
    from types import SimpleNamespace

    from datapruning._interrupt import StopRequest
    from datapruning.train.loop import _Loop

    stop = StopRequest()

    class SignalDuringReduce:
        distributed = True

        def reduce(self, values: list[float], op: str = "sum") -> list[float]:
            if stop.signum is None:
                stop.signum = signal.SIGTERM  # the handler, run as the collective returns
            return values  # the other rank had seen nothing either

    loop = SimpleNamespace(world=SignalDuringReduce())
    assert _Loop.agree(loop, stop) is None  # this boundary: nobody had it when they agreed
    assert _Loop.agree(loop, stop) == signal.SIGTERM  # the next: every rank stops
