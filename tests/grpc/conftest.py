"""Fixtures of the gRPC tests, which run in a pytest of their own (``make test`` runs it after the
others): tritonclient.grpc and KServe's SDK register the same protobuf package, ``inference``, and
cannot be imported in one process."""

from __future__ import annotations

import pytest
import tritonclient.grpc as grpcclient

from tests.integration.server import cli_command, free_port, running


class GrpcServer:
    """A running server with its gRPC port."""

    def __init__(self, running_server, grpc_port: int) -> None:
        self.http = running_server
        self.grpc_port = grpc_port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def client(self) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(self.address)


@pytest.fixture
def start_grpc(model_root, tmp_path):
    """Return a function that starts torch-serving with gRPC on free ports over ``model_root``; use
    what it returns as a context manager yielding a ``GrpcServer``."""

    def start_server(*options: str):
        import contextlib

        @contextlib.contextmanager
        def serve():
            port, grpc_port = free_port(), free_port()
            command = cli_command(port, "--model-root", str(model_root), "--grpc-port", str(grpc_port), *options)
            with running(command, port, tmp_path / f"{port}.log") as running_server:
                yield GrpcServer(running_server, grpc_port)

        return serve()

    return start_server
