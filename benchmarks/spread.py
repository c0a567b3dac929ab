"""How gunicorn spreads keep-alive connections over our workers.

Starts torch-serving at its defaults on loopback, keeps its workers busy with the example model
(wrk with ``--load-connections``, in the background; 0 for idle workers), then opens ``--connections`` keep-alive connections at
once and asks each which worker holds it (``GET /cache`` answers its pid). Prints the connections
per worker in each of ``--trials`` trials: the most one worker got is what its ``--threads`` +
``--queue-size`` must hold for those clients never to be refused. The workers spread connections by
all those they hold (``torch_serving.connection_table``), the load's too, which these counts leave out.

Usage: python -m benchmarks.spread [--connections 32] [--trials 5] [--load-connections 4]
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.load import wrk_script
from tests.integration.server import cli_command, free_port, running
from tests.integration.test_preload import cache_of_every_worker
from tests.models import REPO, example_model_class


def worker_of_new_connection(port: int) -> tuple[http.client.HTTPConnection, int]:
    """Open a connection, ask it which worker holds it, and keep it open until the trial ends."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/cache")
    return connection, json.loads(connection.getresponse().read())["pid"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--load-connections", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        example_model_class().main(str(root / "model-example.pt"))
        port = free_port()
        with running(cli_command(port, "--model-root", str(root)), port, root / "server.log") as server:
            cache_of_every_worker(server)  # the health check tells only that one worker is up
            script = wrk_script(root, "example", (REPO / "example" / "post-data.json").read_bytes())
            url = f"{server.url}/serve?servable_identifier=model-example.pt"
            seconds = 5 + 2 * args.trials
            command = ["wrk", "-t1", f"-c{args.load_connections}", f"-d{seconds}s", "-s", str(script), url]
            load = subprocess.Popen(command, stdout=subprocess.DEVNULL) if args.load_connections else None
            try:
                for trial in range(args.trials):
                    with ThreadPoolExecutor(args.connections) as pool:
                        opened = list(pool.map(lambda _: worker_of_new_connection(port), range(args.connections)))
                    per_worker = collections.Counter(pid for _, pid in opened)
                    for connection, _ in opened:
                        connection.close()
                    counts = sorted(per_worker.values(), reverse=True)
                    print(f"trial {trial + 1}: {args.connections} connections per worker {counts}, most {counts[0]}")
            finally:
                if load:
                    load.terminate()
                    load.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
