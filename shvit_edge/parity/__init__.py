"""Numerical parity between an artifact's runtime and the PyTorch model it came from."""
