"""Build torch_serving and its native core torch_serving._C.

Build against the torch already installed (``pip install --no-build-isolation``);
the package then requires exactly that torch release at run time, because the
extension links against its C++ ABI.

Environment switches:
    TORCH_SERVING_DEBUG=1: no optimisation, debug symbols and assertions.
    TORCH_SERVING_SANITIZE=1: AddressSanitizer and UndefinedBehaviorSanitizer.
"""

import os

import torch
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

# The native core's sources, listed once for this build and CMake's (ext/sources.txt), and the
# pybind11 bindings, which only this build compiles.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ext", "sources.txt")) as listing:
    SOURCES = [line.strip() for line in listing if line.strip()] + ["ext/bindings.cpp"]


def compile_and_link_flags():
    """Return the compiler and linker flags the environment switches ask for."""
    debug = os.environ.get("TORCH_SERVING_DEBUG") == "1"
    sanitize = os.environ.get("TORCH_SERVING_SANITIZE") == "1"
    cflags = ["-O0", "-g", "-UNDEBUG"] if debug or sanitize else ["-O3", "-DNDEBUG"]
    ldflags = []
    if sanitize:
        cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        ldflags += ["-fsanitize=address,undefined"]
    return cflags, ldflags


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
            extra_compile_args=["-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden", *cflags],
            extra_link_args=ldflags,
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
