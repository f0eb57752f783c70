"""Hessian spectra for users: eigenvalues at either end, the spectral density, per-layer spectra.

    H = landscape.hessian(obj)
    top = landscape.eigenvalues(H, k=5)                  # Lanczos, residual-checked
    both = landscape.eigenvalues(H, k=3, which="both")   # 3 largest and 3 smallest
    rho = landscape.density(H, probes=16, steps=80)      # stochastic Lanczos quadrature
    grid, values = rho.curve()

Every function takes an operator (``shape``, ``dtype``, ``device``, ``op @ V [k, n]``), so
the same calls work for ``ggn``, ``fisher`` or a plain matrix wrapped as an operator.
"""

from __future__ import annotations

import torch

from landscape.linalg.density import SpectralDensity, slq
from landscape.linalg.lanczos import EigenResult, lanczos

Tensor = torch.Tensor


def eigenvalues(op, k: int = 1, which: str = "largest", tol: float = 1e-6, max_steps: int | None = None,
                seed: int = 0, v0: Tensor | None = None, progress: bool = False) -> EigenResult:
    """The ``k`` largest, smallest or both (k at each end) eigenpairs of ``op``, by thick-restart Lanczos.

    Converged pairs satisfy ||H v - lambda v|| <= tol * max |lambda| (reported as
    ``residuals``); ``v0`` (e.g. last step's eigenvectors ``[j, n]``) warm-starts it.
    Eigenvalues come sorted descending as float64, eigenvectors as ``[k, n]``.
    See ``landscape.linalg.lanczos.lanczos`` for the basis-size and memory options.
    """
    return lanczos(op, k=k, which=which, tol=tol, max_steps=max_steps, seed=seed, v0=v0, progress=progress)


def density(op, probes: int = 16, steps: int = 80, seed: int = 0, progress: bool = False) -> SpectralDensity:
    """The spectral density of ``op`` by stochastic Lanczos quadrature, ``probes`` recurrences in lockstep."""
    return slq(op, probes=probes, steps=steps, seed=seed, progress=progress)
