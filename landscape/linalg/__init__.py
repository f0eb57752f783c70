"""Algorithms over the operator protocol: ``shape (n, n)``, ``dtype``, ``device`` and ``op @ V [k, n]``."""

from landscape.linalg import density, lanczos

__all__ = ["density", "lanczos"]
