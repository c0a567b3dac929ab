"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``, with Triton's
configuration, statistics and repository extensions), on ``--grpc-port``.

Every call goes through what the REST endpoints use: the same model names, metadata, admission,
deadlines, model cache, event-loop queueing and batching, and metrics. ``ModelInfer`` turns its
request into the REST protocol's binary form (a JSON header, then the inputs' data) for the native
inference path and its answer back into ``raw_output_contents``: one codec for both transports.
Errors carry the REST answer's detail under the status code Triton gives that HTTP status.

Each worker serves the port (``SO_REUSEPORT``), so calls spread over the workers as connections
do. The worker starts the service once its preload is done and stops it gracefully on SIGTERM.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, NoReturn, TypeVar

import grpc
import numpy as np
from google.protobuf import json_format

from torch_serving._native import ModelLoadError, ModelNotFoundError, PhaseTimes, RequestBody
from torch_serving.backend import Backend
from torch_serving.binary_tensors import NUMPY_TYPES, object_array, to_binary
from torch_serving.envelope import BUSY, RETRY_AFTER, busy_detail
from torch_serving.errors import RequestError, answer_for
from torch_serving.event_loop_queue import EventLoopQueue, Queueable
from torch_serving.shared import MODEL_VERSION
from torch_serving.v2 import binary_request, model_statistics, resolve_name, server_metadata

__all__ = ["GrpcService"]

_log = logging.getLogger("torch_serving")
T = TypeVar("T")

# Triton's status code for each HTTP status the REST endpoints answer.
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.FAILED_PRECONDITION,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
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
# The largest request (the REST form: JSON and data) a quick model answers in the gRPC loop: its data
# and its answer's are copied there, which for a larger one would hold up the loop's other calls.
_LOOP_BODY_BYTES = 1024 * 1024
# How long before the deadline this server computed a call's cancellation still comes from the client's
# deadline: a loaded host takes tens of milliseconds to reach the handler, which then counts from later.
_DEADLINE_SLACK_S = 0.25


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


def _answering(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """``method``, ending its call with the status code and detail of the REST answer to any error."""

    @functools.wraps(method)
    async def answer(self, request, context: grpc.aio.ServicerContext) -> T:
        try:
            return await method(self, request, context)
        except Exception as error:
            await _abort(context, error)

    return answer


async def _abort(context: grpc.aio.ServicerContext, error: Exception) -> NoReturn:
    """End the call with the status code and detail of ``error``'s REST answer."""
    answer = answer_for(error)
    if answer is None:
        _log.exception("unhandled error while answering a gRPC call")
        await context.abort(grpc.StatusCode.INTERNAL, "an unexpected error occurred; the server log has the details")
    detail = answer.detail
    if len(detail) > _MAX_DETAIL:
        # A status message travels in a header, which clients refuse past 8-16 KiB (they would see
        # RESOURCE_EXHAUSTED instead): one that echoes a huge name is cut.
        detail = f"{detail[:_MAX_DETAIL]}... ({len(detail)} characters in all)"
    await context.abort(_CODES.get(answer.status, grpc.StatusCode.UNKNOWN), detail)


class _Servicer:
    """The service's methods, run by the worker's gRPC event loop, as the HTTP event loop runs requests: a
    quick inference call where it is, one for another loaded model queued without a thread (its
    scheduler runs it, and the loop answers it once its ``EventLoopQueue`` says so), what may take long
    otherwise (a model that loads, a large request) on threads; each answers an error the way REST does,
    as a status code and detail.

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
        # Calls queued without a thread (``_queued``), and those waiting for their answer, by key.
        self._queue = EventLoopQueue(backend.pipeline, backend.runner, backend.config.max_body_size)
        self._waiting: dict[int, asyncio.Future] = {}

    def fileno(self) -> int:
        """A file descriptor readable while queued calls have been answered (``answer_ready``)."""
        return self._queue.fileno()

    def _enter(self) -> None:
        """Count a call as one of the requests the worker holds (HTTP's count too), or refuse it at once,
        as over HTTP: queued for a thread, it would wait unbounded before the native runner could refuse
        it. Whoever enters leaves ``self._admission`` once the call is done (a plain try/finally: a
        context manager would cost a quick call a few microseconds)."""
        if not self._admission.enter():
            raise RequestError(503, BUSY, busy_detail(self._admission.limit), headers=RETRY_AFTER)

    async def _on_thread(self, fn: Callable[..., T], *args: object) -> T:
        self._enter()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)
        finally:
            self._admission.leave()

    async def _queued(
        self,
        arrived: float,
        times: PhaseTimes | None,
        deadline: float | None,
        model: str,
        request: Any,
        body: RequestBody,
        header_length: int,
    ) -> tuple[bytes, int]:
        """The answer to an inference call for a loaded model that the loop does not answer at once, queued
        without a thread (``EventLoopQueue``, as the HTTP worker's loop queues one): the model's scheduler
        runs it, batched with whatever waits, HTTP requests included, and answers it at the deadline (the
        client's, when sooner) should its forward not be done."""
        self._enter()
        try:
            queueable = Queueable(model, request.model_name, header_length)
            key, deferred = self._queue.submit(queueable, body, arrived, deadline)
            # Its key is taken (answer_ready) only once this coroutine waits, even if it is answered at once.
            answered = self._waiting[key] = asyncio.get_running_loop().create_future()
            await answered
            return self._runner.deferred_answer(arrived, deferred, times, deadline), deferred.json_length
        finally:
            self._admission.leave()

    def answer_ready(self) -> None:
        """Wake the calls whose queued request has been answered (``EventLoopQueue.ready``)."""
        for key in self._queue.ready():
            answered = self._waiting.pop(key)
            if not answered.done():  # else the client cancelled the call
                answered.set_result(None)

    def _metadata(self, name: str, version: str) -> bytes:
        path = resolve_name(self._root, name, version or None)
        return self._runner.run(time.monotonic(), self._pipeline.metadata, path, name)

    @_answering
    async def ServerLive(self, request, context):
        return self._pb.ServerLiveResponse(live=True)

    @_answering
    async def ServerReady(self, request, context):
        return self._pb.ServerReadyResponse(ready=self._preload.done)

    @_answering
    async def ServerMetadata(self, request, context):
        return json_format.ParseDict(server_metadata(), self._pb.ServerMetadataResponse())

    @_answering
    async def ModelReady(self, request, context):
        # As Triton answers: a model that is not there, or does not load, is not ready; no error.
        try:
            await self._on_thread(self._metadata, request.name, request.version)
        except (ModelNotFoundError, ModelLoadError):
            return self._pb.ModelReadyResponse(ready=False)
        return self._pb.ModelReadyResponse(ready=True)

    @_answering
    async def ModelMetadata(self, request, context):
        metadata = await self._on_thread(self._metadata, request.name, request.version)
        return json_format.Parse(metadata, self._pb.ModelMetadataResponse())

    @_answering
    async def ModelConfig(self, request, context):
        def config() -> bytes:
            path = resolve_name(self._root, request.name, request.version or None)
            return self._runner.run(time.monotonic(), self._pipeline.config, path, request.name)

        return self._pb.ModelConfigResponse(
            config=json_format.Parse(await self._on_thread(config), self._pb.ModelConfig())
        )

    @_answering
    async def ModelStatistics(self, request, context):
        def statistics() -> list[dict]:
            path = resolve_name(self._root, request.name, request.version or None) if request.name else None
            return model_statistics(self._backend, path)

        return json_format.ParseDict(
            {"model_stats": await self._on_thread(statistics)}, self._pb.ModelStatisticsResponse()
        )

    @_answering
    async def RepositoryIndex(self, request, context):
        index = await self._on_thread(self._repository.index, request.ready)
        return json_format.ParseDict({"models": index}, self._pb.RepositoryIndexResponse())

    @_answering
    async def RepositoryModelLoad(self, request, context):
        # Triton's parameters (a configuration to load the model with) are optional; over REST too they
        # change nothing, since a model's configuration is its file's.
        path = resolve_name(self._root, request.model_name, None)
        await self._on_thread(self._repository.load, path)
        return self._pb.RepositoryModelLoadResponse()

    @_answering
    async def RepositoryModelUnload(self, request, context):
        path = resolve_name(self._root, request.model_name, None)
        await self._on_thread(self._repository.unload, path)
        return self._pb.RepositoryModelUnloadResponse()

    @_answering
    async def ModelInfer(self, request, context):
        arrived = time.monotonic()
        remaining = context.time_remaining()
        times = PhaseTimes() if self._measured else None
        model, status, size, deadline = "", 500, 0, None
        try:
            version = request.model_version or None
            try:
                body, header_length = _rest_request(request)
            except RequestError:
                # As over REST: a model that is not there is said first, and one that is counts the error.
                model = resolve_name(self._root, request.model_name, version)
                raise
            size = len(body)
            route = None
            if version in (None, MODEL_VERSION) and size <= _LOOP_BODY_BYTES:
                # The native side parses the JSON part and takes the inputs' data as it is: a quick model
                # answers an image-sized tensor here too.
                route = self._admission.event_loop_route_named(request.model_name, header_length)
            in_event_loop = route is not None and route[2] == "answer"
            model = route[0] if route is not None else resolve_name(self._root, request.model_name, version)
            deadline = None if remaining is None else arrived + remaining
            call = (arrived, times, in_event_loop, self._pipeline.infer, model, request.model_name, body, header_length)
            if in_event_loop:
                self._enter()
                try:
                    response, json_length = self._runner.run_measured(*call, deadline=deadline)
                finally:
                    self._admission.leave()
            elif route is not None:
                queued = (arrived, times, deadline, model, request, body, header_length)
                response, json_length = await self._queued(*queued)
            else:
                run = functools.partial(self._runner.run_measured, *call, deadline=deadline)
                response, json_length = await self._on_thread(run)
            reply = _infer_response(self._pb, response, json_length)
            status = 200
            return reply
        except Exception as error:
            answer = answer_for(error)
            status = answer.status if answer else 500
            raise
        except asyncio.CancelledError:
            # The client cancels the call at its deadline, which reaches the server before the native
            # call gives up at the same deadline as the server computed it (later by the time the call
            # took to reach this handler): either way the server abandoned the work at that deadline.
            if deadline is not None and time.monotonic() >= deadline - _DEADLINE_SLACK_S:
                status = 504
            raise
        finally:
            # Measured as REST measures it: from the model being known, by the HTTP status it answers.
            if self._metrics is not None and model:
                self._metrics.observe(model, "infer", str(status), times, time.monotonic() - arrived, size)


class GrpcService:
    """The gRPC server of one worker, on ``config.grpc_port``, sharing the worker's model cache: a
    ``grpc.aio`` server whose event loop runs in a thread of its own.

    Args:
        backend: what the worker's endpoints answer from.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._config = backend.config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._grpc_server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        """Where the service listens, as gRPC writes it."""
        host = self._config.host
        return f"{f'[{host}]' if ':' in host else host}:{self._config.grpc_port}"

    def start(self) -> None:
        """Listen on the gRPC port (beside this worker's siblings) and serve, from a thread of its own.

        Raises:
            RuntimeError: the port could not be bound.
        """
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="grpc", daemon=True).start()
        try:
            self._grpc_server = asyncio.run_coroutine_threadsafe(self._serve(), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            raise
        self._loop = loop

    async def _serve(self) -> grpc.aio.Server:
        # Imported here, in the worker: the generated modules register the protocol's protobuf package,
        # `inference`, which KServe's SDK and tritonclient.grpc register too; a process that builds the
        # application beside them (a test, a user's script) never loads ours.
        from torch_serving._proto import inference_pb2, inference_pb2_grpc

        config = self._config
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.max_receive_message_length", config.max_body_size),
                ("grpc.max_send_message_length", -1),
            ]
        )
        # As many calls on threads as the worker admits over HTTP (the servicer refuses more).
        threads = ThreadPoolExecutor(config.request_limit, thread_name_prefix="grpc")
        servicer = _Servicer(inference_pb2, threads, self._backend)
        inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        asyncio.get_running_loop().add_reader(servicer.fileno(), servicer.answer_ready)
        server.add_insecure_port(self.address)
        await server.start()
        return server

    def stop(self, grace: float) -> threading.Event:
        """Refuse new calls and let those under way finish for up to ``grace`` seconds; return the
        event set once they have (at once when the service never started)."""
        stopped = threading.Event()
        if self._loop is None or self._grpc_server is None:
            stopped.set()
            return stopped

        async def stop() -> None:
            try:
                await self._grpc_server.stop(grace)
            finally:
                stopped.set()

        asyncio.run_coroutine_threadsafe(stop(), self._loop)
        return stopped
