"""Latency at a fixed request rate below saturation: p50 and p99, ours and naive.

Open loop: each of ``--connections`` keep-alive connections sends its share
of ``--rate`` on a fixed schedule, and a request's latency counts from when
it was due, so a server that falls behind is charged for the wait
(no coordinated omission). Loopback only, bounded in time.

Run: .venv/bin/python -m benchmarks.latency [--seconds 5] [--workloads tiny:1000,example:150,example-batched:150]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.load import DEFAULTS, gunicorn_command
from benchmarks.workloads import build
from tests.integration.server import cli_command, free_port, running


def drive(port: int, path: str, body: bytes, rate: float, seconds: float, connections: int) -> list[float]:
    """Send ``rate`` requests/s for ``seconds``; return each request's latency in ms, from when it was due."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = time.monotonic() + 0.2
    interval = connections / rate

    def client(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        due = start + offset * interval / connections
        while due < start + seconds:
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                failures.append(f"{response.status} from {path}")
            mine.append((time.monotonic() - due) * 1000)
            due += interval
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workloads", default="tiny:1000,example:150,example-batched:150")
    args = parser.parse_args(argv)
    wanted = dict(item.split(":") for item in args.workloads.split(","))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        workloads = [w for w in build(root) if w.name in wanted]
        env = {"TORCH_SERVING_MODEL_ROOT": str(root), "TORCH_SERVING_TORCH_THREADS": str(DEFAULTS.torch_threads)}
        ports = {"ours": free_port(), "naive": free_port()}
        commands = {
            "ours": cli_command(ports["ours"], "--model-root", str(root), "--log-level", "warning"),
            "naive": gunicorn_command(
                "benchmarks.baselines.naive_server:app", ports["naive"], DEFAULTS.workers, DEFAULTS.threads
            ),
        }
        print(
            f"latency at fixed rates, {args.connections} connections, {args.seconds:g} s each;"
            f" ms from when each request was due"
        )
        print(f"{'workload':<18}{'rate':>6}{'server':>8}{'p50':>9}{'p99':>9}{'max':>9}")
        with (
            running(commands["ours"], ports["ours"], Path(tmp) / "ours.log", env=env),
            running(commands["naive"], ports["naive"], Path(tmp) / "naive.log", env=env),
        ):
            for workload in workloads:
                rate = float(wanted[workload.name])
                for server, port in ports.items():
                    path = f"/serve?servable_identifier={workload.model}"
                    drive(port, path, workload.body, rate, 1.0, args.connections)  # loads, warms
                    latencies = drive(port, path, workload.body, rate, args.seconds, args.connections)
                    print(
                        f"{workload.name:<18}{rate:>6.0f}{server:>8}{statistics.median(latencies):>9.2f}"
                        f"{percentile(latencies, 0.99):>9.2f}{max(latencies):>9.2f}"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
