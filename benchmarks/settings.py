"""Settings benchmark: torch-serving under several worker/thread settings, same run.

The defaults (workers, request threads, torch threads) are chosen with this:
it starts one torch-serving per setting on loopback, drives each with the
load benchmark's workloads and wrk rounds, interleaved so drift hits all
settings alike, and prints per setting the median requests/s, the CPU time
per request and the summed peak RSS after the run.

Usage: python -m benchmarks.settings [--settings 2x4x1,1x8x2] [--seconds 3] [--rounds 3] [--wrk-threads 2]
    (each setting is WORKERSxTHREADSxTORCH_THREADS, optionally followed by
    ``/metrics-off``, ``/access-off`` or ``/instances-N``; ``--settings
    2x4x1,2x4x1/metrics-off --workloads tiny`` measures what metrics cost)
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from pathlib import Path

from benchmarks.load import Round, interleaved_rounds, peak_rss_mib, serve_targets
from benchmarks.workloads import build
from tests.integration.server import cli_command, free_port, running

_DEFAULT_SETTINGS = "2x4x1,2x2x1,2x8x1,1x4x1,1x8x2,2x4x2"


def _flag_options(flag: str) -> tuple[str, ...]:
    """The options a setting's ``/flag`` stands for."""
    if flag == "metrics-off":
        return ("--metrics", "off")
    if flag == "access-off":
        return ("--log-level", "warning")  # access lines are INFO records
    if flag.startswith("instances-"):
        return ("--instances", flag.removeprefix("instances-"))
    if flag:
        raise SystemExit(f"unknown setting flag {flag!r}: metrics-off, access-off or instances-N")
    return ()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=_DEFAULT_SETTINGS, help="WORKERSxTHREADSxTORCH_THREADS, comma-separated")
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workloads", default="tiny,example,image,echo")
    parser.add_argument("--wrk-threads", type=int, default=1)
    args = parser.parse_args(argv)
    settings = args.settings.split(",")

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        tmp_path = Path(tmp)
        root = tmp_path / "models"
        workloads = [w for w in build(root) if w.name in args.workloads.split(",")]
        servers = {}
        for setting in settings:
            shape, _, flag = setting.partition("/")
            workers, threads, torch_threads = shape.split("x")
            port = free_port()
            command = cli_command(
                port,
                *("--model-root", str(root), "--log-level", "warning"),
                *("--workers", workers, "--threads", threads, "--torch-threads", torch_threads),
                *_flag_options(flag),
            )
            log = tmp_path / f"{setting.replace('/', '-')}.log"
            servers[setting] = stack.enter_context(running(command, port, log))
        rounds: dict[tuple[str, str], list[Round]] = {}
        for workload in workloads:
            targets = serve_targets(servers, workload, tmp_path)
            series = interleaved_rounds(targets, args.rounds, args.seconds, args.connections, args.wrk_threads)
            rounds.update({(workload.name, setting): results for setting, results in series.items()})
        rss = {setting: peak_rss_mib(server.process.pid) for setting, server in servers.items()}

    print(
        f"\nsettings benchmark: {args.rounds} rounds x {args.seconds}s, wrk -t{args.wrk_threads} -c{args.connections}"
    )
    print("setting = workers x request threads x torch threads; requests/s (CPU ms per request), medians")
    width = max(10, *(len(s) + 2 for s in settings))
    print(f"{'setting':<{width}}" + "".join(f"{w.name:>20}" for w in workloads) + f"{'peak RSS MiB':>14}")
    for setting in settings:
        cells = []
        for w in workloads:
            results = rounds[(w.name, setting)]
            rate = statistics.median(r.rate for r in results)
            cpu = statistics.median(r.cpu_ms_per_request for r in results)
            cells.append(f"{rate:>10.0f} ({cpu:>6.3f})")
        print(f"{setting:<{width}}" + "".join(f"{c:>20}" for c in cells) + f"{rss[setting]:>14.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
