"""The image classifier as an AOTInductor package (.pt2) against the same
classifier as TorchScript (.pt), in one run, through the native core.

Both get the same 224 x 224 float32 image as a V2 binary request
(``Pipeline.infer``, in process: no HTTP, so that only the model kinds
differ), with torch threads 1; the figure is the least CPU time per call
over the rounds. The classifier is example/create_image_model.py's (same
weights); the package is compiled here by ``torch_serving.package``, which
takes tens of seconds.

Then the same two requests under load: one torch-serving with its defaults
(gunicorn gthread 2 workers x 4 threads, torch threads 1) serving both
files, wrk with 2 threads (competing for the cores) and 8 connections,
interleaved rounds, medians of requests/s and server CPU time per request.

Run: .venv/bin/python -m benchmarks.pt2 [--rounds 15] [--calls 200] [--load-rounds 5] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from benchmarks.in_process import fastest_us
from benchmarks.load import Target, interleaved_rounds, wrk_script
from tests.integration.server import cli_command, free_port, running
from torch_serving import Pipeline, RequestBody, package

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "example"))
from create_image_model import Classifier  # noqa: E402
from create_pt2_model import BatchClassifier  # noqa: E402


def binary_request(name: str, tensor: torch.Tensor) -> tuple[bytes, int]:
    """Return a V2 request body sending ``tensor`` as binary input ``name``, and its JSON length."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": "FP32",
                    "shape": list(tensor.shape),
                    "parameters": {"binary_data_size": tensor.numel() * 4},
                }
            ]
        }
    ).encode()
    return header + tensor.contiguous().numpy().tobytes(), len(header)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--load-rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    image = torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.jit.script(Classifier().eval()).save(str(root / "classifier.pt"))
        torch.manual_seed(0)
        batch = torch.export.Dim("batch", min=1, max=64)
        package(BatchClassifier(), (torch.rand(2, 3, 224, 224),), ({0: batch},), root / "classifier.pt2")

        pipeline = Pipeline(str(root), 4, 0, instances=1)
        requests = {
            "TorchScript (.pt)": ("classifier.pt", *binary_request("image", image)),
            "AOTInductor (.pt2)": ("classifier.pt2", *binary_request("images", image.unsqueeze(0))),
        }
        answers = {}
        for kind, (model, body, header) in requests.items():
            response, json_length = pipeline.infer(model, model, RequestBody(body), header)
            answers[kind] = torch.tensor(json.loads(response[:json_length])["outputs"][0]["data"])
        torch.testing.assert_close(answers["TorchScript (.pt)"], answers["AOTInductor (.pt2)"], rtol=1e-4, atol=1e-6)

        print(f"classifier on one 224x224 image, V2 binary, torch threads 1, fastest of {args.rounds} rounds")
        times = {}
        for kind, (model, body, header) in requests.items():
            request = RequestBody(body)
            times[kind] = fastest_us(lambda: pipeline.infer(model, model, request, header), args.rounds, args.calls)
            print(f"  {kind:<22}{times[kind]:>9.1f} us CPU per request")
        ratio = times["TorchScript (.pt)"] / times["AOTInductor (.pt2)"]
        print(f"  .pt2 / .pt speed: {ratio:.2f}x (answers equal within 1e-4)")

        port = free_port()
        command = cli_command(port, "--model-root", str(root), "--log-level", "warning")
        with running(command, port, root / "server.log") as running_server:
            targets = {
                kind: Target(
                    running_server.process.pid,
                    f"{running_server.url}/v2/models/{model}/infer",
                    wrk_script(root, model, body, header),
                )
                for kind, (model, body, header) in requests.items()
            }
            rounds = interleaved_rounds(targets, args.load_rounds, args.seconds, connections=8, wrk_threads=2)
        print(f"under load: torch-serving defaults, wrk -t2 -c8, {args.load_rounds} rounds x {args.seconds}s, medians")
        rates = {}
        for kind, results in rounds.items():
            rates[kind] = statistics.median(r.rate for r in results)
            cpu = statistics.median(r.cpu_ms_per_request for r in results)
            print(f"  {kind:<22}{rates[kind]:>9.0f} requests/s, {cpu:.3f} CPU ms per request")
        print(f"  .pt2 / .pt rate: {rates['AOTInductor (.pt2)'] / rates['TorchScript (.pt)']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
