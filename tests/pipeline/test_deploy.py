"""Deployments: prefect.yaml, `datapruning deploy`, and one run served by a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_helper import assert_one_line_error, run_cli
from server_helper import stop

from datapruning.pipeline.deploy import deployment_names, load_deployments

ROOT = Path(__file__).resolve().parents[2]
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


CRON = "0 3 1 1 *"


def _cron_of(api: str, name: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(name)
    return [s.schedule.cron for s in deployment.schedules]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_worker_runs_the_pipeline_deployment_on_a_real_server(
    tmp_path, prefect_server, capsys, monkeypatch
):
    # prefect_server is a real `prefect server start` on 127.0.0.1 (tests/server_helper.py),
    # shared with the session's other flow tests.
    api = prefect_server
    env = os.environ | {
        "PREFECT_API_URL": api,
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
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments import run_deployment

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="e2e", type="process"))
    # A schedule far from now (1 January, 03:00) that no worker picks up meanwhile. The
    # command runs in this process; the `prefect deploy` it starts finds the server
    # through the environment.
    monkeypatch.setenv("PREFECT_API_URL", api)
    code, out, err = run_cli(capsys, "deploy", "pipeline", "--pool", "e2e", "--cron", CRON)
    assert code == 0, (out, err)
    assert "registered 1 deployments: pipeline" in out
    assert _cron_of(api, "datapruning-pipeline/pipeline") == [CRON]
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "e2e", "--limit", "1"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        flow_run = run_deployment(
            "datapruning-pipeline/pipeline",
            parameters={"config": str(config)},
            timeout=420,
            poll_interval=1,
            as_subflow=False,
        )
    finally:
        stop(worker)
    assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
    report = tmp_path / "runs" / "served" / "report.md"
    assert report.is_file()
    assert "| el2n-hard | 50% | no | 1 |" in report.read_text()
    summary = json.loads((tmp_path / "runs" / "served" / "full-s0" / "summary.json").read_text())
    assert summary["pid"] != os.getpid()
