"""Where a small request's time goes, in one process: the fastest of many rounds.

Measures, with torch threads 1 and CPU time per call (so that other tenants
of a shared machine inflate nothing but the slower rounds):

* each WSGI app answering the `tiny` request (ours, ours with `--metrics
  off`, the naive server, the Falcon hello-world), called directly, without
  gunicorn;
* our native call alone (`Pipeline.serve`), with no executor and through an
  executor (where a quick call runs in its caller while a thread is free);
* the example model's forward on 1 to 8 rows and on 16, which says when
  batching it pays, and which batch sizes cost least per row.

Run: .venv/bin/python -m benchmarks.in_process [--rounds 25] [--calls 3000]
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.workloads import build
from torch_serving import Config, Executor, Pipeline, RequestBody, create_app


def fastest_us(call: Callable[[], object], rounds: int, calls: int) -> float:
    """Return the least CPU time per call of ``call``, in microseconds, over ``rounds`` rounds."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls):
            call()
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


def wsgi_call(app, body: bytes, query: str) -> Callable[[], bytes]:
    """Return a function that sends ``body`` to ``app``'s POST /serve and returns the answer."""

    def start_response(status: str, headers: list, exc_info=None) -> None:
        if not status.startswith("200"):
            raise RuntimeError(f"the app answered {status}")

    def call() -> bytes:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/serve",
            "QUERY_STRING": query,
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        return b"".join(app(environ, start_response))

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny = next(w for w in build(root) if w.name == "tiny")
        query = f"servable_identifier={tiny.model}"
        os.environ["TORCH_SERVING_MODEL_ROOT"] = str(root)  # read by the naive server at import
        apps = {
            "ours": create_app(Config(model_root=root, torch_threads=1)),
            "ours, metrics off": create_app(Config(model_root=root, torch_threads=1, metrics=False)),
            "naive": importlib.import_module("benchmarks.baselines.naive_server").app,
            "hello": importlib.import_module("benchmarks.baselines.hello_world").app,
        }
        calls = {name: wsgi_call(app, tiny.body, query) for name, app in apps.items()}
        pipeline = Pipeline(str(root), 4, 1)
        executor = Executor(4)
        body = RequestBody(tiny.body)
        calls["Pipeline.serve, no executor"] = lambda: pipeline.serve(tiny.model, tiny.model, body)
        calls["Pipeline.serve, executor (in the caller)"] = lambda: pipeline.serve(
            tiny.model, tiny.model, body, 0.0, executor, 60.0
        )
        for call in calls.values():  # loads the models, warms the caches
            call()
        print(f"in process, torch threads 1, fastest of {args.rounds} rounds of {args.calls} calls, CPU us per call")
        for name, call in calls.items():
            print(f"  tiny, {name:<34}{fastest_us(call, args.rounds, args.calls):>9.1f}")

        example = torch.jit.load(str(root / "model-example.pt"))
        with torch.inference_mode():
            for rows in (*range(1, 9), 16):
                x, y = torch.rand(rows, 2), torch.rand(rows, 3)
                forward_args = ([x, y], y, {"x": x, "y": y}, 30, "Hello!")
                per_forward = fastest_us(lambda a=forward_args: example(*a), max(3, args.rounds // 3), 20)
                print(
                    f"  example forward, {rows} row(s){'':<19}{per_forward:>9.1f}  ({per_forward / rows:.1f} per row)"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
