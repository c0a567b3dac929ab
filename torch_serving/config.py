"""Server settings, from the command line or TORCH_SERVING_* environment variables."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

__all__ = ["Config", "ConfigError", "parse_size"]

ENV_PREFIX = "TORCH_SERVING_"

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE_PATTERN = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")
_DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?)$")
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_SWITCH = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}
_TEXT_FIELDS = {"host": str, "device": str.lower, "log_level": str.lower}


class ConfigError(ValueError):
    """A setting has a value the server cannot run with."""


def parse_size(text: str) -> int:
    """Parse a byte count such as ``1048576``, ``64MiB`` or ``10MB``.

    Args:
        text: digits, optionally followed by B, kB, MB, GB, KiB, MiB or GiB.

    Returns:
        The number of bytes.

    Raises:
        ConfigError: the text is not a size.
    """
    match = _SIZE_PATTERN.match(text)
    unit = match.group(2).lower() if match else None
    if unit not in _SIZE_UNITS:
        raise ConfigError(f"expected a size like 1048576, 64MiB or 10MB, got {text!r}")
    return int(match.group(1)) * _SIZE_UNITS[unit]


def _positive(name: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything the server needs to run.

    Attributes:
        host: interface to listen on.
        port: TCP port to listen on.
        grpc_port: TCP port of the Open Inference Protocol over gRPC, on the
            same host; 0 for none.
        model_root: folder that servable identifiers are relative to.
        model_capacity: models a worker keeps loaded after an eviction.
        buffer_size: extra models a worker may hold before it evicts.
        workers: gunicorn worker processes.
        threads: request threads per worker.
        torch_threads: intra-op threads torch uses per worker.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        max_body_size: largest request body accepted, in bytes.
        max_model_size: largest model file loaded, in bytes.
        max_image_pixels: most pixels an image in a request may have
            (Pillow's default limit), checked before it is decoded.
        timeout: seconds a request may take before it is answered 504.
        queue_size: requests a worker takes beyond ``threads``, on spare threads, before it answers 503.
        instances: forwards each model runs at once in a worker (its model
            instances), unless its ``torch_serving.json`` declares
            ``instance_count``; 0 for: a batching model, the machine's cores
            shared among the workers (at least 1; 1 on CUDA); any other,
            ``threads``.
        preload: globs under the model root whose models every worker loads
            before it takes requests; each may hold several, comma-separated.
        metrics: whether ``GET /metrics`` exists and requests are measured.
        log_level: one of debug, info, warning, error, critical.
    """

    host: str = "127.0.0.1"
    port: int = 8888
    grpc_port: int = 0
    model_root: Path = dataclasses.field(default_factory=Path.cwd)
    model_capacity: int = 10
    buffer_size: int = 3
    workers: int = 2
    threads: int = 4
    torch_threads: int = 1
    device: str = "cpu"
    max_body_size: int = 64 * 1024**2
    max_model_size: int = 8 * 1024**3
    max_image_pixels: int = 89_478_485
    timeout: float = 60.0
    queue_size: int = 32
    instances: int = 0
    preload: tuple[str, ...] = ()
    metrics: bool = True
    log_level: str = "info"

    def __post_init__(self) -> None:
        root = Path(self.model_root).resolve()
        if not root.is_dir():
            raise ConfigError(f"model root {self.model_root} is not a directory")
        object.__setattr__(self, "model_root", root)
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in [1, 65535], got {self.port}")
        if not 0 <= self.grpc_port < 65536:
            raise ConfigError(f"gRPC port must be in [1, 65535], or 0 for none; got {self.grpc_port}")
        if self.grpc_port == self.port:
            raise ConfigError(f"gRPC port and port must differ; both are {self.port}")
        _positive("model capacity", self.model_capacity)
        _positive("buffer size", self.buffer_size, minimum=0)
        _positive("workers", self.workers)
        _positive("threads", self.threads)
        _positive("torch threads", self.torch_threads)
        _positive("max body size", self.max_body_size)
        _positive("max model size", self.max_model_size)
        _positive("max image pixels", self.max_image_pixels)
        _positive("queue size", self.queue_size, minimum=0)
        _positive("instances", self.instances, minimum=0)
        patterns = (pattern.strip() for item in self.preload for pattern in item.split(","))
        object.__setattr__(self, "preload", tuple(pattern for pattern in patterns if pattern))
        for pattern in self.preload:
            if pattern.startswith("/") or ".." in pattern.split("/"):
                raise ConfigError(f"preload patterns are globs under the model root, without '..'; got {pattern!r}")
        if not 0 < self.timeout < math.inf:
            raise ConfigError(f"timeout must be a positive number of seconds, got {self.timeout}")
        if self.log_level not in _LOG_LEVELS:
            raise ConfigError(f"log level must be one of {', '.join(_LOG_LEVELS)}, got {self.log_level!r}")
        if not _DEVICE_PATTERN.match(self.device):
            raise ConfigError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")

    @property
    def request_limit(self) -> int:
        """The requests a worker holds at most, HTTP and gRPC together: ``threads`` + ``queue_size``."""
        return self.threads + self.queue_size

    def model_instances(self, batching: bool) -> int:
        """Return the instances a model gets unless it declares its own count.

        A batching model gets one forward per core the workers share (one on
        a GPU, which runs a model's forwards one after another anyway), so
        that the requests beyond them wait in its queue and join its next
        batch: more instances made its batches smaller and slower. Any other
        model gets one per request thread: fewer made the example model
        slower (docs/performance.md, "Instances").
        """
        if self.instances:
            return self.instances
        if not batching:
            return self.threads
        if self.device != "cpu":
            return 1
        return max(1, len(os.sched_getaffinity(0)) // self.workers)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Config:
        """Build a config from ``TORCH_SERVING_<NAME>`` variables.

        Args:
            environ: the variables to read; ``os.environ`` when omitted.
            **overrides: values that win over the environment.

        Returns:
            The validated config.

        Raises:
            ConfigError: a variable that is not overridden holds a value that
                does not parse, or the resulting settings do not validate.
        """
        environ = os.environ if environ is None else environ
        values = {name: value for name, value in overrides.items() if value is not None}
        for field in dataclasses.fields(cls):
            variable = ENV_PREFIX + field.name.upper()
            raw = environ.get(variable)
            # An overridden variable is not read, so a bad value in it cannot stop the server.
            if raw is not None and field.name not in values:
                try:
                    values[field.name] = parse_field(field.name, raw)
                except ConfigError as error:
                    raise ConfigError(f"{variable}: {error}") from None
        return cls(**values)

    def check_device(self) -> None:
        """Fail early when the configured CUDA device does not exist.

        Uses NVML to count devices so the calling process (the gunicorn
        master) never initialises CUDA, which forked workers could not use.

        Raises:
            ConfigError: CUDA is asked for but absent, or the index is too high.
        """
        if self.device == "cpu":
            return
        os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(self.device.partition(":")[2] or 0)
        if count == 0:
            raise ConfigError(f"device {self.device} was asked for, but CUDA is not available here")
        if index >= count:
            raise ConfigError(f"device {self.device} was asked for, but only {count} CUDA device(s) exist")


def parse_field(name: str, raw: str) -> object:
    """Convert the text of setting ``name`` to its type.

    Raises:
        ConfigError: the text does not parse.
    """
    if name in {"max_body_size", "max_model_size"}:
        return parse_size(raw)
    if name == "model_root":
        return Path(raw)
    if name in _TEXT_FIELDS:
        return _TEXT_FIELDS[name](raw)
    if name == "metrics":
        if raw.lower() not in _SWITCH:
            raise ConfigError(f"metrics must be on or off, got {raw!r}")
        return _SWITCH[raw.lower()]
    if name == "preload":
        return tuple(pattern.strip() for pattern in raw.split(",") if pattern.strip())
    kind, convert = ("a number of seconds", float) if name == "timeout" else ("an integer", int)
    try:
        return convert(raw)
    except ValueError:
        raise ConfigError(f"{name.replace('_', ' ')} must be {kind}, got {raw!r}") from None
