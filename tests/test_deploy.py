"""Deployments: prefect.yaml, `datapruning deploy`, and one run served by a real worker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from cli_helper import assert_one_line_error, run_cli

from datapruning.deploy import deployment_names, load_deployments

ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = ROOT / "prefect.yaml"


def test_prefect_yaml_declares_the_four_flows_on_a_process_pool():
    spec = load_deployments(PREFECT_YAML)
    assert deployment_names(spec) == ["pipeline", "sweep", "score", "train"]
    for deployment in spec["deployments"]:
        path, _, name = deployment["entrypoint"].partition(":")
        assert (ROOT / path).is_file()
        assert f"def {name}(" in (ROOT / path).read_text()
        assert deployment["work_pool"]["name"] == "datapruning"
        assert "config" in deployment["parameters"]
        assert (ROOT / deployment["parameters"]["config"]).is_file()


def test_deploy_refuses_an_unknown_deployment_name(capsys):
    code, _, err = run_cli(capsys, "deploy", "nightly", "--file", PREFECT_YAML)
    assert_one_line_error(
        code, err, "no deployment named 'nightly'", "pipeline, sweep, score, train"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"prefect server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError("prefect server did not become healthy")


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


CRON = "0 3 1 1 *"


def _cron_of(api: str, name: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(name)
    return [s.schedule.cron for s in deployment.schedules]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_worker_runs_the_pipeline_deployment_on_a_real_server(tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = os.environ | {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        # The worker asks for runs every second instead of every 10 s.
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "served",
                "output_dir": str(tmp_path / "runs"),
                "dataset": {"name": "mnist1d", "params": {"num_samples": 300}},
                "model": {"name": "convnet1d", "params": {"channels": 8}},
                "train": {"epochs": 1, "batch_size": 50, "targets": [0.2]},
                "scoring": {"metric": "el2n", "seeds": 1, "epochs": 1},
                "students": {"fractions": [0.5], "strategies": ["hard"], "kd": [False]},
            }
        )
    )
    py = sys.executable

    def call(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [py, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )

    server = worker = None
    try:
        server = subprocess.Popen(
            [py, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_healthy(api, server)
        done = call("-m", "prefect", "work-pool", "create", "e2e", "--type", "process")
        assert done.returncode == 0, done.stdout + done.stderr
        # A schedule far from now (1 January, 03:00) that no worker picks up meanwhile.
        done = call("-m", "datapruning.cli", "deploy", "pipeline", "--pool", "e2e", "--cron", CRON)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "registered 1 deployments: pipeline" in done.stdout
        from prefect.settings import PREFECT_API_URL, temporary_settings

        # This process talks to the server through settings only: environment variables
        # set here would outlive the test in Prefect's settings.
        with temporary_settings({PREFECT_API_URL: api}):
            assert _cron_of(api, "datapruning-pipeline/pipeline") == [CRON]
            worker = subprocess.Popen(
                [py, "-m", "prefect", "worker", "start", "--pool", "e2e", "--limit", "1"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            from prefect.deployments import run_deployment

            flow_run = run_deployment(
                "datapruning-pipeline/pipeline",
                parameters={"config": str(config)},
                timeout=420,
                poll_interval=1,
                as_subflow=False,
            )
        assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
        report = tmp_path / "runs" / "served" / "report.md"
        assert report.is_file()
        assert "| el2n-hard | 50% | no | 1 |" in report.read_text()
        summary = json.loads(
            (tmp_path / "runs" / "served" / "full-s0" / "summary.json").read_text()
        )
        assert summary["pid"] != os.getpid()
    finally:
        _stop(worker)
        _stop(server)
