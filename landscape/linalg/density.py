"""Spectral density by stochastic Lanczos quadrature (SLQ; Golub and Meurant; Ghorbani et al. 2019).

For a unit probe q, m Lanczos steps give a tridiagonal T_q = S diag(theta) S^T, and
q^T f(H) q ~ sum_i w_i f(theta_i) with w_i = S[0, i]^2: a Gauss quadrature that is exact
for polynomials f of degree up to 2m - 1. Averaging over probes estimates
tr f(H) / n, so phi(t) = (1/P) sum_p sum_i w_pi delta(t - theta_pi) estimates the
eigenvalue density, and a Gaussian of width sigma in place of delta makes it a curve.

The P probes run as independent recurrences in lockstep: each step is one product
``op @ Q_j`` with ``Q_j [P, n]``, which is where a GPU's batched HVPs pay. Each
probe's basis is reorthogonalized in full when ``P * (m + 1) * n`` float64 numbers fit
the memory budget; without it the moments stay accurate and only copies of converged
nodes appear, sharing their weight.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from landscape.core import memory
from landscape.core.results import Result, jsonable

Tensor = torch.Tensor
NEGATIVE_RELATIVE = 1e-3  # negative_mass: the threshold relative to the spectrum's largest |eigenvalue|


@dataclass
class NegativeMass(Result):
    """The share of the spectrum below ``threshold`` (= -max(``relative`` * ``scale``, ``broadening``)), ``value``
    +- ``stderr`` (one standard error over the SLQ probes), and whether that is more than noise (``verdict``)."""

    value: float
    stderr: float
    threshold: float
    relative: float
    scale: float
    broadening: float
    verdict: str

    def __str__(self) -> str:
        return (f"{100 * self.value:.2f}% +- {100 * self.stderr:.2f}% of the spectrum below {self.threshold:.3g} "
                f"(the larger of {self.relative:g} |lambda|max and SLQ's broadening {self.broadening:.2g}): "
                f"{self.verdict}")


@dataclass
class SpectralDensity:
    """SLQ nodes and weights, ``[probes, steps]`` each (NaN-padded where a probe broke down early).

    Each probe's weights sum to 1. ``curve()`` gives the broadened density on a grid.
    ``settings``: the seed, probes and steps that reproduce it.
    """

    nodes: np.ndarray
    weights: np.ndarray
    n_matvecs: int
    reorthogonalized: bool
    seconds: float
    settings: dict

    @property
    def probes(self) -> int:
        return self.nodes.shape[0]

    def default_sigma(self) -> float:
        """1% of the spectral range the nodes span (or 1e-3 of their scale if they coincide)."""
        nodes = self.nodes[np.isfinite(self.nodes)]
        spread = nodes.max() - nodes.min()
        return 0.01 * spread if spread > 0 else 1e-3 * max(abs(nodes).max(), 1.0)

    def curve(self, grid: np.ndarray | None = None, sigma: float | None = None,
              points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(grid, density): sum of weight * N(t; node, sigma^2), averaged over probes.

        Default grid: ``points`` points from the smallest node - 6 sigma to the largest
        + 6 sigma, so the curve integrates to 1 on it (to ~1e-9).
        """
        sigma = sigma or self.default_sigma()
        ok = np.isfinite(self.nodes)
        nodes, weights = self.nodes[ok], self.weights[ok] / self.probes
        if grid is None:
            grid = np.linspace(nodes.min() - 6 * sigma, nodes.max() + 6 * sigma, points)
        z = (grid[:, None] - nodes[None, :]) / sigma
        values = (np.exp(-0.5 * z**2) * weights).sum(1) / (sigma * math.sqrt(2 * math.pi))
        return grid, values

    def moment(self, j: int) -> float:
        """The SLQ estimate of tr(H^j) / n."""
        ok = np.isfinite(self.nodes)
        return float((self.weights[ok] * self.nodes[ok] ** j).sum() / self.probes)

    def mass_below(self, threshold: float | None = None) -> float:
        """The fraction of the density's mass at nodes below ``threshold`` (the raw share; the toolkit's
        negative-curvature figure is ``negative_mass``).

        Default: -1e-6 of the largest |node|, so that a null space's nodes at +-1e-16 (rounding)
        do not count as negative curvature.
        """
        ok = np.isfinite(self.nodes)
        if threshold is None:
            threshold = -1e-6 * np.abs(self.nodes[ok]).max()
        return float(self.weights[ok][self.nodes[ok] < threshold].sum() / self.probes)

    def negative_mass(self, relative: float = NEGATIVE_RELATIVE) -> NegativeMass:
        """The share of the spectrum below -tau, the one negative-curvature figure of the toolkit (API, CLI, docs).

        tau = max(``relative`` * max |node|, sigma): relative to the spectrum's scale (default 1e-3), and never
        finer than SLQ's resolution, the broadening sigma of ``default_sigma`` (1% of the nodes' spread), below
        which a Gauss node cannot be told from zero (at 1e-6 of the scale the share below zero moved from 15% to
        41% with the probe count on digits-mlp). Its standard error is over the probes' own shares.
        """
        if not (math.isfinite(relative) and relative >= 0):
            raise ValueError(f"relative must be a non-negative number, got {relative}")
        ok = np.isfinite(self.nodes)
        scale = float(np.abs(self.nodes[ok]).max())
        sigma = self.default_sigma()
        threshold = max(relative * scale, sigma)
        per_probe = np.where(ok & (np.nan_to_num(self.nodes, nan=np.inf) < -threshold), self.weights, 0.0).sum(1)
        value = float(per_probe.mean())
        stderr = float(per_probe.std(ddof=1) / math.sqrt(self.probes)) if self.probes > 1 else math.inf
        if value == 0:
            verdict = "none below the threshold"
        elif value > 2 * stderr:
            verdict = "resolved"
        else:
            verdict = "not resolved at this broadening (within 2 standard errors of 0)"
        return NegativeMass(value=value, stderr=stderr, threshold=-threshold, relative=relative, scale=scale,
                            broadening=sigma, verdict=verdict)

    def to_dict(self) -> dict:
        return jsonable({**vars(self), "probes": self.probes, "negative_mass": self.negative_mass()})


def slq(op, probes: int = 16, steps: int = 80, seed: int = 0, reorthogonalize: bool | None = None,
        max_memory: int | str | None = None, progress: bool = False) -> SpectralDensity:
    """``probes`` Rademacher probes, ``steps`` Lanczos steps each, in lockstep (one ``[probes, n]`` product a step).

    ``reorthogonalize``: full reorthogonalization of each probe's basis (default: when
    it fits ``max_memory``, see ``landscape.core.memory.budget``; by default, for an operator of an
    ``Objective`` (``op.obj``), the objective's ``memory_budget()``, which the ranks of a data-parallel
    objective agree on, so that they all make the same choice).
    """
    start_time = time.perf_counter()
    n = op.shape[0]
    if probes < 1 or steps < min(2, n):
        raise ValueError(f"probes must be at least 1 and steps at least 2 (one step is one node per probe: no "
                         f"density), got {probes} and {steps}")
    steps = min(steps, n)
    device = torch.device(op.device)
    if reorthogonalize is None:
        obj = getattr(op, "obj", None)
        if max_memory is None and hasattr(obj, "memory_budget"):
            max_memory = obj.memory_budget()
        reorthogonalize = probes * (steps + 1) * n * 8 <= memory.budget(device, max_memory)
    generator = torch.Generator().manual_seed(seed)
    q = (torch.randint(0, 2, (probes, n), generator=generator, dtype=torch.float64) * 2 - 1) / math.sqrt(n)
    q = q.to(device)
    basis = [q] if reorthogonalize else None
    previous = torch.zeros_like(q)
    alpha = np.zeros((probes, steps))
    beta = np.zeros((probes, steps))
    length = np.full(probes, steps)  # how many steps each probe's recurrence ran
    active = torch.ones(probes, dtype=torch.bool, device=device)
    last_beta = torch.zeros(probes, dtype=torch.float64, device=device)
    n_matvecs, scale = 0, 1e-300
    for j in tqdm(range(steps), desc=f"SLQ {probes} probes", unit="step", disable=None if progress else True,
                  leave=False, mininterval=0.5):
        w = (op @ q.to(op.dtype)).to(torch.float64)
        n_matvecs += probes
        a = (w * q).sum(1)
        w = w - a[:, None] * q - last_beta[:, None] * previous
        if reorthogonalize:
            Q = torch.stack(basis)  # [j + 1, P, n]
            for _ in range(2):
                w = w - torch.einsum("jp,jpn->pn", torch.einsum("jpn,pn->jp", Q, w), Q)
        b = w.norm(dim=1)
        alpha[:, j] = a.cpu().numpy()
        beta[:, j] = b.cpu().numpy()
        scale = max(scale, a.abs().max().item(), b.max().item())
        stopped = active & (b <= 1e-10 * scale)
        for p in torch.nonzero(stopped).flatten().tolist():  # an invariant subspace: the quadrature is exact
            length[p] = j + 1
        active &= ~stopped
        if j == steps - 1 or not active.any():
            break
        previous, last_beta = q, b
        q = torch.where(active[:, None], w / b.clamp_min(1e-300)[:, None], torch.zeros_like(w))
        if reorthogonalize:
            basis.append(q)
    nodes = np.full((probes, steps), np.nan)
    weights = np.full((probes, steps), np.nan)
    for p in range(probes):
        m = length[p]
        T = np.diag(alpha[p, :m]) + np.diag(beta[p, :m - 1], 1) + np.diag(beta[p, :m - 1], -1)
        theta, S = np.linalg.eigh(T)
        nodes[p, :m], weights[p, :m] = theta, S[0] ** 2
    return SpectralDensity(nodes=nodes, weights=weights, n_matvecs=n_matvecs,
                           reorthogonalized=bool(reorthogonalize), seconds=time.perf_counter() - start_time,
                           settings={"probes": probes, "steps": steps, "seed": seed,
                                     "operator": getattr(op, "settings", None)})
