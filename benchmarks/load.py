"""Load benchmark: our server against a naive Python server and the framework ceiling.

Starts, on loopback, (a) torch-serving with its defaults, (b) the naive
server of benchmarks/baselines and (c) a Falcon hello-world that reads the
body and answers a constant, (b) and (c) under the same gunicorn worker
settings as (a). Drives each with wrk (keep-alive), warm-up first, rounds
interleaved so drift hits all sides alike, every answer's status checked.
Prints median requests/s per workload and the ratios; the CPU time each
server's processes spent per request (user + system, summed over the
process tree), a second view of the same ratios that does not depend on
how much CPU other tenants leave us; and the summed peak RSS of each server after the `example`
workload. Workloads with a binary
form (`image`) are also sent to our V2 endpoint as binary tensors, in the
same rounds, and compared with the naive server's JSON rate.

Usage: python -m benchmarks.load [--seconds 3] [--rounds 3] [--connections 8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy
import requests
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.workloads import BATCH_POLICY, SWEEP_SIZES, Workload, build
from tests.integration.server import RunningServer, cli_command, free_port, process_tree, running
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


def wrk_script(
    directory: Path, name: str, body: bytes, header_length: int | None = None, content_type: str | None = None
) -> Path:
    """Write ``body`` and a wrk script that POSTs it (as JSON, as V2's binary form with a
    ``header_length``, or as ``content_type``); return the script's path."""
    body_file = directory / f"{name}.body"
    body_file.write_bytes(body)
    extra = "" if header_length is None else f'wrk.headers["Inference-Header-Content-Length"] = "{header_length}"'
    if content_type is None:
        content_type = "application/json" if header_length is None else "application/octet-stream"
    script = directory / f"{name}.lua"
    script.write_text(_WRK_SCRIPT.format(content_type=content_type, extra_headers=extra, body=body_file))
    return script


def gunicorn_command(module: str, port: int, workers: int, threads: int) -> list[str]:
    """Return the command that serves the WSGI app ``module`` under gunicorn gthread, as baselines run."""
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


@dataclass(frozen=True)
class Round:
    """One timed wrk run against one server."""

    rate: float
    cpu_ms_per_request: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class WrkRun:
    """What one wrk run measured."""

    rate: float
    requests: int
    p50_ms: float
    p99_ms: float


_WRK_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _latency_ms(out: str, percentile: str) -> float:
    value, unit = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE).groups()
    return float(value) * _WRK_UNITS_MS[unit]


def run_wrk(url: str, script: Path, seconds: int, connections: int, threads: int = 1) -> WrkRun:
    """Drive ``url`` for ``seconds`` from ``threads`` wrk threads; return the rate, the requests
    completed and the median and 99th percentile latencies."""
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        raise RuntimeError(f"wrk saw failed requests against {url}:\n{out}")
    return WrkRun(
        rate=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        requests=int(re.search(r"(\d+) requests in", out).group(1)),
        p50_ms=_latency_ms(out, "50"),
        p99_ms=_latency_ms(out, "99"),
    )


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time of ``pid`` and all its descendants, in seconds."""
    ticks = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited between the listing and the read
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Target:
    """What one series of wrk runs drives: a URL and script, and whose CPU time counts."""

    server_pid: int
    url: str
    script: Path


def serve_targets(servers: dict[str, RunningServer], workload: Workload, scratch: Path) -> dict[str, Target]:
    """Check each server's /serve answer to ``workload`` and return the wrk target that drives it."""
    script = wrk_script(scratch, workload.name, workload.body)
    targets = {}
    for name, server in servers.items():
        check_answer(f"{server.url}/serve", workload, None)
        url = f"{server.url}/serve?servable_identifier={workload.model}"
        targets[name] = Target(server.process.pid, url, script)
    return targets


def interleaved_rounds(
    targets: dict[str, Target],
    rounds: int,
    seconds: int,
    connections: int,
    wrk_threads: int = 1,
    pause_others: bool = False,
) -> dict[str, list[Round]]:
    """Warm every target up, then time ``rounds`` runs of each, interleaved so drift hits all alike.
    With ``pause_others``, the servers not being driven are stopped (SIGSTOP) meanwhile, so that
    what one does while idle takes no CPU from another."""
    servers = {target.server_pid for target in targets.values()}

    @contextlib.contextmanager
    def only(pid: int):
        paused = servers - {pid} if pause_others else set()
        try:
            for other in paused:
                os.killpg(other, signal.SIGSTOP)
            yield
        finally:
            for other in paused:
                os.killpg(other, signal.SIGCONT)

    for target in targets.values():  # loads models, fills caches
        with only(target.server_pid):
            run_wrk(target.url, target.script, 1, connections, wrk_threads)
    results: dict[str, list[Round]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name, target in targets.items():
            with only(target.server_pid):
                before = cpu_seconds(target.server_pid)
                run = run_wrk(target.url, target.script, seconds, connections, wrk_threads)
                cpu_ms = (cpu_seconds(target.server_pid) - before) * 1000 / max(run.requests, 1)
            results[name].append(Round(run.rate, cpu_ms, run.p50_ms, run.p99_ms))
    return results


def medians(series: dict[str, list[Round]]) -> tuple[dict[str, float], dict[str, float]]:
    """The median rate and the median CPU ms per request of each server's rounds."""
    rate = {name: statistics.median(r.rate for r in rounds) for name, rounds in series.items()}
    cpu = {name: statistics.median(r.cpu_ms_per_request for r in rounds) for name, rounds in series.items()}
    return rate, cpu


def comparison_cells(series: dict[str, list[Round]], first: str, second: str) -> str:
    """The table cells comparing two servers' rounds: each one's median rate, ``first``'s over ``second``'s,
    each one's median CPU ms per request, and ``second``'s over ``first``'s (above 1: ``first`` is cheaper)."""
    rate, cpu = medians(series)
    return (
        f"| {rate[first]:.0f} | {rate[second]:.0f} | {rate[first] / rate[second]:.3f} "
        f"| {cpu[first]:.3f} | {cpu[second]:.3f} | {cpu[second] / cpu[first]:.3f} |"
    )


def peak_rss_mib(pid: int) -> float:
    """Return the peak RSS summed over ``pid`` and all its descendants, in MiB."""
    total_kib = 0
    for member in process_tree(pid):
        status = Path(f"/proc/{member}/status").read_text()
        total_kib += int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
    return total_kib / 1024


def close_answers(a, b, rel: float = 1e-6) -> bool:
    """Compare two results; floats to ``rel`` (float32 precision: the naive server prints doubles)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close_answers(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close_answers(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= rel * max(abs(a), abs(b), 1e-30)
    return a == b


def check_answer(url: str, workload: Workload, expected: dict | None) -> dict:
    response = requests.post(
        url,
        params={"servable_identifier": workload.model},
        data=workload.body,
        timeout=60,
    )
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code} for {workload.name}: {response.text[:300]}")
    doc = response.json()
    if expected is not None and doc["result"] is not None and not close_answers(doc["result"], expected["result"]):
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
    if not close_answers(values, expected["result"]["value"]):
        raise RuntimeError(f"{url} answered {workload.name} in binary differently from the JSON path")


def distinct_example_bodies(body: bytes, count: int) -> list[bytes]:
    """Return ``count`` variants of the example body, each with its own first input."""
    bodies = []
    for k in range(count):
        doc = json.loads(body)
        doc[0]["value"][0]["value"] = [1.0 + k, 2.0 - 0.5 * k]
        bodies.append(json.dumps(doc).encode())
    return bodies


def check_bursts(url: str, bodies: list[bytes], expected: list[dict], content_type: str = "application/json") -> None:
    """POST ``bodies`` to ``url`` all at once, in several bursts so that some surely share forwards; each
    answer must equal the one expected of it within float32 rounding (relative 1e-5)."""

    def post(body: bytes) -> dict:
        response = requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=120)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    with ThreadPoolExecutor(len(bodies)) as pool:
        for _ in range(5):
            for body, answer, reference in zip(bodies, pool.map(post, bodies), expected):
                if not close_answers(answer, reference, rel=1e-5):
                    raise RuntimeError(f"{url} answered {body[:80]!r} differently from the unbatched model")


def unbatched_answers(url: str, identifier: str, bodies: list[bytes]) -> list[dict]:
    """Return the answers of our model ``identifier`` to ``bodies``, one request at a time."""
    return [
        requests.post(url, params={"servable_identifier": identifier}, data=body, timeout=60).json() for body in bodies
    ]


def check_batched_answers(url: str, batched: str, unbatched: str, body: bytes, clients: int) -> None:
    """Send distinct requests to the batched model at once; each must equal the unbatched model's answer."""
    bodies = distinct_example_bodies(body, clients)
    check_bursts(f"{url}?servable_identifier={batched}", bodies, unbatched_answers(url, unbatched, bodies))


def batch_counters(url: str, model: str) -> tuple[int, int]:
    """Return the inferences and forward executions of ``model`` over all workers, from ``/metrics``."""
    # Each worker publishes its tallies every second.
    time.sleep(1.5)
    text = requests.get(f"{url}/metrics", timeout=10).text
    counts = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") == model:
                counts[sample.name] = int(sample.value)
    return counts.get("nv_inference_count_total", 0), counts.get("nv_inference_exec_count_total", 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--wrk-threads", type=int, default=1, help="2 on 2 cores: the client competes for the CPU")
    parser.add_argument(
        "--workloads",
        default="tiny,example,example-batched,image,echo,jpeg,jpeg-means," + ",".join(f"tiny-{n}" for n in SWEEP_SIZES),
    )
    parser.add_argument("--batch-policy", default=BATCH_POLICY, help="the torch_serving.json of example-batched")
    parser.add_argument("--workers", type=int, default=DEFAULTS.workers, help="for all three servers")
    parser.add_argument("--threads", type=int, default=DEFAULTS.threads, help="for all three servers")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        root = tmp_path / "models"
        workloads = [w for w in build(root, args.batch_policy) if w.name in args.workloads.split(",")]
        env = {
            "TORCH_SERVING_MODEL_ROOT": str(root),
            "TORCH_SERVING_TORCH_THREADS": str(DEFAULTS.torch_threads),
        }
        ports = {name: free_port() for name in ("ours", "naive", "hello")}
        commands = {
            "ours": cli_command(  # its defaults (access lines on) but the settings all three share
                ports["ours"],
                "--model-root",
                str(root),
                "--workers",
                str(args.workers),
                "--threads",
                str(args.threads),
            ),
            "naive": gunicorn_command(
                "benchmarks.baselines.naive_server:app",
                ports["naive"],
                args.workers,
                args.threads,
            ),
            "hello": gunicorn_command(
                "benchmarks.baselines.hello_world:app",
                ports["hello"],
                args.workers,
                args.threads,
            ),
        }
        rounds: dict[tuple[str, str], list[Round]] = {}
        rss: dict[str, float] = {}
        batches: dict[str, tuple[int, int]] = {}
        with (
            running(commands["ours"], ports["ours"], tmp_path / "ours.log", env=env) as ours,
            running(commands["naive"], ports["naive"], tmp_path / "naive.log", env=env) as naive,
            running(commands["hello"], ports["hello"], tmp_path / "hello.log", env=env) as hello,
        ):
            servers = {"ours": ours, "naive": naive, "hello": hello}
            for workload in workloads:
                script = wrk_script(tmp_path, workload.name, workload.body)
                targets = {
                    name: Target(s.process.pid, f"{s.url}/serve?servable_identifier={workload.model}", script)
                    for name, s in servers.items()
                }
                reference = check_answer(f"{ours.url}/serve", workload, None)
                check_answer(f"{naive.url}/serve", workload, reference)
                if workload.binary:
                    binary = workload.binary
                    targets["ours-v2"] = Target(
                        ours.process.pid,
                        f"{ours.url}/v2/models/{workload.model}/infer",
                        wrk_script(tmp_path, workload.name + "-v2", binary.body, binary.header_length),
                    )
                    _check_binary_answer(targets["ours-v2"].url, workload, reference)
                if workload.name == "example-batched":
                    check_batched_answers(
                        f"{ours.url}/serve", workload.model, "model-example.pt", workload.body, args.connections
                    )
                series = interleaved_rounds(targets, args.rounds, args.seconds, args.connections, args.wrk_threads)
                rounds.update({(workload.name, name): results for name, results in series.items()})
                if workload.name == "example-batched":
                    batches[workload.name] = batch_counters(ours.url, workload.model)
                if workload.name == "example":
                    rss = {name: peak_rss_mib(s.process.pid) for name, s in servers.items() if name != "hello"}
            # A model moved off the event loop, say, changes what the figures mean.
            warnings = [line for line in ours.log().splitlines() if "[WARNING]" in line or "[ERROR]" in line]

    _report(args, workloads, rounds, rss)
    if warnings:
        print("our server warned during the run:", *warnings, sep="\n  ")
    for name, (requests_done, executions) in batches.items():
        print(
            f"{name}: {requests_done} requests in {executions} forwards (mean batch {requests_done / executions:.2f})"
            " over all workers; batched answers equal the unbatched ones within 1e-5"
        )
    return 0


def _report(
    args: argparse.Namespace,
    workloads: list[Workload],
    rounds: dict[tuple[str, str], list[Round]],
    rss: dict[str, float],
) -> None:
    """Print the medians and ratios, then the same as one JSON line."""

    def median(workload: str, server: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in rounds[(workload, server)])

    print(
        f"\nload benchmark: {args.rounds} rounds x {args.seconds}s, wrk -t{args.wrk_threads} -c{args.connections}, "
        f"gunicorn gthread -w {args.workers} --threads {args.threads}, torch threads {DEFAULTS.torch_threads}"
    )
    servers = ("ours", "naive", "hello")
    summary: dict[str, dict[str, float]] = {}
    print(f"{'requests/s':<16}{'ours':>10}{'naive':>10}{'hello':>10}{'ours/naive':>12}{'ours/hello':>12}")
    for w in workloads:
        rate = {s: median(w.name, s, "rate") for s in servers}
        summary[w.name] = {f"{s}_rate": rate[s] for s in servers}
        print(
            f"{w.name:<16}{rate['ours']:>10.0f}{rate['naive']:>10.0f}{rate['hello']:>10.0f}"
            f"{rate['ours'] / rate['naive']:>12.2f}{rate['ours'] / rate['hello']:>12.2f}"
        )
    # The same ratios from CPU time (naive's CPU per request over ours), so
    # that a machine whose speed drifts during the run shows less.
    print(f"{'CPU ms/req':<16}{'ours':>10}{'naive':>10}{'hello':>10}{'naive/ours':>12}{'hello/ours':>12}")
    for w in workloads:
        cpu = {s: median(w.name, s, "cpu_ms_per_request") for s in servers}
        summary[w.name].update({f"{s}_cpu_ms": cpu[s] for s in servers})
        print(
            f"{w.name:<16}{cpu['ours']:>10.3f}{cpu['naive']:>10.3f}{cpu['hello']:>10.3f}"
            f"{cpu['naive'] / cpu['ours']:>12.2f}{cpu['hello'] / cpu['ours']:>12.2f}"
        )
    for w in workloads:
        if w.binary:
            v2_rate = median(w.name, "ours-v2", "rate")
            v2_cpu = median(w.name, "ours-v2", "cpu_ms_per_request")
            summary[w.name].update(ours_v2_rate=v2_rate, ours_v2_cpu_ms=v2_cpu)
            naive_rate, naive_cpu = summary[w.name]["naive_rate"], summary[w.name]["naive_cpu_ms"]
            print(
                f"{w.name} through V2 binary tensors: {v2_rate:.0f} req/s, {v2_rate / naive_rate:.2f} x naive JSON; "
                f"{v2_cpu:.3f} CPU ms/req, naive JSON / ours {naive_cpu / v2_cpu:.2f}"
            )
    if rss:
        print(
            f"peak RSS after example (MiB, all processes): ours {rss['ours']:.0f}, naive {rss['naive']:.0f}, "
            f"ratio {rss['ours'] / rss['naive']:.2f}"
        )
    print(json.dumps({"workloads": summary, "rss_mib": rss}))


if __name__ == "__main__":
    raise SystemExit(main())
