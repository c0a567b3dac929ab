"""Soak test: tens of thousands of requests cycling more models than the cache
holds, from concurrent clients, sampling the server's RSS over time; then an
AOTInductor package reloaded on every request (``invalidation_prob=1``),
sampling RSS and what the server's TMPDIR holds.

Every answer is checked. Fails (exit 1) on a wrong answer, or when RSS keeps
growing: the last quarter's mean must stay within 10% of the second's; or
when the reloads leave TMPDIR holding more than after the first.

Usage: python -m benchmarks.soak [--requests 30000] [--clients 8] [--models 8] [--pt2-reloads 1000]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import torch

from tests.conftest import body_of, tensor_json
from tests.integration.server import cli_command, free_port, process_tree, running
from tests.models import REPO, AffineModel, script_and_save
from tests.packages import build_examples


def rss_mib(pid: int) -> float:
    """Return the current RSS summed over ``pid`` and its descendants, in MiB."""
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
    return total / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--pt2-reloads", type=int, default=1000)
    args = parser.parse_args(argv)
    status = soak_models(args)
    return status or soak_package_reloads(args.pt2_reloads)


def plateaued(samples: list[float]) -> bool:
    """Whether the last quarter of ``samples`` is within 10% of the second, printing both."""
    quarter = max(len(samples) // 4, 1)
    second = statistics.mean(samples[quarter : 2 * quarter] or samples)
    last = statistics.mean(samples[-quarter:])
    growth = last / second - 1
    print(f"RSS second quarter {second:.1f} MiB, last quarter {last:.1f} MiB, growth {growth:+.1%}")
    return growth <= 0.10


def soak_models(args: argparse.Namespace) -> int:

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        for k in range(args.models):
            script_and_save(AffineModel(1.0, float(k)), root / f"plus{k}.pt")
        port = free_port()
        command = cli_command(
            port, "--model-root", str(root), "--model-capacity", "2", "--buffer-size", "1", "--log-level", "warning"
        )
        with running(command, port, Path(tmp) / "server.log") as server:
            remaining = [args.requests]
            lock = threading.Lock()
            failures: list[str] = []

            def client(seed: int) -> None:
                rng = random.Random(seed)
                with requests.Session() as session:
                    while True:
                        with lock:
                            if remaining[0] <= 0 or failures:
                                return
                            remaining[0] -= 1
                        k = rng.randrange(args.models)
                        x = float(rng.randint(-1000, 1000))
                        response = session.post(
                            f"{server.url}/serve",
                            params={"servable_identifier": f"plus{k}.pt"},
                            data=body_of(tensor_json(torch.tensor([x]))),
                            timeout=60,
                        )
                        if response.status_code != 200 or response.json()["result"]["value"] != [x + k]:
                            failures.append(f"plus{k}.pt on {x}: {response.status_code} {response.text[:200]}")

            threads = [threading.Thread(target=client, args=(seed,)) for seed in range(args.clients)]
            started = time.monotonic()
            for t in threads:
                t.start()
            samples = []
            while any(t.is_alive() for t in threads):
                samples.append((time.monotonic() - started, rss_mib(server.process.pid)))
                time.sleep(1)
            for t in threads:
                t.join()

    print(f"soak: {args.requests} requests, {args.clients} clients, {args.models} models over a cache of 2+1")
    for elapsed, rss in samples:
        print(f"  {elapsed:6.1f}s  RSS {rss:7.1f} MiB")
    if failures:
        print(f"FAILED: {len(failures)} wrong answers, first: {failures[0]}")
        return 1
    if not plateaued([rss for _, rss in samples]):
        print("FAILED: RSS did not plateau")
        return 1
    print("RSS plateaued; every answer was right")
    return 0


def disk_mib(folder: Path) -> float:
    return sum(path.stat().st_blocks * 512 for path in folder.rglob("*") if path.is_file()) / (1 << 20)


def soak_package_reloads(reloads: int) -> int:
    examples = build_examples()
    body = (REPO / "example" / "post-data-pt2.json").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp) / "tmpdir"
        tmpdir.mkdir()
        port = free_port()
        command = cli_command(port, "--model-root", str(examples), "--workers", "1", "--log-level", "warning")
        with running(command, port, Path(tmp) / "server.log", env={"TMPDIR": str(tmpdir)}) as server:
            url = f"{server.url}/serve?servable_identifier=model-example.pt2&invalidation_prob=1"
            with requests.Session() as session:
                expected = session.post(url, data=body, timeout=60).json()
                first_disk = disk_mib(tmpdir)
                rss, disk = [], []
                for done in range(1, reloads + 1):
                    answer = session.post(url, data=body, timeout=60).json()
                    if answer != expected:
                        print(f"FAILED: reload {done} answered {str(answer)[:200]}")
                        return 1
                    if done % max(reloads // 40, 1) == 0:
                        rss.append(rss_mib(server.process.pid))
                        disk.append(disk_mib(tmpdir))
    print(f"soak: model-example.pt2 reloaded {reloads} times; TMPDIR {first_disk:.1f} MiB after the first load")
    for index, (r, d) in enumerate(zip(rss, disk, strict=True)):
        print(f"  sample {index:2d}  RSS {r:7.1f} MiB  TMPDIR {d:6.1f} MiB")
    if not plateaued(rss) or max(disk) > first_disk + 1:
        print("FAILED: the reloads grew RSS or TMPDIR")
        return 1
    print("RSS and TMPDIR flat over the reloads; every answer was right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
