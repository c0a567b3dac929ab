"""What a change costs: this tree's server against another revision's, in
the same interleaved wrk rounds (rates and CPU per request).

The other revision is checked out into a scratch git worktree and its
extension built there against the same venv; both servers run with the
same settings and the same models.

    .venv/bin/python -m benchmarks.revisions --against REV [--workloads tiny] [--rounds 5] [--wrk-threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.load import comparison_cells, interleaved_rounds, serve_targets
from benchmarks.workloads import build
from tests.integration.server import cli_command, free_port, running
from tests.models import REPO


@contextlib.contextmanager
def built_revision(revision: str, scratch: Path):
    """Check out ``revision`` beside this tree and build its extension in place; yield its folder."""
    tree = scratch / "revision"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), revision], check=True)
    try:
        build = [sys.executable, "setup.py", "-q", "build_ext", "--inplace"]
        subprocess.run(build, cwd=tree, check=True, stdout=subprocess.DEVNULL)
        yield tree
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the revision to compare with, e.g. HEAD~1")
    parser.add_argument("--workloads", default="tiny")
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--wrk-threads", type=int, default=2, help="2 on 2 cores: the client competes for the CPU")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        scratch = Path(tmp)
        other = stack.enter_context(built_revision(args.against, scratch))
        root = scratch / "models"
        workloads = [w for w in build(root) if w.name in args.workloads.split(",")]
        servers = {}
        for name, tree in [("this tree", REPO), (args.against, other)]:
            port = free_port()
            command = cli_command(port, "--model-root", str(root))  # each revision's defaults, access lines on
            env = {"PYTHONPATH": str(tree)}
            servers[name] = stack.enter_context(running(command, port, scratch / f"{port}.log", env=env, cwd=tree))
        print(f"\n{args.rounds} rounds x {args.seconds}s, wrk -t{args.wrk_threads} -c{args.connections}; medians")
        print(
            "| workload | this tree req/s | other req/s | ratio | this tree CPU ms | other CPU ms | CPU ratio (other/this) |"
        )
        print("|---|---|---|---|---|---|---|")
        for workload in workloads:
            targets = serve_targets(servers, workload, scratch)
            series = interleaved_rounds(targets, args.rounds, args.seconds, args.connections, args.wrk_threads)
            print(f"| {workload.name} {comparison_cells(series, 'this tree', args.against)}", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
