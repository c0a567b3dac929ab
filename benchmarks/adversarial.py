"""Time each hostile body of tests/adversarial.py at the body limit against
a real server: every one must cost seconds, not the hours a quadratic
check would take at 64 MiB.

    .venv/bin/python -m benchmarks.adversarial [size in MiB, default 64]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import requests

from tests.adversarial import ADVERSARIES
from tests.integration.server import cli_command, free_port, running
from tests.models import build_model_root


def main(size_mib: int = 64) -> None:
    limit = size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory() as scratch:
        root = build_model_root(Path(scratch) / "models")
        port = free_port()
        options = ["--model-root", str(root), "--workers", "1", "--timeout", "600", "--log-level", "warning"]
        options += ["--max-body-size", str(limit)]
        with running(cli_command(port, *options), port, Path(scratch) / "server.log") as server:
            print(f"| hostile body ({size_mib} MiB) | status | seconds |")
            print("|---|---|---|")
            for adversary in ADVERSARIES:
                body = adversary.build(limit)
                started = time.perf_counter()
                response = requests.post(server.url + adversary.path, data=body, timeout=600)
                elapsed = time.perf_counter() - started
                print(f"| {adversary.name} | {response.status_code} | {elapsed:.2f} |", flush=True)


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
