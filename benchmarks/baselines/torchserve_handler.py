"""TorchServe's side of the peer benchmark: a custom handler that answers the /serve protocol's
typed JSON for one TorchScript model, batching what TorchServe hands it.

TorchServe gives ``handle`` up to ``batchSize`` requests at once (its frontend queues them for at
most ``maxBatchDelay`` ms); their arguments are merged along dimension 0, run as one forward, and
each gets its own rows back, in our answer's envelope. The body arrives as bytes (sent as
``application/octet-stream``, so that TorchServe does not parse it with the standard library
first) and is parsed with orjson, as the naive server does. Packed by torch-model-archiver beside
``typed_json.py``.
"""

from __future__ import annotations

import orjson
import torch
from typed_json import decode_argument, encode_value, merge_rows, split_rows


class TypedJsonHandler:
    """The model's forward behind TorchServe's handler protocol (``initialize``, ``handle``)."""

    def __init__(self) -> None:
        self.model = None

    def initialize(self, context) -> None:
        torch.set_num_threads(1)
        model_dir = context.system_properties["model_dir"]
        serialized = context.manifest["model"]["serializedFile"]
        self.model = torch.jit.load(f"{model_dir}/{serialized}").eval()

    def handle(self, data: list[dict], context) -> list[bytes]:
        requests = []
        for item in data:
            doc = orjson.loads(bytes(item.get("body") or item.get("data")))
            requests.append([decode_argument(a) for a in (doc if isinstance(doc, list) else [doc])])
        args, rows = merge_rows(requests) if len(requests) > 1 else (requests[0], [0])
        with torch.inference_mode():
            result = self.model(*args)
        results = split_rows(result, rows) if len(requests) > 1 else [result]
        for index in range(len(results)):
            context.set_response_content_type(index, "application/json")
        return [
            orjson.dumps({"code": 200, "message": "OK", "description": "Success", "result": encode_value(r)})
            for r in results
        ]


_service = TypedJsonHandler()


def handle(data, context):
    """TorchServe's entry point for a module handler."""
    if _service.model is None:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
