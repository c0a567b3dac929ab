# torch-serving: serve the TorchScript (.pt) and AOTInductor (.pt2) models
# mounted at /models on port 8080. Build from the repository root:
#   docker build -t torch-serving:0.1.0 .
#   docker run -p 8080:8080 -p 8081:8081 -v "$PWD/models:/models:ro" torch-serving:0.1.0
# Settings are TORCH_SERVING_* variables (docs/deploy.md).

# Build stage: the compiler and -dev headers build the extension against the
# CPU torch in a venv, which is all the runtime stage takes.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ libgrpc++-dev libsimdjson-dev libturbojpeg0-dev libpng-dev libwebp-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install --no-cache-dir setuptools wheel "pybind11>=2.12" ninja "grpcio-tools>=1.70"
WORKDIR /src
COPY setup.py pyproject.toml README.md ./
COPY ext ext
COPY torch_serving torch_serving
RUN pip install --no-cache-dir --no-build-isolation .

# Runtime stage: the shared libraries only, a non-root user, no compiler.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgrpc++1.51 libsimdjson14 libturbojpeg0 libpng16-16 libwebp7 curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home serving
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    TORCH_SERVING_HOST=0.0.0.0 \
    TORCH_SERVING_PORT=8080 \
    TORCH_SERVING_GRPC_PORT=8081 \
    TORCH_SERVING_MODEL_ROOT=/models \
    TORCH_SERVING_WORKERS=2 \
    TORCH_SERVING_THREADS=4 \
    TORCH_SERVING_LOG_LEVEL=warning
USER 10001
EXPOSE 8080 8081
VOLUME /models
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD curl -fsS http://127.0.0.1:8080/v2/health/ready || exit 1
CMD ["torch-serving"]
