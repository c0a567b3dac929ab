"""The gRPC service definition (inference.proto) and the modules setup.py generates from it."""
