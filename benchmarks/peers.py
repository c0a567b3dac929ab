"""Peer benchmark: the original's example model, batched, against TorchServe, LitServe and naive.

Serves the example model (example/create_model.py, 40 MB of weights) on loopback, each server
answering the same typed-JSON body with the same answer:

* ours at its default flags, the model declaring batching in its archive
  (``{"max_batch_size": 8, "max_batch_delay_ms": 0}``), and the same model without it;
* TorchServe 0.12 batched: 2 workers, ``batchSize`` 8, ``maxBatchDelay`` 2 ms, token authorization
  and the model API off, our handler (benchmarks/baselines/torchserve_handler.py) parsing the body
  with orjson, torch threads 1, every port (inference, management, metrics, gRPC) on loopback;
* LitServe 0.2.19 batched: 2 CPU workers, ``max_batch_size`` 8, ``batch_timeout`` 2 ms, torch
  threads 1 (benchmarks/baselines/litserve_server.py);
* the naive server (Falcon + orjson, ``gunicorn gthread -w 2 --threads 4``, torch threads 1).

Before timing, each peer must answer bursts of distinct requests exactly as our unbatched model
does (float32 rounding: relative 1e-5). Then wrk (``--wrk-threads 2``: the client competes for the
two cores, as in production) drives each at every ``--connections``, rounds interleaved; the
servers not being timed are stopped (SIGSTOP) meanwhile, since some take CPU while idle (the run
prints how much). Prints median requests/s, the ratios the issue names, p50 and p99 latency, and
our batch sizes with what one worker estimates each size costs. Any non-2xx answer fails the run.

Usage: python -m benchmarks.peers [--seconds 5] [--rounds 3] [--connections 8,32] [--wrk-threads 2]
       [--peers torchserve,litserve,naive] [--batch-policy JSON]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from benchmarks.load import (
    DEFAULTS,
    Round,
    Target,
    batch_counters,
    check_bursts,
    cpu_seconds,
    distinct_example_bodies,
    gunicorn_command,
    interleaved_rounds,
    unbatched_answers,
    wrk_script,
)
from benchmarks.workloads import BATCH_POLICY
from tests.integration.server import cli_command, free_port, running
from tests.models import REPO, example_model_class

BASELINES = REPO / "benchmarks" / "baselines"
PEER_WORKERS = 2
PEER_BATCH_SIZE = 8
PEER_BATCH_DELAY_MS = 2
PEERS = ("torchserve", "litserve", "naive")


def torchserve_files(root: Path, model: Path) -> tuple[Path, Path, dict[str, int]]:
    """Archive ``model`` with our handler and write TorchServe's configuration, every port on
    loopback; return the model store, the configuration file and the ports by name."""
    store = root / "torchserve-store"
    store.mkdir()
    subprocess.run(
        [
            str(Path(sys.executable).with_name("torch-model-archiver")),
            "--model-name",
            "example",
            "--version",
            "1.0",
            "--serialized-file",
            str(model),
            "--handler",
            str(BASELINES / "torchserve_handler.py"),
            "--extra-files",
            str(BASELINES / "typed_json.py"),
            "--export-path",
            str(store),
        ],
        check=True,
    )
    ports = {name: free_port() for name in ("inference", "management", "metrics", "grpc", "grpc_management")}
    models = {
        "example": {
            "1.0": {
                "defaultVersion": True,
                "marName": "example.mar",
                "minWorkers": PEER_WORKERS,
                "maxWorkers": PEER_WORKERS,
                "batchSize": PEER_BATCH_SIZE,
                "maxBatchDelay": PEER_BATCH_DELAY_MS,
                "responseTimeout": 120,
            }
        }
    }
    config = root / "torchserve.properties"
    config.write_text(
        "\n".join(
            [
                f"inference_address=http://127.0.0.1:{ports['inference']}",
                f"management_address=http://127.0.0.1:{ports['management']}",
                f"metrics_address=http://127.0.0.1:{ports['metrics']}",
                "grpc_inference_address=127.0.0.1",
                "grpc_management_address=127.0.0.1",
                f"grpc_inference_port={ports['grpc']}",
                f"grpc_management_port={ports['grpc_management']}",
                "disable_token_authorization=true",
                "enable_model_api=false",
                "disable_system_metrics=true",
                f"model_store={store}",
                "load_models=example.mar",
                f"models={json.dumps(models)}",
            ]
        )
        + "\n"
    )
    return store, config, ports


def torchserve_command(store: Path, config: Path) -> list[str]:
    return [
        str(Path(sys.executable).with_name("torchserve")),
        "--start",
        "--foreground",
        "--ncs",
        "--disable-token-auth",
        "--model-store",
        str(store),
        "--ts-config",
        str(config),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="8,32")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--peers", default=",".join(PEERS), help="ours and a subset of " + ",".join(PEERS))
    parser.add_argument("--batch-policy", default=BATCH_POLICY, help="the torch_serving.json of our batched model")
    args = parser.parse_args(argv)
    chosen = args.peers.split(",")
    connection_counts = [int(c) for c in args.connections.split(",")]

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        scratch = Path(tmp)
        root = scratch / "models"
        root.mkdir()
        example_model_class().main(str(root / "model-example.pt"))
        example_model_class().main(str(root / "model-example-batched.pt"), args.batch_policy)
        body = (REPO / "example" / "post-data.json").read_bytes()
        env = {"TORCH_SERVING_MODEL_ROOT": str(root), "TORCH_SERVING_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"}

        def start(name: str, command: list[str], port: int, health: str = "/healthcheck", cwd: Path = REPO):
            return stack.enter_context(
                running(command, port, scratch / f"{name}.log", env=env, cwd=cwd, health_path=health)
            )

        servers, urls, content_types = {}, {}, {}
        port = free_port()
        ours = start("ours", cli_command(port, "--model-root", str(root)), port)  # its defaults, access lines on
        for name, model in (("ours", "model-example-batched.pt"), ("ours-unbatched", "model-example.pt")):
            servers[name], urls[name] = ours, f"{ours.url}/serve?servable_identifier={model}"
        if "naive" in chosen:
            port = free_port()
            naive = start(
                "naive",
                gunicorn_command("benchmarks.baselines.naive_server:app", port, DEFAULTS.workers, DEFAULTS.threads),
                port,
            )
            servers["naive"], urls["naive"] = naive, f"{naive.url}/serve?servable_identifier=model-example.pt"
        if "torchserve" in chosen:
            store, config, ports = torchserve_files(scratch, root / "model-example.pt")
            (scratch / "torchserve-run").mkdir()
            torchserve = start(
                "torchserve",
                torchserve_command(store, config),
                ports["inference"],
                health="/ping",
                cwd=scratch / "torchserve-run",
            )
            servers["torchserve"], urls["torchserve"] = torchserve, f"{torchserve.url}/predictions/example"
            # As bytes, for orjson: TorchServe parses application/json bodies with the standard library.
            content_types["torchserve"] = "application/octet-stream"
        if "litserve" in chosen:
            port = free_port()
            command = [sys.executable, "-m", "benchmarks.baselines.litserve_server", str(root / "model-example.pt")]
            command += ["--port", str(port), "--workers", str(PEER_WORKERS), "--max-batch-size", str(PEER_BATCH_SIZE)]
            command += ["--batch-timeout", str(PEER_BATCH_DELAY_MS / 1000)]
            litserve = start("litserve", command, port, health="/health")
            servers["litserve"], urls["litserve"] = litserve, f"{litserve.url}/predict"

        # Every server answers what our unbatched model answers, request by request.
        bodies = distinct_example_bodies(body, max(connection_counts[0], 8))
        expected = unbatched_answers(f"{ours.url}/serve", "model-example.pt", bodies)
        for name, url in urls.items():
            check_bursts(url, bodies, expected, content_types.get(name, "application/json"))

        targets = {
            name: Target(
                servers[name].process.pid,
                url,
                wrk_script(scratch, name, body, content_type=content_types.get(name)),
            )
            for name, url in urls.items()
        }
        idle = {
            name: idle_cpu_percent(server.process.pid) for name, server in servers.items() if name != "ours-unbatched"
        }
        results: dict[int, dict[str, list[Round]]] = {}
        batches: dict[int, tuple[int, int]] = {}
        forward_costs: dict[int, dict[str, float]] = {}
        for connections in connection_counts:
            before = batch_counters(ours.url, "model-example-batched.pt")
            results[connections] = interleaved_rounds(
                targets, args.rounds, args.seconds, connections, args.wrk_threads, pause_others=True
            )
            after = batch_counters(ours.url, "model-example-batched.pt")
            batches[connections] = (after[0] - before[0], after[1] - before[1])
            forward_costs[connections] = forward_ms_by_rows(ours.url, "model-example-batched.pt")

    print("CPU each server takes while idle, % of one core:", ", ".join(f"{n} {p:.1f}" for n, p in idle.items()))
    _report(args, results, batches, forward_costs)
    return 0


def idle_cpu_percent(pid: int, seconds: float = 3.0) -> float:
    """Return the CPU the process tree of ``pid`` spends over ``seconds`` while nobody talks to it."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) * 100 / seconds


def forward_ms_by_rows(url: str, model: str) -> dict[str, float]:
    """Return what the worker answering ``GET /cache`` estimates a forward of ``model`` costs by rows."""
    return requests.get(f"{url}/cache", timeout=10).json()["stats"]["models"][model]["forward_ms_by_rows"]


def _report(args: argparse.Namespace, results: dict[int, dict[str, list[Round]]], batches, forward_costs) -> None:
    print(
        f"\npeer benchmark, example model: {args.rounds} rounds x {args.seconds}s, wrk -t{args.wrk_threads}, "
        "medians; every answer checked against ours (relative 1e-5), no non-2xx answer"
    )
    summary = {}
    for connections, series in results.items():
        names = list(series)
        median = {
            n: {f: statistics.median(getattr(r, f) for r in series[n]) for f in Round.__dataclass_fields__}
            for n in names
        }
        summary[connections] = median
        print(f"\n{connections} connections")
        print(f"{'server':<16}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'CPU ms/req':>12}")
        for n in names:
            m = median[n]
            print(f"{n:<16}{m['rate']:>10.0f}{m['p50_ms']:>10.2f}{m['p99_ms']:>10.2f}{m['cpu_ms_per_request']:>12.3f}")
        ratios = [f"{other} {median['ours']['rate'] / median[other]['rate']:.2f}" for other in names if other != "ours"]
        print("ours batched / " + ", ".join(ratios))
        if batches[connections][1]:
            requests_done, executions = batches[connections]
            print(
                f"ours batched: mean batch {requests_done / executions:.2f} rows ({requests_done} requests, warm-up included)"
            )
        costs = ", ".join(f"{rows}: {ms:.2f}" for rows, ms in forward_costs[connections].items())
        print(f"ours batched, one worker's forward CPU ms by rows: {costs}")
    print(json.dumps({"connections": summary}))


if __name__ == "__main__":
    raise SystemExit(main())
