"""KServe's V1 data plane: ``GET /`` (liveness, as KServe's server answers it), ``GET /v1/models/{name}``
and ``POST /v1/models/{name}:predict``.

A predict request is ``{"instances": [...]}``: each instance is one row of the model's first
input (the others keep their defaults), or an object giving a row of each input by name. The rows of an input are stacked into one
tensor, whose datatype is the one the model's metadata gives that input (FP32 for a TorchScript
``Tensor``), and run through the Open Inference Protocol's inference path, so that batching models
batch V1 requests too. The answer is ``{"predictions": [...]}``, one per instance: the row of the
model's output, or an object of the rows of its outputs by name. Errors are ``{"error": DETAIL}``.
"""

from __future__ import annotations

import json
import re

import falcon
import numpy as np

from torch_serving._native import PhaseTimes, RequestBody
from torch_serving.backend import Backend
from torch_serving.binary_tensors import NUMPY_TYPES, from_binary, to_binary
from torch_serving.environ import arrival_time, on_event_loop
from torch_serving.errors import RequestError
from torch_serving.request_body import read_body
from torch_serving.v2 import binary_request, resolve_name

__all__ = ["add_v1_routes"]

_MODEL_PATH = re.compile(r"^/v1/models/(?P<name>.+?)(?P<action>:predict)?$")
_ALIVE = json.dumps({"status": "alive"}).encode()


def _invalid(detail: str) -> RequestError:
    return RequestError(400, "Invalid request body", detail)


class LivenessResource:
    """``GET /``: ``{"status": "alive"}``, where KServe's SDK checks a V1 server's liveness."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = _ALIVE

    on_head = on_get


class ModelSink:
    """Everything under ``/v1/models/``."""

    def __init__(self, backend: Backend) -> None:
        self._pipeline = backend.pipeline
        self._runner = backend.runner
        self._root = backend.config.model_root
        self._max_body_size = backend.config.max_body_size
        self._measured = backend.config.metrics

    def __call__(self, req: falcon.Request, resp: falcon.Response, name: str, action: str | None) -> None:
        arrived = arrival_time(req.env)
        allowed = ("POST",) if action else ("GET", "HEAD")
        if req.method not in allowed:
            raise falcon.HTTPMethodNotAllowed(
                list(allowed), description=f"{req.path} answers {' and '.join(allowed)} only"
            )
        if action:
            context = req.context
            context.arrived, context.endpoint, context.model = arrived, "predict", ""
            context.times = PhaseTimes() if self._measured else None
        path = resolve_name(self._root, name, None)
        metadata = json.loads(self._runner.run(arrived, self._pipeline.metadata, path, name))
        if not action:
            resp.content_type = falcon.MEDIA_JSON
            resp.data = json.dumps({"name": name, "ready": True}).encode()
            return
        req.context.model = path
        body = read_body(req, self._max_body_size, self._runner.deadline(arrived))
        instances = _instances(bytes(memoryview(body)))
        request, header_length = _v2_request(instances, metadata)
        response, json_length = self._runner.run_measured(
            arrived, req.context.times, on_event_loop(req.env), self._pipeline.infer, path, name, request, header_length
        )
        resp.content_type = falcon.MEDIA_JSON
        resp.data = json.dumps({"predictions": _predictions(response, json_length, len(instances))}).encode()


def _instances(body: bytes) -> list:
    try:
        document = json.loads(body)
    except ValueError as error:
        raise _invalid(f"the body is not JSON: {error}") from None
    instances = document.get("instances") if isinstance(document, dict) else None
    if not isinstance(instances, list) or not instances:
        raise _invalid('a V1 predict request is {"instances": [...]} with at least one instance')
    return instances


def _v2_request(instances: list, metadata: dict) -> tuple[RequestBody, int]:
    """The Open Inference Protocol request (JSON, then the inputs' binary data) of ``instances``."""
    inputs = {tensor["name"]: tensor["datatype"] for tensor in metadata["inputs"]}
    if not inputs:
        raise _invalid("the model takes no inputs, so V1's instances have nothing to fill")
    if all(isinstance(instance, dict) for instance in instances):
        for input_name in instances[0]:
            if input_name not in inputs:
                raise _invalid(
                    f"instance 0 names {input_name!r}, which is not among the model's inputs: {', '.join(inputs)}"
                )
        for i, instance in enumerate(instances):
            if instance.keys() != instances[0].keys():
                raise _invalid(
                    f"instance {i} names {', '.join(map(repr, instance))}, instance 0 "
                    f"{', '.join(map(repr, instances[0]))}: every instance names the same inputs"
                )
        rows = {input_name: [instance[input_name] for instance in instances] for input_name in instances[0]}
    else:
        # Rows of the first input; the others keep their defaults, or the model says which it lacks.
        rows = {next(iter(inputs)): instances}
    header, data = [], []
    for input_name, values in rows.items():
        datatype = inputs[input_name]
        array = _stacked(input_name, values, datatype)
        raw = to_binary(array, datatype)
        header.append(
            {
                "name": input_name,
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        data.append(raw)
    return binary_request({"inputs": header, "parameters": {"binary_data_output": True}}, data)


def _stacked(input_name: str, values: list, datatype: str) -> np.ndarray:
    """The rows of ``input_name`` as one array of the datatype its model gives it."""
    if datatype == "BYTES":
        dtype: object = np.object_
    elif datatype in NUMPY_TYPES:
        dtype = NUMPY_TYPES[datatype]
    else:
        raise _invalid(f"input {input_name!r} is {datatype}, which V1's JSON numbers cannot carry; use V2")
    try:
        array = np.array(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as error:
        raise _invalid(
            f"the instances of input {input_name!r} are not rows of one shape of {datatype}: {error}"
        ) from None
    if datatype == "BYTES" and not all(isinstance(item, str) for item in array.flat):
        raise _invalid(f"input {input_name!r} is BYTES: its instances must hold strings")
    return array


def _predictions(response: bytes, json_length: int, count: int) -> list:
    """The rows of the model's outputs, one prediction per instance."""
    document = json.loads(response[:json_length])
    raw = memoryview(response)[json_length:]
    outputs, offset = {}, 0
    for output in document["outputs"]:
        size = output["parameters"]["binary_data_size"]
        array = _output_array(raw[offset : offset + size], output["datatype"]).reshape(output["shape"])
        offset += size
        if array.ndim == 0 or array.shape[0] != count:
            raise RequestError(
                500,
                "Unsupported model output",
                f"output {output['name']!r} has shape {list(array.shape)}; V1 answers a row per instance, so its "
                f"first dimension must be the {count} instance(s)",
            )
        outputs[output["name"]] = array.tolist()
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    return [{name: rows[i] for name, rows in outputs.items()} for i in range(count)]


def _output_array(raw: memoryview, datatype: str) -> np.ndarray:
    """An output's elements as JSON can hold them: BYTES as text, BF16 as float32."""
    if datatype == "BF16":  # numpy has no bfloat16: a bfloat16 is the upper half of a float32
        return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
    array = from_binary(raw, datatype)
    if datatype == "BYTES":
        return np.array([item.decode(errors="replace") for item in array], dtype=object)
    return array


def add_v1_routes(app: falcon.App, backend: Backend) -> None:
    """Add KServe's V1 endpoints to ``app``."""
    app.add_route("/", LivenessResource())
    app.add_sink(ModelSink(backend), _MODEL_PATH)
