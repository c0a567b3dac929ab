"""The ``torch-serving`` command: run the app under gunicorn in ``ServingWorker`` workers (gthread)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence

from gunicorn.app.base import BaseApplication

from torch_serving import __version__
from torch_serving.config import ENV_PREFIX, Config, ConfigError, parse_field
from torch_serving.connection_table import forget_worker
from torch_serving.shared import MULTIPROCESS_DIR, SHARED_DIR, forget_grpc_listener, mark_reload

# prometheus-client's variable.

__all__ = ["build_parser", "main"]

_HELP = {
    "host": "interface to listen on",
    "port": "TCP port to listen on",
    "grpc_port": "TCP port of the Open Inference Protocol over gRPC (tritonclient.grpc, KServe's"
    " InferenceGRPCClient), on the same host; 0 for none",
    "model_root": "folder that servable identifiers are relative to",
    "model_capacity": "models each worker keeps after an eviction",
    "buffer_size": "extra models a worker may hold before it evicts down to the capacity",
    "workers": "worker processes",
    "threads": "request threads per worker",
    "torch_threads": "intra-op threads torch uses in each worker",
    "device": "where models run: cpu, cuda or cuda:N",
    "max_body_size": "largest request body, in bytes or with a unit (64MiB, 10MB)",
    "max_model_size": "largest model file the server loads, in bytes or with a unit",
    "max_image_pixels": "most pixels an image in a request may have, checked before decoding",
    "timeout": "seconds a request may take before it is answered 504 (its work is abandoned)",
    "queue_size": "requests each worker takes beyond --threads, on spare threads, before it answers 503",
    "instances": "forwards each model runs at once in a worker, unless it declares instance_count;"
    " 0 for: a batching model, the cores shared among the workers (1 on CUDA); any other, --threads",
    "metrics": "on or off: GET /metrics (Prometheus) and the measuring of every inference request",
    "preload": "glob under the model root whose models each worker loads before taking requests; repeatable",
    "log_level": "debug, info, warning, error or critical",
}


class _GunicornApplication(BaseApplication):
    """Gunicorn with settings from a Config and the app built in each worker."""

    def __init__(self, config: Config) -> None:
        self._config = config
        super().__init__()

    @property
    def queue_size(self) -> int:
        """Requests each worker holds beyond its threads (read by ``ServingWorker``)."""
        return self._config.queue_size

    @property
    def request_timeout(self) -> float:
        """Seconds a request may take (read by ``ServingWorker``, which bounds its headers by them)."""
        return self._config.timeout

    def load_config(self) -> None:
        config = self._config
        settings = {
            # An IPv6 address is bracketed, or gunicorn splits it at its first colon.
            "bind": f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}",
            "workers": config.workers,
            # Core request threads; the worker adds --queue-size spare ones
            # (torch_serving.worker) and answers 503 beyond both.
            "threads": config.threads,
            "worker_class": "torch_serving.worker.ServingWorker",
            # Access lines are INFO records: a quieter --log-level drops them,
            # and their cost (a few percent of a small request).
            "accesslog": "-" if config.log_level in ("debug", "info") else None,
            "logger_class": "torch_serving.access_log.AccessLogger",
            "errorlog": "-",
            "loglevel": config.log_level,
            "preload_app": False,
            # SIGTERM and SIGHUP let in-flight requests finish their deadline.
            "graceful_timeout": int(config.timeout) + 5,
            "proc_name": "torch-serving",
            # Several servers on one host would fight over the default path.
            "control_socket_disable": True,
            "child_exit": _worker_exited,
            "on_reload": _reloading,
        }
        for name, value in settings.items():
            self.cfg.set(name, value)

    def load(self):
        # Runs in each worker after the fork: no torch work in the master.
        from torch_serving.app import create_app

        # AOTInductor unpacks packages under TMPDIR, where a package stays while its worker lives
        # (torch_serving._C: its code cannot be unloaded); each worker's go in a folder of its own,
        # removed when the worker exits (_worker_exited) and with the shared directory.
        packages = _packages_directory(os.getpid())
        os.mkdir(packages)
        os.environ["TMPDIR"] = packages

        logging.basicConfig(
            level=self._config.log_level.upper(),
            format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
        )
        return create_app(self._config)


def _option_type(name: str):
    def convert(text: str) -> object:
        try:
            return parse_field(name, text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = name.replace("_", " ")
    return convert


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser; every option also reads TORCH_SERVING_<NAME>."""
    parser = argparse.ArgumentParser(
        prog="torch-serving",
        description="Serve the TorchScript (.pt) and AOTInductor (.pt2) files under a folder over HTTP.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for field in dataclasses.fields(Config):
        shown = {"model_root": "the working directory", "metrics": "on"}.get(field.name, field.default)
        help_text = f"{_HELP[field.name]} (default {shown}; env {ENV_PREFIX}{field.name.upper()})"
        option = "--" + field.name.replace("_", "-")
        if field.name == "preload":
            parser.add_argument(
                option, action="append", metavar="GLOB", default=None, help=help_text + ", comma-separated"
            )
            continue
        parser.add_argument(option, type=_option_type(field.name), default=None, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until it is stopped.

    Args:
        argv: command-line arguments without the program name.

    Returns:
        The process exit status.
    """
    args = build_parser().parse_args(argv)
    try:
        config = Config.from_env(**vars(args))
        config.check_device()
        _check_address(config.host, config.port)
        if config.grpc_port:
            _check_address(config.host, config.grpc_port)
    except ConfigError as error:
        print(f"torch-serving: error: {error}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_shared_directory())
        except OSError as error:
            print(f"torch-serving: error: cannot make the server's temporary directory: {error}", file=sys.stderr)
            return 2
        _GunicornApplication(config).run()
    return 0


def _check_address(host: str, port: int) -> None:
    """Fail at once when the server could not listen on ``host``:``port`` (gunicorn would retry for
    5 s and end with "Can't connect")."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ConfigError(f"cannot listen on {host}:{port}: {(error.strerror or str(error)).lower()}") from None


@contextlib.contextmanager
def _shared_directory():
    """A fresh directory the workers share, removed at exit: their metric files
    (prometheus-client's multiprocess mode), the model repository's state file and the
    folders where they unpack packages."""
    directory = tempfile.mkdtemp(prefix="torch-serving-")
    metrics = os.path.join(directory, "metrics")
    os.mkdir(metrics)
    # Read by prometheus-client when a worker imports it, and by torch_serving.repository.
    os.environ[MULTIPROCESS_DIR] = metrics
    os.environ[SHARED_DIR] = directory
    master = os.getpid()
    try:
        yield
    finally:
        # A worker is forked inside this block and leaves it too when it exits.
        if os.getpid() == master:
            shutil.rmtree(directory, ignore_errors=True)


def _packages_directory(pid: int) -> str:
    """Where the worker ``pid`` unpacks AOTInductor packages."""
    return os.path.join(os.environ[SHARED_DIR], f"packages-{pid}")


def _worker_exited(server, worker) -> None:
    # A dead worker's gauges stop counting; its counters still do.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
    shutil.rmtree(_packages_directory(worker.pid), ignore_errors=True)
    forget_grpc_listener(worker.pid)
    forget_worker(worker.pid)


def _reloading(server) -> None:
    # The workers this reload stops keep the gRPC port until their successors listen (torch_serving.shared).
    mark_reload()
