"""Hessian spectra for users: eigenvalues at either end, the spectral density, per-layer spectra.

    H = landscape.hessian(obj)
    top = landscape.eigenvalues(H, k=5)                  # Lanczos, residual-checked
    both = landscape.eigenvalues(H, k=3, which="both")   # 3 largest and 3 smallest
    rho = landscape.density(H, probes=16, steps=80)      # stochastic Lanczos quadrature
    tr = landscape.trace(H, n_matvecs=99)                # Hutch++, with a standard error
    grid, values = rho.curve()
    layers = landscape.per_layer(obj, k=2)               # each module's diagonal Hessian block

Every function takes an operator (``shape``, ``dtype``, ``device``, ``op @ V [k, n]``), so
the same calls work for ``ggn``, ``fisher`` or a plain matrix wrapped as an operator.
"""

from __future__ import annotations

import torch

from landscape.core.objective import Objective
from landscape.core.renamed import renamed
from landscape.curvature.operators import hessian
from landscape.linalg.density import SpectralDensity, slq
from landscape.linalg.lanczos import EigenResult, lanczos
from landscape.linalg.trace import TraceEstimate, hutchinson, hutchpp

Tensor = torch.Tensor


def eigenvalues(op, k: int = 1, which: str = "largest", tol: float = 1e-6, max_steps: int | None = None,
                seed: int = 0, v0: Tensor | None = None, basis_size: int | None = None,
                max_memory: int | str | None = None, basis: str = "auto", eigenvectors: bool = True,
                progress: bool = False) -> EigenResult:
    """The ``k`` largest, smallest or both (k at each end) eigenpairs of ``op``, by thick-restart Lanczos.

    Converged pairs satisfy ||H v - lambda v|| <= tol * max |lambda| (reported as
    ``residuals``); ``v0`` (e.g. last step's eigenvectors ``[j, n]``) warm-starts it.
    Eigenvalues come sorted descending as float64, eigenvectors as ``[k, n]``.
    ``tol`` is relative to |lambda_max|; ``landscape.linalg.lanczos.lanczos`` says what that
    means for small and nearly repeated eigenvalues, and what ``basis_size``, ``max_memory``
    and ``basis`` ("auto", "device", "cpu", "float32" or "none": where the Krylov basis is
    kept, if at all, at what accuracy and cost) do; ``eigenvectors=False`` leaves them out
    (``eigenvectors`` is None), which halves the products of ``basis="none"``.
    """
    return lanczos(op, k=k, which=which, tol=tol, max_steps=max_steps, seed=seed, v0=v0, basis_size=basis_size,
                   max_memory=max_memory, basis=basis, eigenvectors=eigenvectors, progress=progress)


def density(op, probes: int = 16, steps: int = 80, seed: int = 0, progress: bool = False) -> SpectralDensity:
    """The spectral density of ``op`` by stochastic Lanczos quadrature, ``probes`` recurrences in lockstep."""
    return slq(op, probes=probes, steps=steps, seed=seed, progress=progress)


@renamed(budget="n_matvecs")
def trace(op, method: str = "hutch++", n_matvecs: int | None = None, rtol: float | None = None,
          seed: int = 0) -> TraceEstimate:
    """tr(op) by Hutch++ (default) or Hutchinson, with a standard error: ``n_matvecs`` products
    (default 100), or until the standard error is at most ``rtol`` times the estimate."""
    estimators = {"hutch++": hutchpp, "hutchinson": hutchinson}
    if method not in estimators:
        raise ValueError(f"method must be one of {', '.join(estimators)}, got {method!r}")
    return estimators[method](op, n_matvecs=n_matvecs, rtol=rtol, seed=seed)


def per_layer(obj: Objective, k: int = 1, which: str = "largest", groups: dict[str, list[str]] | None = None,
              tol: float = 1e-6, seed: int = 0) -> dict[str, EigenResult]:
    """Eigenpairs of the Hessian's diagonal blocks: H restricted to each group of parameters, the rest fixed.

    ``groups`` maps a name to parameter names or glob patterns; by default one group per
    module that owns parameters of ``obj`` (its weight and bias together). ``k`` is capped
    at what a block's size allows.
    """
    if groups is None:
        groups = {}
        for name in obj.space.names:
            groups.setdefault(name.rpartition(".")[0] or name, []).append(name)
    results = {}
    for group, params in groups.items():
        block = obj.restrict(params)
        block_which = which if block.space.n > 1 else "largest"  # a single parameter: its one eigenvalue
        block_k = min(k, block.space.n // (2 if block_which == "both" else 1))
        results[group] = lanczos(hessian(block), k=block_k, which=block_which, tol=tol, seed=seed)
    return results
