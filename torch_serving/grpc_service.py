"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``, with Triton's
configuration, statistics and repository extensions), on ``--grpc-port``.

A native server (``GrpcServer``, on grpc++ loaded only here) serves the port in each worker. It answers an inference call
in the form stock clients send (every input in ``raw_input_contents``) for a loaded model itself, on
its own threads and without the GIL, as the HTTP event loop answers a V2 request: at once for a quick
model, else queued to the model's scheduler and batched with whatever waits, HTTP requests included.
Everything else it hands to this module (``GrpcServer.take_calls``): the other methods, inference calls
it does not take (a model to load, typed ``contents``, parameters, a version), and the errors of those
it ran. Every call goes through what the REST endpoints use: the same model names, metadata,
admission, deadlines, model cache and metrics, and one codec (an inference call becomes the REST
protocol's binary form, a JSON header then the inputs' data, and its answer ``raw_output_contents``).
Errors carry the REST answer's detail under the status code Triton gives that HTTP status.

Each worker serves the port (``SO_REUSEPORT``), so calls spread over the workers as connections
do. The worker starts the service once its preload is done and stops it gracefully on SIGTERM.
"""

from __future__ import annotations

import enum
import importlib.util
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from torch_serving._native import GrpcCall, GrpcServer, ModelLoadError, ModelNotFoundError, PhaseTimes, RequestBody
from torch_serving.backend import Backend
from torch_serving.binary_tensors import NUMPY_TYPES, object_array, to_binary
from torch_serving.envelope import BUSY, RETRY_AFTER, busy_detail
from torch_serving.errors import RequestError, answer_for
from torch_serving.v2 import binary_request, model_statistics, resolve_name, server_metadata

__all__ = ["GrpcService"]

_log = logging.getLogger("torch_serving")


class _Code(enum.IntEnum):
    """The gRPC status codes this service answers."""

    OK = 0
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


# Triton's status code for each HTTP status the REST endpoints answer.
_CODES = {
    400: _Code.INVALID_ARGUMENT,
    404: _Code.NOT_FOUND,
    413: _Code.RESOURCE_EXHAUSTED,
    422: _Code.FAILED_PRECONDITION,
    500: _Code.INTERNAL,
    503: _Code.UNAVAILABLE,
    504: _Code.DEADLINE_EXCEEDED,
}
# The full names of the service's methods begin with this.
_SERVICE = "/inference.GRPCInferenceService/"

# Where each datatype's elements go in ``InferTensorContents`` (FP16 and BF16 travel raw only).
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# The most characters of an error's detail a status message carries.
_MAX_DETAIL = 4096
# The largest message grpc++ takes (its limits are C ints).
_MAX_MESSAGE = 2**31 - 1
# grpc++'s side of the service, a library of its own that only a worker serving gRPC loads (ext/grpc_transport.h).
_TRANSPORT_LIBRARY = importlib.util.find_spec("torch_serving._grpc_transport").origin


def _invalid(detail: str) -> RequestError:
    return RequestError(400, "Invalid request body", detail)


def _parameters(parameters: Any) -> dict[str, Any]:
    """An ``InferParameter`` map as the REST protocol's JSON ``parameters``."""
    return {
        key: getattr(value, value.WhichOneof("parameter_choice"))
        for key, value in parameters.items()
        if value.WhichOneof("parameter_choice")
    }


def _contents_data(tensor: Any) -> bytes:
    """The binary form of an input given by its typed ``contents``."""
    field = _CONTENTS.get(tensor.datatype)
    given = [descriptor.name for descriptor, _ in tensor.contents.ListFields()]
    if field is None:
        if given:
            raise _invalid(
                f"input {tensor.name!r} is {tensor.datatype}, which has no typed contents; send it in raw_input_contents"
            )
        return b""  # the native side names the unknown datatype
    if any(name != field for name in given):
        raise _invalid(
            f"input {tensor.name!r} is {tensor.datatype}: its contents go in {field}, not {', '.join(given)}"
        )
    values = getattr(tensor.contents, field)
    if tensor.datatype == "BYTES":
        return to_binary(object_array(list(values)), "BYTES")
    try:
        return to_binary(np.array(values, dtype=NUMPY_TYPES[tensor.datatype]), tensor.datatype)
    except OverflowError:
        raise _invalid(f"input {tensor.name!r} holds a value out of {tensor.datatype}'s range") from None


def _rest_request(request: Any) -> tuple[RequestBody, int]:
    """``request`` in the REST protocol's binary form: the JSON header, then the inputs' data."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise _invalid(
            f"the request has {len(request.inputs)} input(s) and {len(raw)} raw_input_contents: "
            "give one per input, or none"
        )
    inputs, data = [], []
    for i, tensor in enumerate(request.inputs):
        if raw and tensor.HasField("contents"):
            raise _invalid(f"input {tensor.name!r} has both contents and raw_input_contents; give one")
        chunk = raw[i] if raw else _contents_data(tensor)
        parameters = _parameters(tensor.parameters) | {"binary_data_size": len(chunk)}
        inputs.append(
            {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype, "parameters": parameters}
        )
        data.append(chunk)
    document: dict[str, Any] = {"inputs": inputs, "parameters": _parameters(request.parameters)}
    document["parameters"]["binary_data_output"] = True
    if request.id:
        document["id"] = request.id
    if request.outputs:
        document["outputs"] = [
            {"name": output.name, "parameters": _parameters(output.parameters) | {"binary_data": True}}
            for output in request.outputs
        ]
    return binary_request(document, data)


def _infer_response(pb: ModuleType, response: bytes, json_length: int) -> Any:
    """The REST protocol's binary answer as a ``ModelInferResponse`` with ``raw_output_contents``."""
    document = json.loads(response[:json_length])
    reply = pb.ModelInferResponse(
        model_name=document["model_name"], model_version=document["model_version"], id=document.get("id", "")
    )
    data = memoryview(response)[json_length:]
    offset = 0
    for output in document["outputs"]:
        size = output["parameters"]["binary_data_size"]
        reply.outputs.add(name=output["name"], datatype=output["datatype"], shape=output["shape"])
        reply.raw_output_contents.append(bytes(data[offset : offset + size]))
        offset += size
    return reply


def _status(error: Exception) -> tuple[int, _Code, str]:
    """The HTTP status, gRPC status code and detail of ``error``'s REST answer."""
    answer = answer_for(error)
    if answer is None:
        _log.error("unhandled error while answering a gRPC call", exc_info=error)
        return 500, _Code.INTERNAL, "an unexpected error occurred; the server log has the details"
    detail = answer.detail
    if len(detail) > _MAX_DETAIL:
        # A status message travels in a header, which clients refuse past 8-16 KiB (they would see
        # RESOURCE_EXHAUSTED instead): one that echoes a huge name is cut.
        detail = f"{detail[:_MAX_DETAIL]}... ({len(detail)} characters in all)"
    return answer.status, _CODES.get(answer.status, _Code.UNKNOWN), detail


class _Servicer:
    """The calls the native server hands over (``take``): each method's answer as a message, or an error
    answered as REST answers it, as a status code and detail. The quick methods are answered where they
    are taken; those that may take long (a model that loads, a forward) on threads, each admitted as an
    HTTP request is.

    Args:
        pb: the service's generated messages (``inference_pb2``).
        threads: where calls that may take long run.
    """

    def __init__(self, pb: ModuleType, threads: ThreadPoolExecutor, backend: Backend) -> None:
        self._pb = pb
        self._threads = threads
        self._backend = backend
        self._pipeline = backend.pipeline
        self._runner = backend.runner
        self._root = backend.config.model_root
        self._measured = backend.config.metrics
        self._preload = backend.preload
        self._repository = backend.repository
        self._metrics = backend.metrics
        self._admission = backend.admission
        # Each method: its request message, what answers it, and whether it runs on a thread.
        self._methods: dict[str, tuple[Any, Callable[[Any, GrpcCall], Any], bool]] = {
            f"{_SERVICE}{name}": (getattr(pb, request), getattr(self, f"_{name}"), on_thread)
            for name, request, on_thread in (
                ("ServerLive", "ServerLiveRequest", False),
                ("ServerReady", "ServerReadyRequest", False),
                ("ServerMetadata", "ServerMetadataRequest", False),
                ("ModelReady", "ModelReadyRequest", True),
                ("ModelMetadata", "ModelMetadataRequest", True),
                ("ModelConfig", "ModelConfigRequest", True),
                ("ModelStatistics", "ModelStatisticsRequest", True),
                ("RepositoryIndex", "RepositoryIndexRequest", True),
                ("RepositoryModelLoad", "RepositoryModelLoadRequest", True),
                ("RepositoryModelUnload", "RepositoryModelUnloadRequest", True),
                ("ModelInfer", "ModelInferRequest", True),
            )
        }

    def take(self, call: GrpcCall) -> None:
        """Answer ``call``, or hand it to a thread that will; or record the metrics of an inference call the
        native server answered or the status of one it ran that failed."""
        if call.model:  # an inference call the native server ran
            self._ran_natively(call)
            return
        method = self._methods.get(call.method)
        if method is None:
            call.finish(_Code.UNIMPLEMENTED, f"unknown method {call.method}", b"")
            return
        request_type, answer, on_thread = method
        if not on_thread:
            self._answer(call, request_type, answer)
            return
        # Counted as one of the requests the worker holds (HTTP's count too), or refused at once, as over
        # HTTP: queued for a thread, it would wait unbounded before the native runner could refuse it.
        if not self._admission.enter():
            self._fail(call, RequestError(503, BUSY, busy_detail(self._admission.limit), headers=RETRY_AFTER))
            return
        try:
            self._threads.submit(self._answer_admitted, call, request_type, answer)
        except RuntimeError:  # stopping: no thread takes it
            self._admission.leave()
            call.finish(_Code.UNAVAILABLE, "the server is stopping", b"")

    def _answer_admitted(self, call: GrpcCall, request_type: Any, answer: Callable[[Any, GrpcCall], Any]) -> None:
        try:
            self._answer(call, request_type, answer)
        finally:
            self._admission.leave()

    def _answer(self, call: GrpcCall, request_type: Any, answer: Callable[[Any, GrpcCall], Any]) -> None:
        try:
            request = request_type.FromString(call.request)
        except DecodeError:
            call.finish(_Code.INVALID_ARGUMENT, f"the request is not a valid {request_type.DESCRIPTOR.name}", b"")
            return
        try:
            reply = answer(request, call)
        except Exception as error:
            self._fail(call, error)
            return
        call.finish(_Code.OK, "", reply.SerializeToString())

    @staticmethod
    def _fail(call: GrpcCall, error: Exception) -> int:
        """End ``call`` with the status of ``error``'s REST answer; return that answer's HTTP status."""
        status, code, detail = _status(error)
        call.finish(code, detail, b"")
        return status

    def _ran_natively(self, call: GrpcCall) -> None:
        times = PhaseTimes() if self._measured else None
        status = 200
        try:
            self._runner.deferred_answer(call.arrived, call, times, call.client_deadline)
        except Exception as error:
            status = self._fail(call, error)
        if self._metrics is not None:
            self._metrics.observe(call.model, "infer", str(status), times, call.elapsed, call.size)

    def _metadata(self, name: str, version: str) -> bytes:
        path = resolve_name(self._root, name, version or None)
        return self._runner.run(time.monotonic(), self._pipeline.metadata, path, name)

    def _ServerLive(self, request: Any, call: GrpcCall) -> Any:
        return self._pb.ServerLiveResponse(live=True)

    def _ServerReady(self, request: Any, call: GrpcCall) -> Any:
        return self._pb.ServerReadyResponse(ready=self._preload.done)

    def _ServerMetadata(self, request: Any, call: GrpcCall) -> Any:
        return json_format.ParseDict(server_metadata(), self._pb.ServerMetadataResponse())

    def _ModelReady(self, request: Any, call: GrpcCall) -> Any:
        # As Triton answers: a model that is not there, or does not load, is not ready; no error.
        try:
            self._metadata(request.name, request.version)
        except (ModelNotFoundError, ModelLoadError):
            return self._pb.ModelReadyResponse(ready=False)
        return self._pb.ModelReadyResponse(ready=True)

    def _ModelMetadata(self, request: Any, call: GrpcCall) -> Any:
        return json_format.Parse(self._metadata(request.name, request.version), self._pb.ModelMetadataResponse())

    def _ModelConfig(self, request: Any, call: GrpcCall) -> Any:
        path = resolve_name(self._root, request.name, request.version or None)
        config = self._runner.run(time.monotonic(), self._pipeline.config, path, request.name)
        return self._pb.ModelConfigResponse(config=json_format.Parse(config, self._pb.ModelConfig()))

    def _ModelStatistics(self, request: Any, call: GrpcCall) -> Any:
        path = resolve_name(self._root, request.name, request.version or None) if request.name else None
        return json_format.ParseDict(
            {"model_stats": model_statistics(self._backend, path)}, self._pb.ModelStatisticsResponse()
        )

    def _RepositoryIndex(self, request: Any, call: GrpcCall) -> Any:
        return json_format.ParseDict(
            {"models": self._repository.index(request.ready)}, self._pb.RepositoryIndexResponse()
        )

    def _RepositoryModelLoad(self, request: Any, call: GrpcCall) -> Any:
        # Triton's parameters (a configuration to load the model with) are optional; over REST too they
        # change nothing, since a model's configuration is its file's.
        self._repository.load(resolve_name(self._root, request.model_name, None))
        return self._pb.RepositoryModelLoadResponse()

    def _RepositoryModelUnload(self, request: Any, call: GrpcCall) -> Any:
        self._repository.unload(resolve_name(self._root, request.model_name, None))
        return self._pb.RepositoryModelUnloadResponse()

    def _ModelInfer(self, request: Any, call: GrpcCall) -> Any:
        """An inference call the native server did not take: run on this thread."""
        times = PhaseTimes() if self._measured else None
        model, status, size = "", 500, 0
        try:
            version = request.model_version or None
            try:
                body, header_length = _rest_request(request)
            finally:
                # As over REST: a model that is not there is said first, and one that is counts the error.
                model = resolve_name(self._root, request.model_name, version)
            size = len(body)
            response, json_length = self._runner.run_measured(
                call.arrived,
                times,
                False,
                self._pipeline.infer,
                model,
                request.model_name,
                body,
                header_length,
                deadline=call.client_deadline,
            )
            reply = _infer_response(self._pb, response, json_length)
            status = 200
            return reply
        except Exception as error:
            answer = answer_for(error)
            status = answer.status if answer else 500
            raise
        finally:
            # Measured as REST measures it: from the model being known, by the HTTP status it answers.
            if self._metrics is not None and model:
                self._metrics.observe(model, "infer", str(status), times, time.monotonic() - call.arrived, size)


class GrpcService:
    """The gRPC server of one worker, on ``config.grpc_port``, sharing the worker's model cache: the native
    ``GrpcServer``, and a thread of its own taking the calls it hands to Python.

    Args:
        backend: what the worker's endpoints answer from.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._config = backend.config
        self._server: GrpcServer | None = None
        self._taker: threading.Thread | None = None
        self._threads: ThreadPoolExecutor | None = None

    @property
    def address(self) -> str:
        """Where the service listens, as gRPC writes it."""
        host = self._config.host
        return f"{f'[{host}]' if ':' in host else host}:{self._config.grpc_port}"

    def start(self) -> None:
        """Listen on the gRPC port (beside this worker's siblings) and serve.

        Raises:
            RuntimeError: the port could not be bound.
        """
        # Imported here, in the worker: the generated module registers the protocol's protobuf package,
        # `inference`, which KServe's SDK and tritonclient.grpc register too; a process that builds the
        # application beside them (a test, a user's script) never loads ours.
        from torch_serving._proto import inference_pb2

        config, backend = self._config, self._backend
        self._server = GrpcServer(
            backend.pipeline,
            backend.admission,
            _TRANSPORT_LIBRARY,
            self.address,
            min(config.max_body_size, _MAX_MESSAGE),
            config.timeout,
            config.metrics,
        )
        # As many calls on threads as the worker admits over HTTP (the servicer refuses more).
        self._threads = ThreadPoolExecutor(config.request_limit, thread_name_prefix="grpc")
        servicer = _Servicer(inference_pb2, self._threads, backend)
        self._taker = threading.Thread(target=self._take_calls, args=(servicer,), name="grpc", daemon=True)
        self._taker.start()

    def _take_calls(self, servicer: _Servicer) -> None:
        while calls := self._server.take_calls():
            for call in calls:
                try:
                    servicer.take(call)
                except Exception:
                    _log.exception("unhandled error while taking a gRPC call")
                    call.finish(_Code.INTERNAL, "an unexpected error occurred; the server log has the details", b"")

    def stop(self, grace: float) -> threading.Event:
        """Refuse new calls and let those under way finish for up to ``grace`` seconds; return the
        event set once they have (at once when the service never started)."""
        stopped = threading.Event()
        if self._server is None:
            stopped.set()
            return stopped

        def stop() -> None:
            try:
                self._server.stop(grace)
                self._taker.join()
                self._threads.shutdown()
            finally:
                stopped.set()

        threading.Thread(target=stop, name="grpc-stop", daemon=True).start()
        return stopped
