"""Start and stop real torch-serving processes on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.models import REPO

STARTUP_TIMEOUT_S = 60


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and all its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    tree, stack = [], [pid]
    while stack:
        current = stack.pop()
        tree.append(current)
        stack.extend(children.get(current, []))
    return tree


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` (IPv4 or IPv6) that nothing listens on right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    """A server process and where to reach it."""

    process: subprocess.Popen
    port: int
    log_path: Path
    host: str = "127.0.0.1"

    def workers(self) -> list[int]:
        """Return the pids of the gunicorn workers (the master's children)."""
        return [pid for pid in process_tree(self.process.pid) if pid != self.process.pid]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout_s: float = 10.0) -> bool:
        """Return whether ``text`` shows up in the log within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


def _wait_until_healthy(server: RunningServer, health_path: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        with contextlib.suppress(requests.ConnectionError, requests.Timeout):
            if requests.get(server.url + health_path, timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server did not become healthy in {STARTUP_TIMEOUT_S}s:\n{server.log()}")


@contextlib.contextmanager
def running(
    command: Sequence[str],
    port: int,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
    host: str = "127.0.0.1",
    health_path: str = "/healthcheck",
) -> Iterator[RunningServer]:
    """Run ``command`` until the block ends; it must answer 200 to ``health_path`` on ``host``:``port``."""
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=cwd, start_new_session=True
        )
    server = RunningServer(process, port, log_path, host)
    try:
        _wait_until_healthy(server, health_path)
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def cli_command(port: int, *options: str) -> list[str]:
    """Return the torch-serving command line for ``port`` plus ``options``."""
    return [sys.executable, "-m", "torch_serving", "--port", str(port), *options]


@contextlib.contextmanager
def serving(tmp_path_factory, name: str, *options: str, env: dict[str, str] | None = None) -> Iterator[RunningServer]:
    """Run torch-serving with ``options`` (and ``env`` added to the environment) on a free port,
    its log in a fresh folder named after ``name``."""
    port = free_port()
    log = tmp_path_factory.mktemp(f"{name}-logs") / "server.log"
    with running(cli_command(port, *options), port, log, env) as server:
        yield server


def assert_busy(response, held: int) -> None:
    """Assert that ``response`` is a worker's 503 for holding ``held`` requests, its limit."""
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json() == {
        "code": 503,
        "message": "Server Error",
        "description": "Server busy",
        "detail": f"this worker holds {held} requests, its limit (--threads + --queue-size); retry later",
    }
