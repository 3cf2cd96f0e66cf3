"""End to end: `datapruning run` on a tiny MNIST-1D config through the Prefect flow."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from runs_helper import SUMMARY_KEYS

from datapruning.cli import main
from datapruning.train.loop import METRICS_NAME, SUMMARY_NAME

TINY = {
    # Its own name: artifact keys are per experiment name, and other flow tests use "tiny".
    "name": "tiny-pipeline",
    "dataset": {"name": "mnist1d", "params": {"num_samples": 600}},
    "model": {"name": "convnet1d", "params": {"channels": 16}},
    "train": {"epochs": 4, "batch_size": 50, "targets": [0.3]},
    "scoring": {"metric": "el2n", "seeds": 2, "epochs": 2},
    "students": {
        "fractions": [0.5],
        "strategies": ["random", "hard", "rs2"],
        "kd": [False, True],
        "seeds": [0],
    },
}


@pytest.mark.slow
def test_run_writes_runs_scores_report_and_artifact(tmp_path, prefect_server, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY | {"output_dir": str(tmp_path / "runs")}))

    assert main(["run", str(config)]) == 0

    root = tmp_path / "runs" / "tiny-pipeline"
    expected_runs = {
        "full-s0",
        "random-f0.5-s0",
        "random-f0.5-kd-s0",
        "el2n-hard-f0.5-s0",
        "el2n-hard-f0.5-kd-s0",
        "rs2-f0.5-s0",
        "rs2-f0.5-kd-s0",
    }
    assert {p.parent.name for p in root.rglob(SUMMARY_NAME)} == expected_runs
    for name in expected_runs:
        summary = json.loads((root / name / SUMMARY_NAME).read_text())
        assert set(summary) >= SUMMARY_KEYS
        lines = (root / name / METRICS_NAME).read_text().splitlines()
        assert len(lines) == TINY["train"]["epochs"]  # one evaluation per epoch
        assert summary["final_test_acc"] == json.loads(lines[-1])["test_acc"]
        assert (summary["kd"] is not None) == name.endswith("kd-s0")

    scores = pd.read_parquet(root / "scores" / "el2n.parquet")
    assert len(scores) == 480  # 80% of 600
    hard = np.load(root / "el2n-hard-f0.5-s0" / "indices.npy")
    top = scores.sort_values("score", ascending=False, kind="stable")["index"].to_numpy()[:240]
    assert sorted(hard.tolist()) == sorted(top.tolist())
    assert (
        json.loads((root / "el2n-hard-f0.5-s0" / SUMMARY_NAME).read_text())["kept_fraction"] == 0.5
    )

    # RS2 trains on a fresh half every epoch: half the steps, no fixed subset.
    rs2 = json.loads((root / "rs2-f0.5-s0" / SUMMARY_NAME).read_text())
    full = json.loads((root / "full-s0" / SUMMARY_NAME).read_text())
    assert rs2["data_mode"] == "rs2" and rs2["kept_fraction"] == 0.5
    assert rs2["steps"] * 2 == full["steps"]
    assert not (root / "rs2-f0.5-s0" / "indices.npy").exists()

    report = (root / "report.md").read_text()
    assert "| full | 100% | no |" in report
    for recipe in ("el2n-hard", "random", "rs2"):
        assert report.count(f"| {recipe} | 50% |") == 2
    assert (root / "tta.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report in capsys.readouterr().out

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["tta-report-tiny-pipeline"]))
        )
    assert artifacts and artifacts[0].data == report
