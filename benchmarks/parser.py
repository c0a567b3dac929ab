"""Gunicorn's C request parser (gunicorn_h1c, ``gunicorn[fast]``) against its pure-Python one,
on the requests that still reach gunicorn's parser: the first request of every connection
(``Connection: close``), and a model too slow to be answered in the event loop (the example),
plus the tiny model on kept-alive connections (answered in the loop, which reads plain requests
itself) as the control. Both servers are this tree at its default flags; only gunicorn's
``http_parser`` setting differs. Interleaved wrk rounds, medians.

    .venv/bin/python -m benchmarks.parser [--rounds 5] [--seconds 3] [--connections 8] [--wrk-threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.load import comparison_cells, interleaved_rounds, serve_targets
from benchmarks.workloads import build
from tests.integration.server import free_port, running

# Starts the CLI with gunicorn's http_parser default set first ("python" or "fast").
_LAUNCH = (
    "import sys, gunicorn.config; gunicorn.config.HttpParser.default = {parser!r}\n"
    "from torch_serving.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
_PARSERS = ("python", "fast")
# (workload, whether every request opens a connection of its own)
_CASES = (("tiny", True), ("example", False), ("tiny", False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--wrk-threads", type=int, default=2, help="2 on 2 cores: the client competes for the CPU")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("gunicorn_h1c") is None:
        print("gunicorn_h1c is not installed: pip install 'gunicorn[fast]'", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        scratch = Path(tmp)
        root = scratch / "models"
        workloads = {w.name: w for w in build(root)}
        servers = {}
        for name in _PARSERS:
            port = free_port()
            command = [
                sys.executable,
                "-c",
                _LAUNCH.format(parser=name),
                "--port",
                str(port),
                "--model-root",
                str(root),
            ]
            servers[name] = stack.enter_context(running(command, port, scratch / f"{name}.log"))
        print(f"\n{args.rounds} rounds x {args.seconds}s, wrk -t{args.wrk_threads} -c{args.connections}; medians")
        print(
            "| workload | connections | fast req/s | python req/s | ratio | fast CPU ms | python CPU ms"
            " | CPU ratio (python/fast) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for workload_name, closing in _CASES:
            workload = workloads[workload_name]
            targets = serve_targets(servers, workload, scratch)
            if closing:
                for target in targets.values():
                    with open(target.script, "a") as script:
                        script.write('wrk.headers["Connection"] = "close"\n')
            series = interleaved_rounds(targets, args.rounds, args.seconds, args.connections, args.wrk_threads)
            connections = "one per request" if closing else "kept alive"
            print(f"| {workload_name} | {connections} {comparison_cells(series, 'fast', 'python')}", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
