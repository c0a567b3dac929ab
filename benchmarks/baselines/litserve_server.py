"""LitServe's side of the peer benchmark: a LitAPI that answers the /serve protocol's typed JSON
for one TorchScript model, with LitServe's own batching.

LitServe parses the body, collects up to ``max_batch_size`` requests for at most
``batch_timeout`` seconds, and hands ``batch`` their decoded arguments; they are merged along
dimension 0, run as one forward, and each gets its own rows back in our answer's envelope.

Run: python -m benchmarks.baselines.litserve_server MODEL.pt --port 8000 [--max-batch-size 8]
"""

from __future__ import annotations

import argparse

import litserve
import torch

from benchmarks.baselines.typed_json import decode_argument, encode_value, merge_rows, split_rows


class TypedJsonAPI(litserve.LitAPI):
    """One TorchScript model's forward behind LitServe's API protocol."""

    def __init__(self, model_path: str) -> None:
        super().__init__()
        self.model_path = model_path

    def setup(self, device) -> None:
        torch.set_num_threads(1)
        self.model = torch.jit.load(self.model_path).eval()

    def decode_request(self, request):
        return [decode_argument(a) for a in (request if isinstance(request, list) else [request])]

    def batch(self, inputs: list[list]):
        return merge_rows(inputs)

    def predict(self, x):
        args, rows = x if isinstance(x, tuple) else (x, None)
        with torch.inference_mode():
            result = self.model(*args)
        return result if rows is None else split_rows(result, rows)

    def unbatch(self, output: list) -> list:
        return output

    def encode_response(self, output) -> dict:
        return {"code": 200, "message": "OK", "description": "Success", "result": encode_value(output)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.002, help="seconds")
    args = parser.parse_args()
    batching = {"max_batch_size": args.max_batch_size, "batch_timeout": args.batch_timeout}
    server = litserve.LitServer(
        TypedJsonAPI(args.model), accelerator="cpu", workers_per_device=args.workers, **batching
    )
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
