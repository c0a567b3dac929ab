"""WSGI entry point for running under your own gunicorn.

Configured by the same ``TORCH_SERVING_*`` environment variables as the CLI::

    TORCH_SERVING_MODEL_ROOT=models gunicorn -k gthread --threads 4 torch_serving.wsgi:app

Do not give gunicorn its own ``--preload`` (``preload_app``, which loads the application in the
master; not torch-serving's ``--preload``, ``TORCH_SERVING_PRELOAD`` here, which loads models in
each worker): each worker must build its own model cache, after the fork.
"""

from torch_serving.app import create_app
from torch_serving.config import Config

app = create_app(Config.from_env())
