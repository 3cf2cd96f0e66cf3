"""A real ``prefect server start`` on 127.0.0.1 for the whole test session.

Every test that needs a Prefect API shares it (the ``prefect_server`` fixture),
including the end-to-end deployment test, which also needs a server started the
way users start one: one server start-up per session instead of two (Prefect's
test harness and a CLI server took 27 s and 17 s to start at stop 11).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(api: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"prefect server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("prefect server did not become healthy")


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


_early: tuple[subprocess.Popen, str] | None = None


def start_early() -> None:
    """Start the server now, without waiting for it: it takes 27-30 s to start here (most
    of it a fresh database), which the session's first tests then overlap."""
    global _early
    if _early is None:
        _early = _start()
        # Deselected (-k) after collection, no test may ask for it: it still stops.
        atexit.register(stop, _early[0])


def _start() -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        [sys.executable, "-m", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return server, f"http://127.0.0.1:{port}/api"


@contextmanager
def prefect_server() -> Iterator[str]:
    """The server (its database in this session's PREFECT_HOME; started here unless
    :func:`start_early` did), Prefect pointed at it as ``prefect_test_harness`` does; yields
    its API URL."""
    import prefect.context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    global _early
    server, api = _early or _start()
    _early = None
    try:
        wait_healthy(api, server)
        with ExitStack() as stack:
            stack.enter_context(temporary_settings({PREFECT_API_URL: api}))
            # Code running in a context copied before this point sees the server too.
            stack.enter_context(
                prefect.context._temporary_global_settings_context(
                    prefect.context.get_settings_context()
                )
            )
            yield api
            # Logs and events reach the server before it stops.
            APILogWorker.drain_all(timeout=10)
            EventsWorker.drain_all(timeout=10)
    finally:
        stop(server)
