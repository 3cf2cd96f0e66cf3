"""Registering the flows' deployments (prefect.yaml) with a Prefect server.

``prefect deploy`` does the work; this module checks the request first (the
file, the deployment names, the work pool) so a mistake is a one-line error
before anything is registered, and sets the workers' working directory to the
checkout that holds the file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from datapruning.errors import DataPruningError


def load_deployments(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except OSError:
        raise DataPruningError(f"deployments file {str(path)!r} not found") from None
    except yaml.YAMLError:
        raise DataPruningError(f"deployments file {str(path)!r} is not valid YAML") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("deployments"), list):
        raise DataPruningError(f"{str(path)!r} has no deployments list; is it a prefect.yaml?")
    return spec


def deployment_names(spec: dict[str, Any]) -> list[str]:
    return [str(d.get("name")) for d in spec["deployments"] if isinstance(d, dict)]


def deploy_command(
    path: str | os.PathLike[str],
    names: list[str],
    *,
    pool: str | None = None,
    cron: str | None = None,
    spec: dict[str, Any] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The ``prefect deploy`` command line and its environment; checks the work pools exist."""
    path = Path(path).resolve()
    spec = spec or load_deployments(path)
    pools = {pool} if pool else {_pool_of(spec, name) for name in names}
    check_pools(sorted(pools))
    command = [
        sys.executable,
        "-m",
        "prefect",
        "--no-prompt",
        "deploy",
        "--prefect-file",
        str(path),
    ]
    for name in names:
        command += ["--name", name]
    if pool:
        command += ["--pool", pool]
    if cron:
        command += ["--cron", cron]
    env = os.environ | {"DATAPRUNING_ROOT": str(path.parent)}
    return command, env


def _pool_of(spec: dict[str, Any], name: str) -> str:
    for deployment in spec["deployments"]:
        if isinstance(deployment, dict) and deployment.get("name") == name:
            pool = (deployment.get("work_pool") or {}).get("name")
            if pool:
                return str(pool)
    raise DataPruningError(f"deployment {name!r} names no work pool; give --pool")


def check_pools(pools: list[str]) -> None:
    """Every work pool must exist on the server (PREFECT_API_URL)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for pool in pools:
            try:
                client.read_work_pool(pool)
            except ObjectNotFound:
                raise DataPruningError(
                    f"work pool {pool!r} not found on the Prefect server; create it with "
                    f"`prefect work-pool create {pool} --type process`"
                ) from None
