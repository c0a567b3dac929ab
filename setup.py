"""Build torch_serving and its native core torch_serving._C.

Build against the torch already installed (``pip install --no-build-isolation``);
the package then requires exactly that torch release at run time, because the
extension links against its C++ ABI.

Environment switches:
    TORCH_SERVING_DEBUG=1: no optimisation, debug symbols and assertions.
    TORCH_SERVING_SANITIZE=1: AddressSanitizer and UndefinedBehaviorSanitizer.
"""

import os
import subprocess

import torch
from grpc_tools import protoc
from setuptools import Extension, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

HERE = os.path.dirname(os.path.abspath(__file__))
# The native core's sources, listed once for this build and CMake's (ext/sources.txt), and the
# pybind11 bindings, which only this build compiles.
with open(os.path.join(HERE, "ext", "sources.txt")) as listing:
    SOURCES = [line.strip() for line in listing if line.strip()] + ["ext/bindings.cpp"]


def native_flags():
    """Return the named flag sets of ext/flags.txt, which CMake's build reads too."""
    with open(os.path.join(HERE, "ext", "flags.txt")) as listing:
        rows = [line.split() for line in listing if line.strip() and not line.startswith("#")]
    return {name: flags for name, *flags in rows}


def compile_and_link_flags():
    """Return the compiler and linker flags the environment switches ask for."""
    flags = native_flags()
    debug = os.environ.get("TORCH_SERVING_DEBUG") == "1"
    sanitize = os.environ.get("TORCH_SERVING_SANITIZE") == "1"
    cflags = flags["warnings"] + (["-O0", "-g", "-UNDEBUG"] if debug or sanitize else ["-O3", "-DNDEBUG"])
    ldflags = []
    if sanitize:
        cflags += flags["sanitize_compile"]
        ldflags += flags["sanitize_link"]
    return cflags, ldflags


def compile_protos():
    """Generate the gRPC service's Python modules from its .proto, beside it (they are not committed)."""
    proto = os.path.join("torch_serving", "_proto", "inference.proto")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")  # protobuf's well-known types
    status = protoc.main(
        [
            "protoc",
            f"-I{HERE}",
            f"-I{include}",
            f"--python_out={HERE}",
            f"--pyi_out={HERE}",
            os.path.join(HERE, proto),
        ]
    )
    if status != 0:
        raise SystemExit(f"protoc failed on {proto} (exit status {status})")


def grpcpp_flags(kind):
    """Return grpc++'s (Debian's libgrpc++-dev) ``cflags`` or ``libs``, which the gRPC transport uses."""
    return subprocess.check_output(["pkg-config", f"--{kind}", "grpc++"], text=True).split()


compile_protos()
cflags, ldflags = compile_and_link_flags()
torch_release = torch.__version__.split("+")[0]

setup(
    install_requires=[
        f"torch=={torch_release}",
        "falcon>=4,<5",
        "gunicorn>=27,<28",
        "prometheus-client>=0.20",
        # torch_serving.client
        "requests>=2.31",
        "numpy>=1.26",
        # --grpc-port: the messages setup.py generates need the protobuf runtime of the grpcio-tools that made them.
        "protobuf>=6.31,<7",
    ],
    ext_modules=[
        CppExtension(
            name="torch_serving._C",
            sources=SOURCES,
            libraries=["simdjson", "turbojpeg", "png", "webp"],
            # fmt comes header-only with torch's own headers; libtorch does not export it.
            define_macros=[("FMT_HEADER_ONLY", "1")],
            # Hidden by default, as pybind11 recommends: the header-only fmt and the
            # inline c10 code instantiated here stay private to _C instead of being
            # exported beside libtorch's own copies.
            extra_compile_args=["-fvisibility=hidden", *cflags],
            extra_link_args=ldflags,
        ),
        # grpc++'s side of the gRPC service, loaded only by a worker that serves gRPC (ext/grpc_transport.h).
        Extension(
            name="torch_serving._grpc_transport",
            sources=["ext/grpc_transport.cpp"],
            language="c++",
            extra_compile_args=["-fvisibility=hidden", *cflags, *grpcpp_flags("cflags")],
            extra_link_args=[*ldflags, *grpcpp_flags("libs")],
        ),
    ],
    cmdclass={"build_ext": BuildExtension},
)
