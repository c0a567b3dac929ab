"""What the CLI, its workers and their modules share, without loading torch: the
environment variables that name the server's shared directories, and the
one version every model file has."""

__all__ = ["MODEL_VERSION", "MULTIPROCESS_DIR", "SHARED_DIR"]

# Read by prometheus-client when a worker imports it (its multiprocess mode).
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# The directory the CLI makes for its workers (torch_serving.cli._shared_directory).
SHARED_DIR = "TORCH_SERVING_SHARED_DIR"
# A model file is one model version, in V2's answers and the metrics' labels.
MODEL_VERSION = "1"
