"""Native core of torch-serving: codec, model cache and request pipeline."""

from typing import Any, Literal, overload

from typing_extensions import Buffer

class ServeError(Exception):
    """Base of every error the native core raises."""

class DecodeError(ServeError, ValueError):
    """The request body is not valid JSON or breaks a rule of the typed format."""

class SignatureError(ServeError):
    """The arguments do not fit forward's signature."""

class ExecutionError(ServeError):
    """The model raised while running."""

class ModelNotFoundError(ServeError):
    """The model file does not exist."""

class ModelLoadError(ServeError):
    """The file is not a loadable TorchScript module."""

class ModelAccessError(ServeError):
    """The model file exists, but the server cannot read it."""

class ResourceError(ServeError):
    """The server ran out of memory or file descriptors for the request."""

class UnknownOutputError(ServeError):
    """A requested output is not among the model's outputs."""

class DeadlineError(ServeError):
    """The call did not finish within its timeout; it runs on without its caller."""

class EncodeError(ServeError):
    """The model returned a value the protocol cannot encode."""

class PhaseTimes:
    """Where one request's time went, in seconds; filled by ``Pipeline.serve`` and ``Pipeline.infer``."""

    def __init__(self) -> None: ...
    @property
    def queue(self) -> float:
        """Waiting for an executor thread."""
    @property
    def decode(self) -> float:
        """Decoding the body."""
    @property
    def forward(self) -> float:
        """Fetching (loading if need be) and running the model."""
    @property
    def encode(self) -> float:
        """Encoding the answer."""

class Executor:
    """The native threads calls run on, each within its caller's deadline."""

    def __init__(self, threads: int, admission: Admission | None = None) -> None:
        """Starts ``threads`` threads; a call abandoned at its deadline is counted in ``admission`` until it ends."""

class Completions:
    """The keys of requests queued by Pipeline.submit_serve or submit_infer whose answers are ready, for an event loop to poll."""

    def __init__(self) -> None: ...
    def fileno(self) -> int:
        """An eventfd, readable while keys wait to be taken."""
    def take(self) -> list[int]:
        """Return the keys of the answers ready since the last take, oldest first."""

class Deferred:
    """A request queued by Pipeline.submit_serve or submit_infer."""

    def answer(self, times: PhaseTimes | None = None) -> bytes:
        """Return the answer, or raise what Pipeline.serve (or infer) would have raised, once Completions gave
        this request's key; record its phases in ``times``."""
    @property
    def json_length(self) -> int:
        """Of an inference answer taken (Pipeline.submit_infer), the length of its JSON part."""

class GrpcCall:
    """A gRPC call the native server hands to Python (GrpcServer.take_calls): one to answer, an inference call it
    answered (for metrics), or one it ran that failed."""

    @property
    def method(self) -> str:
        """The method's full name."""
    @property
    def request(self) -> bytes:
        """The serialized request."""
    @property
    def arrived(self) -> float:
        """When it arrived, in time.monotonic()'s seconds."""
    @property
    def client_deadline(self) -> float | None:
        """The client's deadline in time.monotonic()'s seconds, or None."""
    @property
    def model(self) -> str:
        """Of an inference call run natively: its model file, relative to the root."""
    @property
    def size(self) -> int:
        """Of an inference call run natively: its body's size."""
    @property
    def answered(self) -> bool:
        """Whether the native server answered it."""
    @property
    def elapsed(self) -> float:
        """Of an inference call run natively: the seconds from its arrival to its end."""
    def answer(self, times: PhaseTimes | None = None) -> None:
        """Of an inference call run natively, as Deferred.answer: record its phases in ``times`` and raise what
        Pipeline.infer would have raised, if it failed."""
    def finish(self, code: int, message: str, reply: bytes) -> None:
        """End the call with the gRPC status ``code`` (0: ``reply`` is the serialized reply) and ``message``;
        only the first finish counts."""

class GrpcServer:
    """A worker's gRPC server (grpc++), answering inference calls for loaded models natively and handing the rest
    to Python."""

    def __init__(
        self,
        pipeline: Pipeline,
        admission: Admission,
        transport_library: str,
        address: str,
        max_receive: int,
        timeout: float,
        measured: bool,
    ) -> None:
        """Listen on ``address`` (SO_REUSEPORT) through the grpc++ library ``transport_library`` and serve; raises
        RuntimeError when the library cannot be loaded or the address bound."""
    def take_calls(self) -> list[GrpcCall]:
        """Wait for calls for Python and return them, oldest first; [] once stopped and none is left."""
    def stop(self, grace: float) -> None:
        """Refuse new calls, let those under way finish for up to ``grace`` seconds, cancel the rest; return once
        every call has ended."""

class RequestBody:
    """A request body in native memory with the parser's padding after it; a writable buffer to receive into.

    ``RequestBody(size)`` holds ``size`` bytes whose content is undefined until written;
    ``RequestBody(data)`` holds a copy of the bytes-like ``data``. Wherever a body is expected, ``bytes`` is
    copied into one.
    """

    @overload
    def __init__(self, size: int) -> None: ...
    @overload
    def __init__(self, data: Buffer) -> None: ...
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...

class Admission:
    """Which requests a worker holds (HTTP and gRPC together), and which its event loop answers itself."""

    def __init__(self, pipeline: Pipeline, limit: int) -> None: ...
    @property
    def limit(self) -> int:
        """Requests the worker holds at most."""
    def enter(self) -> bool:
        """Count one more request and return True, or return False when the worker holds its limit."""
    def leave(self) -> None:
        """Stop counting a request that entered."""
    def event_loop_route(
        self, method: str, target: str, body_size: int
    ) -> tuple[str, str, Literal["answer", "serve", "infer"]] | None:
        """How the event loop takes the request ``method target`` with a body of ``body_size`` bytes without a
        thread: ``(model, name, work)``, the model file (relative to the root), the model's name in its
        errors, and ``work``: "answer" (at once: its model loaded, unchanged, quick and within its time
        budget, its body small), "serve" or "infer" (queued with Pipeline.submit_serve or submit_infer: its
        model loaded and unchanged, its body small, its target naming the model and nothing else). None
        when it takes a thread. The target is read as written."""

class Pipeline:
    """The native request pipeline (/serve, and the Open Inference Protocol over REST and gRPC) with its LRU
    model cache; safe to share between threads."""

    def __init__(
        self,
        model_root: str,
        capacity: int,
        buffer: int,
        device: str = "cpu",
        max_model_size: int = 0,
        max_image_pixels: int = 89_478_485,
        instances: int = 1,
        batching_instances: int = 1,
    ) -> None: ...
    def serve(
        self,
        relative: str,
        name: str,
        body: RequestBody | bytes,
        invalidation_prob: float = 0.0,
        executor: Executor | None = None,
        timeout: float = ...,
        times: PhaseTimes | None = None,
        event_loop: Admission | None = None,
    ) -> bytes:
        """Answer one request for the model file ``relative`` to the root; the GIL is released throughout
        (but see ``event_loop``).

        With ``executor``, the call runs on its threads and raises DeadlineError after ``timeout`` seconds
        (the call runs on); without, it runs in the calling thread.
        With ``event_loop`` (the worker's admission), it runs in the calling thread at once, even when every
        thread of the executor is taken, and keeps the GIL (handing it over and back costs more than so
        short a call): for an event loop (a worker's, or the gRPC service's), with requests
        ``Admission.event_loop_route`` answers at once, whose cached model then serves without its
        file being opened again; the
        admission times the call against the loop's budget.
        """
    def submit_serve(
        self,
        relative: str,
        name: str,
        body: RequestBody | bytes,
        timeout: float,
        completions: Completions,
        key: int,
    ) -> Deferred:
        """Queue a /serve request for a loaded model without waiting for it
        (Admission.event_loop_route): ``completions`` gets ``key`` once the returned Deferred holds
        its answer."""
    def submit_infer(
        self,
        relative: str,
        name: str,
        body: RequestBody | bytes,
        header_length: int,
        timeout: float,
        completions: Completions,
        key: int,
    ) -> Deferred:
        """Queue a V2 inference request for a loaded model as submit_serve does; the Deferred's answer is
        infer's response, and its json_length the length of that response's JSON part."""
    def infer(
        self,
        relative: str,
        name: str,
        body: RequestBody | bytes,
        header_length: int = -1,
        executor: Executor | None = None,
        timeout: float = ...,
        times: PhaseTimes | None = None,
        event_loop: Admission | None = None,
    ) -> tuple[bytes, int]:
        """Answer one V2 inference request; return the response and the length of its JSON part.

        The first ``header_length`` bytes of ``body`` are the request JSON (all of it when negative), the
        rest the inputs' binary data. The GIL is released throughout; ``executor``, ``timeout`` and
        ``event_loop`` work as for ``serve``.
        """
    def metadata(self, relative: str, name: str, executor: Executor | None = None, timeout: float = ...) -> bytes:
        """Return the V2 metadata of the model file ``relative`` as JSON, loading it if needed."""
    def cached_paths(self) -> list[str]:
        """Return the cached model paths (relative to the root), most recently used first."""
    def config(self, relative: str, name: str, executor: Executor | None = None, timeout: float = ...) -> bytes:
        """Return the model configuration (Triton's extension) of the model file ``relative`` as JSON."""
    def stats(self) -> dict[str, Any]:
        """Return the cache's counters (hits, loads, failed_loads, evictions) and, under ``models``,
        each loaded model's ``requests``, forward ``executions``, ``max_batch_size``, ``instances``, the most
        forwards that ran at once (``peak_running``) and, with batching, the milliseconds a forward is estimated
        to take by its rows (``forward_ms_by_rows``: the least of its recent forwards of that size, each size that
        has run); under ``failed``, the error of each model whose last load failed."""
    def execution_totals(self) -> dict[str, int]:
        """Return, by model file, the forward executions of every model loaded from it, dropped ones included."""
    def unload(self, relative: str) -> bool:
        """Drop the model file ``relative`` from the cache; return whether it was cached."""
    def clear(self) -> None:
        """Drop every cached model."""

def decode(body: Buffer, max_image_pixels: int = 89_478_485) -> list[Any]:
    """Decode a /serve request body into forward's positional arguments."""

def encode(value: Any) -> bytes:
    """Encode a value as the protocol's JSON result."""
