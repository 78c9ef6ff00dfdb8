"""Export backends, one module each; see :mod:`shvit_edge.backends.base`."""
