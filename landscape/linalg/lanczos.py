"""Thick-restart Lanczos with full reorthogonalization, for extreme eigenpairs of a symmetric operator.

The operator is anything with ``shape (n, n)``, ``dtype``, ``device`` and ``op @ V`` for
``V [k, n]`` (rows in, rows out). The Krylov basis Q ``[m, n]`` is kept in float64, on the
operator's device or on the CPU when it does not fit the memory budget. Each new vector
is orthogonalized against the whole basis twice ("twice is enough"), and the projected
matrix T = Q H Q^T is filled from those coefficients, so after a thick restart (Wu and
Simon 2000: keep the wanted Ritz vectors, continue from the residual direction) and after
a breakdown (an invariant subspace: continue with a random vector orthogonal to the
basis) the same Rayleigh-Ritz step applies. A Ritz pair (theta, y = Q^T s) of the basis
built so far has residual ||H y - theta y|| = beta * |s_last| in exact arithmetic, where
beta is the norm of the last orthogonalized vector; the iteration stops when that is at
most ``tol * max |theta|`` for every wanted pair, so |lambda - theta| <= residual and
usually ~ residual^2 / gap. The residuals returned are measured, not inferred: the raw
products H q_i are kept beside the basis, so H y = sum_i s_i (H q_i) as the operator
computed it, rounding included (a float32 operator's ~1e-7 shows there), and
``converged`` says whether those meet the tolerance.

``tol`` is relative to the largest |eigenvalue|: eigenvalues much smaller than
lambda_max are known to about tol * |lambda_max| in absolute terms, and eigenvalues
closer together than that are not told apart. A single start vector sees one direction
of each eigenspace, so of an eigenvalue repeated exactly (or within tol * |lambda_max|),
Lanczos may return one copy and let the next eigenvalues fill the remaining places.
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from landscape import memory

Tensor = torch.Tensor
WHICH = ("largest", "smallest", "both")


@dataclass
class EigenResult:
    """Eigenpairs of a symmetric operator, sorted by eigenvalue, descending.

    ``eigenvalues [k]`` float64; ``eigenvectors [k, n]`` float64 (unit norm);
    ``residuals [k]`` = ||H v - lambda v|| as the operator computes H v; ``converged`` when the
    iteration met its stopping test and every residual is at most ``tol * max |lambda|``;
    ``n_matvecs`` products with the operator; ``restarts``; ``settings`` to reproduce it.
    """

    eigenvalues: np.ndarray
    eigenvectors: Tensor
    residuals: np.ndarray
    converged: bool
    n_matvecs: int
    restarts: int
    which: str
    tol: float
    seconds: float
    settings: dict = field(default_factory=dict)  # seed, max_steps, basis_size: what reproduces it

    def to_dict(self) -> dict:
        """The numbers and the cost, without the eigenvectors (JSON-ready)."""
        return {"eigenvalues": self.eigenvalues.tolist(), "residuals": self.residuals.tolist(),
                "converged": self.converged, "n_matvecs": self.n_matvecs, "restarts": self.restarts,
                "which": self.which, "tol": self.tol, "seconds": self.seconds, "settings": self.settings}


def _wanted(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices into ascending ``theta`` of the wanted Ritz values."""
    m = len(theta)
    if which == "largest":
        return np.arange(max(0, m - k), m)
    if which == "smallest":
        return np.arange(min(k, m))
    low, high = np.arange(min(k, m)), np.arange(max(0, m - k), m)
    return np.unique(np.concatenate([low, high]))


def lanczos(op, k: int = 1, which: str = "largest", tol: float = 1e-6, max_steps: int | None = None,
            seed: int = 0, v0: Tensor | None = None, basis_size: int | None = None,
            max_memory: int | str | None = None, progress: bool = False) -> EigenResult:
    """The ``k`` largest, smallest, or both (k at each end) eigenpairs of the symmetric operator ``op``.

    Args:
        tol: a Ritz pair is converged when ||H v - theta v|| <= tol * max |theta|.
        max_steps: the budget of products with ``op`` (default ``max(300, 30 k)``).
        seed: seeds the random start (and any restart after a breakdown), on the CPU.
        v0: a warm start ``[n]`` or ``[j, n]`` (e.g. last step's eigenvectors): the start
            vector is their normalized sum plus a 1% random part, so that eigenvalues
            outside their span (a new top eigenvalue) still surface. What it saves depends
            on how far the operator moved (scripts/bench_spectrum.py measures it).
        basis_size: the Krylov basis size before a thick restart (default ``max(2 k + 20, 40)``,
            at most ``n``).
        max_memory: bytes the basis and the kept products (2 (m + 1) n float64 numbers)
            may take on the operator's device before they move to the CPU (default: the
            free-memory share of ``landscape.memory.budget``).
        progress: show a progress bar (products, and the worst wanted residual).
    """
    start_time = time.perf_counter()
    n = op.shape[0]
    if which not in WHICH:
        raise ValueError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
    try:
        k = operator.index(k)
    except TypeError:
        k = 0
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    want = k * (2 if which == "both" else 1)
    if want > n:
        raise ValueError(f"asked for {want} eigenvalues of a {n} x {n} operator")
    if tol <= 0:
        raise ValueError(f"tol must be positive, got {tol}")
    m = min(n, basis_size or max(2 * want + 20, 40))
    if m < min(n, want + 2):
        raise ValueError(f"basis_size {m} is too small for {want} eigenpairs (need at least {want + 2})")
    max_steps = max(300, 30 * want) if max_steps is None else max_steps
    if max_steps < want:
        raise ValueError(f"max_steps {max_steps} is below the {want} products that {want} eigenpairs need")
    basis_device = op.device
    if 2 * (m + 1) * n * 8 > memory.budget(torch.device(op.device), max_memory):
        basis_device = torch.device("cpu")

    generator = torch.Generator().manual_seed(seed)

    def random_vector() -> Tensor:
        return torch.randn(n, generator=generator, dtype=torch.float64).to(basis_device)

    Q = torch.zeros(m + 1, n, dtype=torch.float64, device=basis_device)
    HQ = torch.zeros_like(Q)  # the raw products op @ Q[i], for measured residuals
    T = np.zeros((m + 1, m + 1))
    if v0 is not None:
        rows = v0.detach().reshape(-1, n).to(basis_device, torch.float64)
        start = (rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-300)).sum(0)
        if not torch.isfinite(start).all() or start.norm() == 0:
            raise ValueError("v0 must be a nonzero, finite vector (or rows of them)")
        noise = random_vector()  # so that eigenvalues outside v0's span surface before v0's pairs converge
        start = start / start.norm() + 1e-2 * noise / noise.norm()
    else:
        start = random_vector()
    Q[0] = start / start.norm()
    size, steps, restarts, beta = 1, 0, 0, 0.0
    j = 0  # index of the vector to expand next
    theta = S = None
    from_random, run = v0 is None, 0  # is the current Krylov run started from a random vector; its length
    guard = None  # after a warm start broke down: where the random run that explores the rest begins
    bar = tqdm(total=max_steps, desc=f"Lanczos {which} {k}", unit="matvec", disable=None if progress else True,
               leave=False, mininterval=0.5)
    while True:
        w = (op @ Q[j].to(op.device, op.dtype)[None])[0].to(basis_device, torch.float64)
        if not torch.isfinite(w).all():
            bar.close()
            raise ValueError("the operator returned a non-finite product (NaN or inf); is the loss finite "
                             "at this point?")
        HQ[j] = w
        steps += 1
        run += 1
        coef = Q[:size] @ w
        w = w - coef @ Q[:size]
        again = Q[:size] @ w
        w = w - again @ Q[:size]
        coef = (coef + again).cpu().numpy()
        T[:size, j] = coef
        T[j, :size] = coef
        beta = w.norm().item()
        theta, S = np.linalg.eigh(T[:size, :size])
        scale = max(np.abs(theta).max(), np.finfo(float).tiny)
        residuals = beta * np.abs(S[-1])
        idx = _wanted(theta, k, which)
        breakdown = beta <= 1e-12 * scale
        # At a breakdown the complement of the basis is unexplored and may hold more extreme
        # eigenvalues, unless a random vector broke down at once: then it is an eigenvector,
        # and the complement is one eigenspace, of the Rayleigh quotient T[j, j].
        settled = not breakdown or (from_random and run == 1
                                    and _cannot_enter(T[j, j], theta[idx], k, which, tol * scale))
        done = (len(idx) == want and (size > want or size == n) and np.all(residuals[idx] <= tol * scale)
                and settled and _explored(T, guard, size, beta, which, tol * scale))
        bar.update()
        bar.set_postfix(residual=f"{residuals[idx].max() / scale:.1e}", refresh=False)
        if done or steps >= max_steps or size == n:
            break
        if breakdown:  # an invariant subspace: continue in its complement
            w = random_vector()
            for _ in range(2):
                w = w - (Q[:size] @ w) @ Q[:size]
            beta = w.norm().item()
            if not from_random:
                guard = -1  # placed below, once the new vector has its index
            from_random, run = True, 0
        if size == m:  # thick restart: keep the wanted Ritz vectors and as many more of the best
            keep = _restart_set(theta, idx, m, which)
            mix = torch.as_tensor(S[:, keep].T.copy(), device=basis_device)
            Y, HQ[:len(keep)] = mix @ Q[:size], mix @ HQ[:size]
            T[:] = 0
            T[np.arange(len(keep)), np.arange(len(keep))] = theta[keep]
            Q[:len(keep)] = Y
            size = len(keep)
            restarts += 1
            guard = None if guard is None else 0  # the kept Ritz vectors mix the runs: judge the whole basis
        Q[size] = w / beta
        if guard == -1:
            guard = size
        j = size
        size += 1
    bar.close()
    idx = idx[np.argsort(-theta[idx], kind="stable")]
    mix = torch.as_tensor(S[:, idx].T.copy(), device=basis_device)
    vectors, products = mix @ Q[:size], mix @ HQ[:size]
    values = theta[idx]
    residuals = (products - torch.as_tensor(values, device=basis_device)[:, None] * vectors).norm(dim=1).cpu().numpy()
    converged = bool((done or size == n) and np.all(residuals <= tol * scale))
    return EigenResult(eigenvalues=values, eigenvectors=vectors.to(op.device), residuals=residuals,
                       converged=converged, n_matvecs=steps, restarts=restarts, which=which, tol=tol,
                       seconds=time.perf_counter() - start_time,
                       settings={"seed": seed, "max_steps": max_steps, "basis_size": m, "warm_start": v0 is not None,
                                 "basis_device": str(basis_device)})


def _explored(T: np.ndarray, guard: int | None, size: int, beta: float, which: str, slack: float) -> bool:
    """Has the random run in ``T[guard:size]`` converged its extreme Ritz value(s), as a fresh start must?

    A random start touches every eigenspace; a warm start need not. So after a warm start
    broke down, the random run that continues in the complement must converge at the
    wanted end on its own before the combined answer can be trusted.
    """
    if guard is None:
        return True
    theta, S = np.linalg.eigh(T[guard:size, guard:size])
    ends = {"largest": [-1], "smallest": [0], "both": [0, -1]}[which]
    return bool(np.all(beta * np.abs(S[-1, ends]) <= slack))


def _cannot_enter(q: float, values: np.ndarray, k: int, which: str, slack: float) -> bool:
    """Would another eigenvalue ``q`` leave the wanted ``values`` (ascending) unchanged?"""
    if which == "largest":
        return q <= values.min() + slack
    if which == "smallest":
        return q >= values.max() - slack
    return values[:k].max() - slack <= q <= values[-k:].min() + slack


def _restart_set(theta: np.ndarray, idx: np.ndarray, m: int, which: str) -> np.ndarray:
    """The wanted Ritz indices, then the next ones towards the wanted end(s), about half the basis."""
    size = len(theta)
    position = np.arange(size)
    priority = {"smallest": position, "largest": size - 1 - position,
                "both": np.minimum(position, size - 1 - position)}[which]
    order = np.argsort(priority, kind="stable")
    return np.sort(order[:max(len(idx) + 1, m // 2)])



