"""The Open Inference Protocol over gRPC against REST, through the stock clients: the same Python
client loop calls one server (this tree at its default flags, with ``--grpc-port``) through
``tritonclient.grpc`` and through ``tritonclient.http`` with binary tensors, on a
[1, 3, 224, 224] float32 tensor (the ``image`` workload's classifier) and on ``tiny``. gRPC is
measured twice: each client thread on a connection of its own (as several client processes are,
spread over the workers) and on the one connection grpcio's channels in a process share by
default (which one worker serves). Each transport's answer is checked equal to the other's first.
Beside them, the Python floor: the same gRPC client loop against grpcio's own server answering a
canned reply (``benchmarks.baselines.grpc_floor``), what a server written with Python's gRPC allows
here at best (the server's own is native). Rounds interleave the transports; medians of requests/s.

    .venv/bin/python -m benchmarks.grpc [--rounds 5] [--seconds 3] [--clients 4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from benchmarks.workloads import build
from tests.integration.server import cli_command, free_port, running

# (case, model, input shape)
_CASES = (("image [1, 3, 224, 224] FP32", "image", (1, 3, 224, 224)), ("tiny", "tiny", (1, 4)))
_TRANSPORTS = ("http", "grpc", "floor", "grpc-shared", "floor-shared")


# tritonclient's own message size limits, and a connection of the client's own: by default grpcio's
# channels in one process share one connection, so all of a process's client threads call one worker.
_OWN_CONNECTION = [
    ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
    ("grpc.use_local_subchannel_pool", 1),
]


def _client(transport: str, http_port: int, grpc_port: int, floor_port: int = 0):
    """``transport``'s client module and a client of it: ``http``, or ``grpc`` and ``floor`` (the floor's
    server), each on a connection of its own, or with ``-shared`` on the connection the process's
    channels share (tritonclient's default)."""
    if transport == "http":
        return httpclient, httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
    server, _, shared = transport.partition("-")
    port = grpc_port if server == "grpc" else floor_port
    options = None if shared else _OWN_CONNECTION
    return grpcclient, grpcclient.InferenceServerClient(f"127.0.0.1:{port}", channel_args=options)


def _call(module, client, model: str, x: np.ndarray) -> np.ndarray:
    tensor = module.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)  # binary over HTTP too (tritonclient's default)
    return client.infer(model, [tensor]).as_numpy("OUTPUT__0")


def _rate(transport: str, ports: tuple[int, ...], model: str, x: np.ndarray, clients: int, seconds: float) -> float:
    """Requests/s of ``clients`` threads, each with its own client, calling for ``seconds``."""
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def loop(index: int) -> None:
        module, client = _client(transport, *ports)
        try:
            while time.monotonic() < stop:
                _call(module, client, model, x)
                counts[index] += 1
        finally:
            client.close()

    started = time.monotonic()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - started)


def _wait_for_floor(ports: tuple[int, ...], x: np.ndarray) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            _call(*_client("floor", *ports), "tiny", x)
            return
        except grpcclient.InferenceServerException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4, help="client threads, each with its own client")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        root = scratch / "models"
        build(root)
        ports = (free_port(), free_port(), free_port())
        command = cli_command(ports[0], "--model-root", str(root), "--grpc-port", str(ports[1]))
        floor_server = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.baselines.grpc_floor", str(ports[2])], start_new_session=True
        )
        with running(command, ports[0], scratch / "server.log"), contextlib.ExitStack() as stack:
            stack.callback(lambda: os.killpg(floor_server.pid, signal.SIGTERM))
            print(f"\n{args.rounds} rounds x {args.seconds:g}s, {args.clients} client threads per transport; medians")
            print(
                "| tensor | REST (binary) req/s | gRPC, own connections | / REST | floor / REST "
                "| gRPC, one shared connection | / REST | floor / REST |"
            )
            print("|---|---|---|---|---|---|---|---|")
            rng = np.random.default_rng(0)
            for case, model, shape in _CASES:
                x = rng.random(shape, dtype=np.float32)
                answers = {t: _call(*_client(t, *ports), model, x) for t in ("grpc", "http")}
                if not np.array_equal(answers["grpc"], answers["http"]):
                    print(f"{case}: gRPC and REST answered differently", file=sys.stderr)
                    return 1
                rates: dict[str, list[float]] = {t: [] for t in _TRANSPORTS}
                _wait_for_floor(ports, x)
                for transport in _TRANSPORTS:  # warm-up: both workers load the model
                    _rate(transport, ports, model, x, args.clients, 1.0)
                for _ in range(args.rounds):
                    for transport in _TRANSPORTS:
                        rates[transport].append(_rate(transport, ports, model, x, args.clients, args.seconds))
                http, own, floor, shared, floor_shared = (statistics.median(rates[t]) for t in _TRANSPORTS)
                print(
                    f"| {case} | {http:.0f} | {own:.0f} | {own / http:.2f} | {floor / http:.2f}"
                    f" | {shared:.0f} | {shared / http:.2f} | {floor_shared / http:.2f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
