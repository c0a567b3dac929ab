"""Load benchmark: our server against a naive Python server and the framework ceiling.

Starts, on loopback, (a) torch-serving with its defaults, (b) the naive
server of benchmarks/baselines and (c) a Falcon hello-world that reads the
body and answers a constant, (b) and (c) under the same gunicorn worker
settings as (a). Drives each with wrk (keep-alive), warm-up first, rounds
interleaved so drift hits all sides alike, every answer's status checked.
Prints median requests/s per workload and the ratios, and the summed peak
RSS of each server after the `example` workload. Workloads with a binary
form (`image`) are also sent to our V2 endpoint as binary tensors, in the
same rounds, and compared with the naive server's JSON rate.

Usage: python -m benchmarks.load [--seconds 3] [--rounds 3] [--connections 8]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy
import requests

from benchmarks.workloads import Workload, build
from tests.integration.server import cli_command, free_port, process_tree, running
from torch_serving.config import Config

DEFAULTS = Config(model_root=Path.cwd())
_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
{extra_headers}
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""


def _wrk_script(directory: Path, name: str, body: bytes, header_length: int | None = None) -> Path:
    """Write ``body`` and a wrk script that POSTs it; return the script's path."""
    body_file = directory / f"{name}.body"
    body_file.write_bytes(body)
    extra = "" if header_length is None else f'wrk.headers["Inference-Header-Content-Length"] = "{header_length}"'
    content_type = "application/json" if header_length is None else "application/octet-stream"
    script = directory / f"{name}.lua"
    script.write_text(_WRK_SCRIPT.format(content_type=content_type, extra_headers=extra, body=body_file))
    return script


def _gunicorn(module: str, port: int, workers: int, threads: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gthread",
        "-w",
        str(workers),
        "--threads",
        str(threads),
        "--no-control-socket",
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        module,
    ]


def _wrk(url: str, script: Path, seconds: int, connections: int) -> float:
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        raise RuntimeError(f"wrk saw failed requests against {url}:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def peak_rss_mib(pid: int) -> float:
    """Return the peak RSS summed over ``pid`` and all its descendants, in MiB."""
    total_kib = 0
    for member in process_tree(pid):
        status = Path(f"/proc/{member}/status").read_text()
        total_kib += int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
    return total_kib / 1024


def _close(a, b) -> bool:
    """Compare two results; floats to float32 precision, as the naive server prints doubles."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 1e-6 * max(abs(a), abs(b), 1e-30)
    return a == b


def _check_answer(url: str, workload: Workload, expected: dict | None) -> dict:
    response = requests.post(
        url,
        params={"servable_identifier": workload.model},
        data=workload.body,
        timeout=60,
    )
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code} for {workload.name}: {response.text[:300]}")
    doc = response.json()
    if expected is not None and doc["result"] is not None and not _close(doc["result"], expected["result"]):
        raise RuntimeError(f"{url} answered {workload.name} differently from torch-serving")
    return doc


def _check_binary_answer(url: str, workload: Workload, expected: dict) -> None:
    binary = workload.binary
    response = requests.post(
        url,
        data=binary.body,
        headers={"Inference-Header-Content-Length": str(binary.header_length)},
        timeout=60,
    )
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code} for {workload.name}: {response.text[:300]}")
    json_length = int(response.headers["Inference-Header-Content-Length"])
    values = numpy.frombuffer(response.content[json_length:], dtype=numpy.float32).tolist()
    if not _close(values, expected["result"]["value"]):
        raise RuntimeError(f"{url} answered {workload.name} in binary differently from the JSON path")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workloads", default="tiny,example,image,echo")
    parser.add_argument("--workers", type=int, default=DEFAULTS.workers, help="for all three servers")
    parser.add_argument("--threads", type=int, default=DEFAULTS.threads, help="for all three servers")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        root = tmp_path / "models"
        workloads = [w for w in build(root) if w.name in args.workloads.split(",")]
        env = {
            "TORCH_SERVING_MODEL_ROOT": str(root),
            "TORCH_SERVING_TORCH_THREADS": str(DEFAULTS.torch_threads),
        }
        ports = {name: free_port() for name in ("ours", "naive", "hello")}
        commands = {
            "ours": cli_command(
                ports["ours"],
                "--model-root",
                str(root),
                "--log-level",
                "warning",
                "--workers",
                str(args.workers),
                "--threads",
                str(args.threads),
            ),
            "naive": _gunicorn(
                "benchmarks.baselines.naive_server:app",
                ports["naive"],
                args.workers,
                args.threads,
            ),
            "hello": _gunicorn(
                "benchmarks.baselines.hello_world:app",
                ports["hello"],
                args.workers,
                args.threads,
            ),
        }
        rates: dict[tuple[str, str], list[float]] = {}
        rss: dict[str, float] = {}
        with (
            running(commands["ours"], ports["ours"], tmp_path / "ours.log", env=env) as ours,
            running(commands["naive"], ports["naive"], tmp_path / "naive.log", env=env) as naive,
            running(commands["hello"], ports["hello"], tmp_path / "hello.log", env=env) as hello,
        ):
            servers = {"ours": ours, "naive": naive, "hello": hello}
            for workload in workloads:
                scripts = dict.fromkeys(servers, _wrk_script(tmp_path, workload.name, workload.body))
                url = {name: f"{s.url}/serve?servable_identifier={workload.model}" for name, s in servers.items()}
                reference = _check_answer(f"{ours.url}/serve", workload, None)
                _check_answer(f"{naive.url}/serve", workload, reference)
                if workload.binary:
                    url["ours-v2"] = f"{ours.url}/v2/models/{workload.model}/infer"
                    binary = workload.binary
                    scripts["ours-v2"] = _wrk_script(
                        tmp_path,
                        workload.name + "-v2",
                        binary.body,
                        binary.header_length,
                    )
                    _check_binary_answer(url["ours-v2"], workload, reference)
                for name in url:  # warm-up: load models, fill caches, JIT profiles
                    _wrk(url[name], scripts[name], 1, args.connections)
                for _ in range(args.rounds):
                    for name in url:
                        rates.setdefault((workload.name, name), []).append(
                            _wrk(url[name], scripts[name], args.seconds, args.connections)
                        )
                if workload.name == "example":
                    rss = {name: peak_rss_mib(s.process.pid) for name, s in servers.items() if name != "hello"}

    print(
        f"\nload benchmark: {args.rounds} rounds x {args.seconds}s, wrk -t1 -c{args.connections}, "
        f"gunicorn gthread -w {args.workers} --threads {args.threads}, torch threads {DEFAULTS.torch_threads}"
    )
    print(
        f"{'workload':<10}{'ours req/s':>12}{'naive req/s':>13}{'hello req/s':>13}{'ours/naive':>12}{'ours/hello':>12}"
    )
    summary = {}
    for workload in workloads:
        median = {name: statistics.median(rates[(workload.name, name)]) for name in ("ours", "naive", "hello")}
        summary[workload.name] = median
        print(
            f"{workload.name:<10}{median['ours']:>12.0f}{median['naive']:>13.0f}{median['hello']:>13.0f}"
            f"{median['ours'] / median['naive']:>12.2f}{median['ours'] / median['hello']:>12.2f}"
        )
    for workload in workloads:
        if workload.binary:
            v2 = statistics.median(rates[(workload.name, "ours-v2")])
            summary[workload.name]["ours-v2"] = v2
            naive_rate = summary[workload.name]["naive"]
            print(
                f"{workload.name + ' V2 binary':<22}ours {v2:.0f} req/s, ours JSON {summary[workload.name]['ours']:.0f}, "
                f"naive JSON {naive_rate:.0f}: {v2 / naive_rate:.2f} x naive"
            )
    if rss:
        print(
            f"peak RSS after example (MiB, all processes): ours {rss['ours']:.0f}, naive {rss['naive']:.0f}, "
            f"ratio {rss['ours'] / rss['naive']:.2f}"
        )
    print(json.dumps({"rates": summary, "rss_mib": rss}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
