"""The floor of gRPC in Python on this machine: grpcio's asyncio server in two processes sharing a
port (as the server's two workers do), answering every ``ModelInfer`` with one canned reply, without
running a model. What it allows is what no server written with Python's gRPC can beat (the server's own
is native: ``torch_serving.grpc_service``).

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

    from torch_serving._proto import inference_pb2

    reply = inference_pb2.ModelInferResponse(model_name="tiny", model_version="1")
    reply.outputs.add(name="OUTPUT__0", datatype="FP32", shape=[1, 4])
    reply.raw_output_contents.append(np.zeros(4, np.float32).tobytes())

    async def model_infer(request, context):
        return reply

    handler = grpc.unary_unary_rpc_method_handler(
        model_infer,
        request_deserializer=inference_pb2.ModelInferRequest.FromString,
        response_serializer=inference_pb2.ModelInferResponse.SerializeToString,
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelInfer": handler})]
    )
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
