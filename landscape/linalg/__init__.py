"""Algorithms over the operator protocol: ``shape (n, n)``, ``dtype``, ``device`` and ``op @ V [k, n]``.

``lanczos`` (extreme eigenpairs; ``three_term`` is its basis-free variant), ``trace`` (Hutchinson,
Hutch++, diagonal, Frobenius norm) and ``density`` (stochastic Lanczos quadrature).
"""

from landscape.linalg import density, lanczos, three_term, trace

__all__ = ["density", "lanczos", "three_term", "trace"]
