"""The floor of gRPC in Python on this machine: grpcio's asyncio server in two processes sharing a
port (as the server's two workers do), answering every ``ModelInfer`` with one canned reply, without
running a model. What it allows is what no Python gRPC server can beat.

    python -m benchmarks.baselines.grpc_floor PORT
"""

from __future__ import annotations

import asyncio
import os
import sys

_WORKERS = 2


async def _serve(port: int) -> None:
    # Imported after the fork, as the server's workers import gRPC: grpcio forked after it started
    # its machinery runs degraded in the child.
    import grpc
    import numpy as np

    from torch_serving._proto import inference_pb2, inference_pb2_grpc

    class Canned(inference_pb2_grpc.GRPCInferenceServiceServicer):
        def __init__(self) -> None:
            self._reply = inference_pb2.ModelInferResponse(model_name="tiny", model_version="1")
            self._reply.outputs.add(name="OUTPUT__0", datatype="FP32", shape=[1, 4])
            self._reply.raw_output_contents.append(np.zeros(4, np.float32).tobytes())

        async def ModelInfer(self, request, context):
            return self._reply

    server = grpc.aio.server(options=[("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Canned(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    port = int(sys.argv[1])
    for _ in range(_WORKERS - 1):
        if os.fork() == 0:
            break  # a child serves too, and forks no further
    asyncio.run(_serve(port))


if __name__ == "__main__":
    main()
