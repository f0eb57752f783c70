"""Trace, diagonal and Frobenius norm of a symmetric operator from products with random probes.

- Hutchinson: tr(H) ~ (1/m) sum_i z_i^T H z_i, z_i Rademacher (+-1 entries); its
  standard error is the sample standard deviation over sqrt(m).
- Hutch++ (Meyer, Musco, Musco and Woodruff 2021): with a sketch S of s Rademacher
  columns, Q = orth(H S) captures the large eigenvalues; tr(H) = tr(Q^T H Q) (exact, s
  products) + the Hutchinson estimate of tr((I - QQ^T) H (I - QQ^T)) (the rest). For
  a total of m products, s = m / 3. Its error falls as 1/m instead of 1/sqrt(m) once
  the spectrum's tail is small, which is the case for network Hessians.
- Diagonal: diag(H) ~ (1/m) sum_i z_i * (H z_i) (Bekas et al. 2007).
- Frobenius: ||H||_F^2 = E ||H z||^2.

Each takes a fixed number of products ``n_matvecs`` or a target ``rtol`` (standard error at most
``rtol * |estimate|``, checked after every chunk of probes once 10 samples are in).
Probes are drawn on the CPU from ``seed``, so results do not depend on the device. Each result
records what it cost (``n_matvecs``, ``seconds``) and the ``settings`` that reproduce it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from landscape.core.renamed import renamed
from landscape.core.results import Result

Tensor = torch.Tensor
MIN_SAMPLES = 10


@dataclass
class TraceEstimate(Result):
    """``estimate`` +- ``stderr`` (one standard error) after ``n_matvecs`` products.

    ``samples`` are per-probe values whose mean is the estimate (for Hutch++, the exact
    low-rank part plus each residual probe's value); ``settings`` hold the seed, the products
    asked for (``n_matvecs``, or None with ``rtol``) and the rest that reproduces it.
    """

    estimate: float
    stderr: float
    n_matvecs: int
    method: str
    samples: list[float]
    seconds: float
    settings: dict


@dataclass
class DiagonalEstimate(Result):
    """``estimate [n]`` and ``stderr [n]`` (float64, on the operator's device) after ``n_matvecs`` products."""

    estimate: Tensor
    stderr: Tensor
    n_matvecs: int
    seconds: float
    settings: dict


class _Probes:
    """Rademacher vectors ``[k, n]`` from one seeded CPU generator, in the operator's dtype and device."""

    def __init__(self, op, seed: int):
        self.op, self.n = op, op.shape[0]
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self, k: int) -> Tensor:
        z = torch.randint(0, 2, (k, self.n), generator=self.generator, dtype=torch.float64) * 2 - 1
        return z.to(self.op.device)

    def apply(self, Z: Tensor) -> Tensor:
        """op @ Z, computed in the operator's dtype, returned in float64."""
        return (self.op @ Z.to(self.op.dtype)).to(torch.float64)


def _cap(n_matvecs: int | None, rtol: float | None, n: int, minimum: int = 1) -> int:
    """The most products to spend: ``n_matvecs``, or with ``rtol`` alone max(10 n, 1000); default 100."""
    if n_matvecs is None and rtol is None:
        return max(100, minimum)
    if rtol is not None and not rtol > 0:
        raise ValueError(f"rtol must be positive, got {rtol}")
    if n_matvecs is not None and n_matvecs < minimum:
        raise ValueError(f"n_matvecs must be at least {minimum} products, got {n_matvecs}")
    return n_matvecs if n_matvecs is not None else max(10 * n, 1000)


def _settings(op, **given) -> dict:
    """What reproduces an estimate: the arguments, and what the operator says of its products (``op.settings``)."""
    return {"operator": getattr(op, "settings", None), **given}


def _mean_and_error(samples: list[float]) -> tuple[float, float]:
    values = np.asarray(samples)
    error = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.inf
    return float(values.mean()), float(error)


def _hutchinson_samples(probes: _Probes, samples: list[float], cap: int, rtol: float | None,
                        chunk: int, offset: float = 0.0, project=None) -> None:
    """Append z^T H z for new probes (projected by ``project`` first) until ``cap`` or ``rtol`` is met."""
    while len(samples) < cap:
        Z = probes.draw(min(chunk, cap - len(samples)))
        if project is not None:
            Z = project(Z)
        samples.extend(((Z * probes.apply(Z)).sum(1) + offset).tolist())
        if rtol is not None and len(samples) >= MIN_SAMPLES:
            mean, error = _mean_and_error(samples)
            if error <= rtol * abs(mean):
                return


@renamed(budget="n_matvecs")
def hutchinson(op, n_matvecs: int | None = None, rtol: float | None = None, seed: int = 0,
               chunk: int = 16) -> TraceEstimate:
    """tr(H) by Hutchinson's estimator: ``n_matvecs`` probes (default 100), or until the standard error is at most
    ``rtol`` |tr|."""
    start = time.perf_counter()
    cap = _cap(n_matvecs, rtol, op.shape[0])
    samples: list[float] = []
    _hutchinson_samples(_Probes(op, seed), samples, cap, rtol, chunk)
    mean, error = _mean_and_error(samples)
    return TraceEstimate(mean, error, len(samples), "hutchinson", samples, time.perf_counter() - start,
                         _settings(op, n_matvecs=n_matvecs, rtol=rtol, seed=seed, chunk=chunk))


@renamed(budget="n_matvecs")
def hutchpp(op, n_matvecs: int | None = None, rtol: float | None = None, seed: int = 0,
            sketch: int | None = None, chunk: int = 16) -> TraceEstimate:
    """tr(H) by Hutch++: a sketch of ``sketch`` products (default n_matvecs // 3; with ``rtol``, min(n, 30);
    at most n and (n_matvecs - 1) // 2), as many to apply H to its range, and Hutchinson on the
    rest (the remaining products, or until the standard error is at most ``rtol`` |tr|). A
    sketch of n spans everything: the trace is then exact, at 2n products."""
    start = time.perf_counter()
    n = op.shape[0]
    cap = _cap(n_matvecs, rtol, n, minimum=3)
    s = sketch if sketch is not None else (cap // 3 if rtol is None else 30)
    s = min(s, n, (cap - 1) // 2)
    if s < 1:
        raise ValueError(f"Hutch++ needs a sketch of at least one vector, got {s}")
    probes = _Probes(op, seed)
    Q, _ = torch.linalg.qr(probes.apply(probes.draw(s)).T)  # [n, s], orthonormal columns
    low_rank = float((Q.T * probes.apply(Q.T)).sum())
    samples: list[float] = []
    if s < n:
        _hutchinson_samples(probes, samples, cap - 2 * s, rtol, chunk, offset=low_rank,
                            project=lambda Z: Z - (Z @ Q) @ Q.T)
    mean, error = _mean_and_error(samples) if samples else (low_rank, 0.0)
    if len(samples) == 1:
        error = math.inf
    return TraceEstimate(mean, error, 2 * s + len(samples), "hutch++", samples, time.perf_counter() - start,
                         _settings(op, n_matvecs=n_matvecs, rtol=rtol, seed=seed, sketch=s, chunk=chunk))


@renamed(budget="n_matvecs")
def diagonal(op, n_matvecs: int = 100, seed: int = 0, chunk: int = 16) -> DiagonalEstimate:
    """diag(H) ~ mean of z * (H z) over ``n_matvecs`` Rademacher probes, with a per-entry standard error."""
    start = time.perf_counter()
    if n_matvecs < 2:
        raise ValueError(f"n_matvecs must be at least 2 products, got {n_matvecs}")
    probes = _Probes(op, seed)
    total = torch.zeros(op.shape[0], dtype=torch.float64, device=op.device)
    squares = torch.zeros_like(total)
    for done in range(0, n_matvecs, chunk):
        Z = probes.draw(min(chunk, n_matvecs - done))
        values = Z * probes.apply(Z)
        total += values.sum(0)
        squares += (values**2).sum(0)
    mean = total / n_matvecs
    variance = (squares - n_matvecs * mean**2).clamp_min(0) / (n_matvecs - 1)
    return DiagonalEstimate(mean, (variance / n_matvecs).sqrt(), n_matvecs, time.perf_counter() - start,
                            _settings(op, n_matvecs=n_matvecs, seed=seed, chunk=chunk))


@renamed(budget="n_matvecs")
def frobenius(op, n_matvecs: int = 100, seed: int = 0, chunk: int = 16) -> TraceEstimate:
    """||H||_F = sqrt(E ||H z||^2) over ``n_matvecs`` Rademacher probes; the standard error by the delta method."""
    start = time.perf_counter()
    if n_matvecs < 2:
        raise ValueError(f"n_matvecs must be at least 2 products, got {n_matvecs}")
    probes = _Probes(op, seed)
    samples: list[float] = []
    while len(samples) < n_matvecs:
        Z = probes.draw(min(chunk, n_matvecs - len(samples)))
        samples.extend((probes.apply(Z) ** 2).sum(1).tolist())
    mean, error = _mean_and_error(samples)
    norm = math.sqrt(max(mean, 0.0))
    return TraceEstimate(norm, error / (2 * norm) if norm > 0 else math.inf, n_matvecs, "frobenius", samples,
                         time.perf_counter() - start, _settings(op, n_matvecs=n_matvecs, seed=seed, chunk=chunk))
