"""Lanczos for extreme eigenpairs of a symmetric operator: thick restart with full reorthogonalization,
or, when no basis fits in memory, the plain three-term recurrence with ghosts removed.

The operator is anything with ``shape (n, n)``, ``dtype``, ``device`` and ``op @ V`` for
``V [k, n]`` (rows in, rows out).

With a stored basis (``basis`` "device", "cpu" or "float32") the Krylov basis Q ``[m + 1, n]``
is kept, each new vector is orthogonalized against the whole basis twice ("twice is
enough"), and the projected matrix T = Q H Q^T is filled from those coefficients, so after a
thick restart (Wu and Simon 2000: keep the wanted Ritz vectors, continue from the residual
direction) and after a breakdown (an invariant subspace: continue with a random vector
orthogonal to the basis) the same Rayleigh-Ritz step applies. A Ritz pair (theta, y = Q^T s)
of the basis built so far has residual ||H y - theta y|| = beta * |s_last| in exact
arithmetic, where beta is the norm of the last orthogonalized vector; the iteration stops
when that is at most ``tol * max |theta|`` for every wanted pair, so |lambda - theta| <=
residual and usually ~ residual^2 / gap. The residuals returned are measured, not inferred:
the raw products H q_i are kept beside the basis, so H y = sum_i s_i (H q_i) as the operator
computed it, rounding included (a float32 operator's ~1e-7 shows there), and ``converged``
says whether those meet the tolerance. When the products do not fit the budget beside the
basis they are not kept, and the final residuals cost k more products, H y for each pair.

``tol`` is relative to the largest |eigenvalue|: eigenvalues much smaller than
lambda_max are known to about tol * |lambda_max| in absolute terms, and eigenvalues
closer together than that are not told apart. A single start vector sees one direction
of each eigenspace, so of an eigenvalue repeated exactly (or within tol * |lambda_max|),
Lanczos may return one copy and let the next eigenvalues fill the remaining places.

Memory (``basis``), for n parameters, a basis of m vectors (``basis_size``) and k pairs; "kept"
counts vectors of n, the peak of all tensors alive at once as ``landscape.core.memory.LiveTensors``
measures it on the CPU (scripts/bench_scale.py prints it against m):

- ``"device"``: 2 (m + 1) float64 on the operator's device (m + 1 when the products are not
  kept), plus 2 k + 3 more at the peak (the start, the new vector and its orthogonalization,
  the k Ritz vectors and their products at the end). Accuracy as above. Products: the
  iteration's steps, + k when the products are not kept.
- ``"cpu"``: the same in host memory, pinned when the operator is on CUDA (2 vectors on the
  device). The same numbers: bit for bit on a CPU operator, to the rounding of the
  reductions (~1e-15) on CUDA. It costs two transfers of n per product and the
  orthogonalization at host speed.
- ``"float32"``: basis and products stored in float32, 2 (m + 1) float32 = m + 1 float64's
  worth, on the device when that fits the budget, else on the host; the arithmetic is in
  float64 on blocks of columns widened one at a time (about one vector of scratch, at least
  1024 (m + 1) numbers), plus the 2 k + 3 float64 vectors of "device". Every stored vector
  is rounded at float32's 6e-8, so the residuals cannot go below a floor of ~1e-7
  |lambda_max|: the iteration stops at ``max(tol, FLOAT32_TOL = 1e-7)`` and ``converged``
  is False when ``tol`` is below what the measured residuals reach. Measured
  (tests/landscape/linalg/test_lanczos_memory.py, and 38 runs on the test spectra and a Hessian at
  tol 1e-6 and 1e-10): eigenvalues within 4e-9 |lambda_max| of "device" (stated: 1e-8),
  measured residuals at most max(tol, 1.4e-7) |lambda_max| (stated: 2e-7). On a float32
  operator, whose products carry ~1e-7 anyway, that is below the operator's own rounding.
  Products: as "device".
- ``"none"``: no basis. Pass 1 keeps 4 float64 vectors on the operator's device (the start,
  q_{j-1}, q_j, H q_j) whatever the number of steps, plus O(steps) numbers (T) and O(steps k)
  (Ritz coefficients); the second pass for eigenvectors adds the k Ritz vectors: k + 4 at the
  peak. Eigenvalues to ``tol * |lambda_max|`` (Paige: the bound beta |s_last| still holds
  without reorthogonalization, up to rounding). Products: the steps for eigenvalues alone
  (``eigenvectors=False``), 2 steps - 1 + k with eigenvectors (the second pass, then one
  product per residual). Without reorthogonalization convergence slows once ghosts appear:
  digits-mlp's top 5 took 19 steps in float64 (18 with a basis) and 36 on the float32
  operator (16); its 3 + 3 ends at tol 1e-8, 470 steps (a basis of 40: over 300). On a
  float32 operator the measured residuals of slowly converging pairs can stay above the
  bound (5e-6 at tol 1e-6 there), and ``converged`` says so.

``"auto"`` (the default) takes the first that fits: "device" when the basis and its
products, 2 (m + 1) n float64, fit the device budget (``max_memory``); "device" without the
products when the basis alone fits (the products are not worth moving the basis to the host:
k more products cost less than the transfers); then "cpu" likewise, for a CUDA operator,
against the host's budget (``landscape.core.memory.budget`` of the CPU, or a data-parallel objective's
``host_budget()``, the least over ranks); else "none". On a CPU operator the host is the device, and
``max_memory`` is its budget. The ranks of a data-parallel objective must make the same choice (their
products are collectives): an operator with an objective (``op.obj``) plans with the objective's
budgets, which such an objective takes as the least over ranks. Explicit "device", "cpu"
and "float32" keep the products when both fit the budget where they are stored, and
recompute them otherwise. ``EigenResult.settings`` records the choice: ``basis``,
``basis_device``, ``products`` ("kept" or "recomputed"), ``residuals`` ("measured", or
"estimated" for "none" without eigenvectors) and, for "none", ``ghosts`` (Ritz values
dropped) and ``regenerated`` (whether the second pass reproduced the first bit for bit).

The basis-free variant (``basis="none"``) is :mod:`landscape.linalg.three_term`.
"""

from __future__ import annotations

import math
import operator
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from landscape.core import memory
from landscape.core.results import jsonable
from landscape.linalg.three_term import apply, three_term, wanted

Tensor = torch.Tensor
WHICH = ("largest", "smallest", "both")
BASES = ("auto", "device", "cpu", "float32", "none")
FLOAT32_TOL = 1e-7  # a float32 basis stops at this relative residual at the least: its rounding's floor


@dataclass
class EigenResult:
    """Eigenpairs of a symmetric operator, sorted by eigenvalue, descending.

    ``eigenvalues [k]`` float64; ``eigenvectors [k, n]`` float64 (unit norm), None when not asked for;
    ``residuals [k]`` = ||H v - lambda v|| as the operator computes H v; ``converged`` when the
    iteration met its stopping test and every residual is at most ``tol * max |lambda|``;
    ``n_matvecs`` products with the operator; ``restarts``; ``settings`` to reproduce it.
    """

    eigenvalues: np.ndarray
    eigenvectors: Tensor | None
    residuals: np.ndarray
    converged: bool
    n_matvecs: int
    restarts: int
    which: str
    tol: float
    seconds: float
    settings: dict = field(default_factory=dict)  # seed, max_steps, basis_size, basis: what reproduces it

    def to_dict(self) -> dict:
        """The numbers and the cost, without the eigenvectors (JSON-ready)."""
        return jsonable({key: value for key, value in vars(self).items() if key != "eigenvectors"})


def lanczos(op, k: int = 1, which: str = "largest", tol: float = 1e-6, max_steps: int | None = None,
            seed: int = 0, v0: Tensor | None = None, basis_size: int | None = None,
            max_memory: int | str | None = None, basis: str = "auto", eigenvectors: bool = True,
            progress: bool = False) -> EigenResult:
    """The ``k`` largest, smallest, or both (k at each end) eigenpairs of the symmetric operator ``op``.

    Args:
        tol: a Ritz pair is converged when ||H v - theta v|| <= tol * max |theta|.
        max_steps: the budget of products with ``op`` in the iteration (default ``max(300, 30 k)``).
        seed: seeds the random start (and any restart after a breakdown), on the CPU.
        v0: a warm start ``[n]`` or ``[j, n]`` (e.g. last step's eigenvectors): the start
            vector is their normalized sum plus a 1% random part, so that eigenvalues
            outside their span (a new top eigenvalue) still surface. What it saves depends
            on how far the operator moved (scripts/bench_spectrum.py measures it).
        basis_size: the Krylov basis size before a thick restart (default ``max(2 k + 20, 40)``,
            at most ``n``); unused by ``basis="none"``.
        max_memory: bytes the basis and the kept products may take on the operator's device
            (default: for an operator of an ``Objective``, ``op.obj``, the objective's
            ``memory_budget()``, which the ranks of a data-parallel objective agree on; else the
            free-memory share of ``landscape.core.memory.budget``).
        basis: where and how the Krylov basis is kept: "auto" (default), "device", "cpu",
            "float32" or "none" (no basis: the three-term recurrence); the module docstring
            gives each one's memory, accuracy and cost.
        eigenvectors: return them (``basis="none"`` pays a second pass for them).
        progress: show a progress bar (products, and the worst wanted residual).
    """
    start_time = time.perf_counter()
    n = op.shape[0]
    if which not in WHICH:
        raise ValueError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    if basis not in BASES:
        raise ValueError(f"basis must be one of {', '.join(BASES)}, got {basis!r}")
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
    device = torch.device(op.device)
    obj = getattr(op, "obj", None)  # a curvature operator's objective: its budgets (data parallel: agreed by the ranks)
    if max_memory is None and hasattr(obj, "memory_budget"):
        max_memory = obj.memory_budget()
    host_memory = obj.host_budget() if hasattr(obj, "host_budget") and device.type != "cpu" else None
    basis, where, dtype, keep = plan_basis(basis, device, n, m, max_memory, host_memory)
    work = torch.device(op.device) if basis == "none" else where
    pin = work.type == "cpu" and torch.device(op.device).type == "cuda"

    generator = torch.Generator().manual_seed(seed)

    def random_vector() -> Tensor:
        return torch.randn(n, generator=generator, dtype=torch.float64).to(work)

    if v0 is not None:
        rows = v0.detach().reshape(-1, n).to(work, torch.float64)
        start = (rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-300)).sum(0)
        if not torch.isfinite(start).all() or start.norm() == 0:
            raise ValueError("v0 must be a nonzero, finite vector (or rows of them)")
        noise = random_vector()  # so that eigenvalues outside v0's span surface before v0's pairs converge
        start = start / start.norm() + 1e-2 * noise / noise.norm()
    else:
        start = random_vector()
    start = start / start.norm()
    bar = tqdm(total=max_steps, desc=f"Lanczos {which} {k}", unit="matvec", disable=None if progress else True,
               leave=False, mininterval=0.5)
    settings = {"seed": seed, "max_steps": max_steps, "basis_size": None if basis == "none" else m,
                "warm_start": v0 is not None, "basis": basis, "basis_device": str(work),
                "products": "kept" if keep else "recomputed", "residuals": "measured",
                "operator": getattr(op, "settings", None)}
    try:
        if basis == "none":
            found = three_term(op, start, k, which, tol, max_steps, want, eigenvectors, bar, settings)
        else:
            stop = max(tol, FLOAT32_TOL) if dtype == torch.float32 else tol
            Q = _Rows(m + 1, n, where, dtype, pin)
            HQ = _Rows(m + 1, n, where, dtype, pin) if keep else None  # the raw products op @ Q[i]
            found = _thick_restart(op, start, k, which, tol, stop, max_steps, want, m, Q, HQ, random_vector,
                                   v0 is None, eigenvectors, bar)
    finally:
        bar.close()
    values, vectors, residuals, converged, steps, restarts = found
    return EigenResult(eigenvalues=values, eigenvectors=vectors, residuals=residuals, converged=converged,
                       n_matvecs=steps, restarts=restarts, which=which, tol=tol,
                       seconds=time.perf_counter() - start_time, settings=settings)


def plan_basis(basis: str, device: torch.device, n: int, m: int, max_memory: int | str | None,
          host_memory: int | None = None) -> tuple[str, torch.device | None, torch.dtype | None, bool]:
    """(basis, where it is stored, its dtype, whether the products are kept beside it); ``host_memory``: the
    host's budget for a CUDA operator (default ``landscape.core.memory.budget`` of the CPU)."""
    host = torch.device("cpu")
    device_budget = memory.budget(device, max_memory)
    host_budget = device_budget if device.type == "cpu" else memory.budget(host, host_memory)
    rows = (m + 1) * n * 8  # bytes of one float64 [m + 1, n]
    if basis == "auto":
        basis = ("device" if rows <= device_budget else
                 "cpu" if device.type != "cpu" and rows <= host_budget else "none")
    if basis == "none":
        return basis, None, None, False
    dtype = torch.float32 if basis == "float32" else torch.float64
    if dtype == torch.float32:
        rows //= 2
    where = host if basis == "cpu" or (basis == "float32" and rows > device_budget) else device
    return basis, where, dtype, 2 * rows <= (device_budget if where == device else host_budget)


class _Rows:
    """``[rows, n]`` vectors stored on ``device`` as ``dtype`` (``pin``: in pinned host memory), read and
    combined in float64; float32 rows are widened a block of columns at a time."""

    def __init__(self, rows: int, n: int, device: torch.device, dtype: torch.dtype, pin: bool):
        self.data = torch.zeros(rows, n, dtype=dtype, device=device, pin_memory=pin)
        self.device, self.n = device, n
        # a float32 block widened to float64 is [rows, block]: about one vector of n (at least 1024 columns)
        self.block = n if dtype == torch.float64 else max(1024, -(-n // rows))

    def __getitem__(self, i: int) -> Tensor:
        return self.data[i]

    def __setitem__(self, i: int, v: Tensor) -> None:
        self.data[i] = v

    def _columns(self):
        return (slice(c, c + self.block) for c in range(0, self.n, self.block))

    def dot(self, size: int, w: Tensor) -> Tensor:
        """``rows[:size] @ w`` for ``w [n]`` float64 -> ``[size]``."""
        if self.data.dtype == torch.float64:
            return self.data[:size] @ w
        return sum(self.data[:size, c].double() @ w[c] for c in self._columns())

    def combine(self, coef: Tensor, size: int) -> Tensor:
        """``coef @ rows[:size]`` for ``coef [size]`` or ``[r, size]`` float64 -> ``[n]`` or ``[r, n]``."""
        if self.data.dtype == torch.float64:
            return coef @ self.data[:size]
        out = torch.empty(*coef.shape[:-1], self.n, dtype=torch.float64, device=self.device)
        for c in self._columns():
            out[..., c] = coef @ self.data[:size, c].double()
        return out

    def replace(self, mix: Tensor, size: int) -> None:
        """``rows[:r] = mix @ rows[:size]`` for ``mix [r, size]`` (a thick restart)."""
        if self.data.dtype == torch.float64:
            self.data[:len(mix)] = mix @ self.data[:size]
            return
        for c in self._columns():
            self.data[:len(mix), c] = mix @ self.data[:size, c].double()


def _thick_restart(op, start, k, which, tol, stop, max_steps, want, m, Q: _Rows, HQ: _Rows | None, random_vector,
                   from_random, eigenvectors, bar):
    """The iteration stops when the wanted pairs' residuals are below ``stop * max |theta|`` (``tol`` but
    for a float32 basis); ``converged`` then tells whether the measured ones meet ``tol``."""
    n = op.shape[0]
    where = Q.device
    staging = None  # a pinned host vector that the products land in, when the basis is on the host of CUDA
    if where.type == "cpu" and torch.device(op.device).type != "cpu":
        staging = torch.empty(n, dtype=torch.float64, pin_memory=Q.data.is_pinned())
    T = np.zeros((m + 1, m + 1))
    Q[0] = start
    size, steps, restarts, beta = 1, 0, 0, 0.0
    j = 0  # index of the vector to expand next
    theta = S = None
    run = 0  # length of the current Krylov run; from_random: did it start from a random vector
    guard = None  # after a warm start broke down: where the random run that explores the rest begins
    while True:
        product = apply(op, Q[j])
        w = staging.copy_(product).clone() if staging is not None else product.to(where)
        if HQ is not None:
            HQ[j] = w
        steps += 1
        run += 1
        coef = Q.dot(size, w)
        w = w - Q.combine(coef, size)
        again = Q.dot(size, w)
        w = w - Q.combine(again, size)
        coef = (coef + again).cpu().numpy()
        T[:size, j] = coef
        T[j, :size] = coef
        beta = w.norm().item()
        theta, S = np.linalg.eigh(T[:size, :size])
        scale = max(np.abs(theta).max(), np.finfo(float).tiny)
        residuals = beta * np.abs(S[-1])
        idx = wanted(theta, k, which)
        breakdown = beta <= 1e-12 * scale
        # At a breakdown the complement of the basis is unexplored and may hold more extreme
        # eigenvalues, unless a random vector broke down at once: then it is an eigenvector,
        # and the complement is one eigenspace, of the Rayleigh quotient T[j, j].
        settled = not breakdown or (from_random and run == 1
                                    and _cannot_enter(T[j, j], theta[idx], k, which, stop * scale))
        done = (len(idx) == want and (size > want or size == n) and np.all(residuals[idx] <= stop * scale)
                and settled and _explored(T, guard, size, beta, which, stop * scale))
        bar.update()
        bar.set_postfix(residual=f"{residuals[idx].max() / scale:.1e}", refresh=False)
        if done or steps >= max_steps or size == n:
            break
        if breakdown:  # an invariant subspace: continue in its complement
            w = random_vector()
            for _ in range(2):
                w = w - Q.combine(Q.dot(size, w), size)
            beta = w.norm().item()
            if not from_random:
                guard = -1  # placed below, once the new vector has its index
            from_random, run = True, 0
        if size == m:  # thick restart: keep the wanted Ritz vectors and as many more of the best
            keep = _restart_set(theta, idx, m, which)
            mix = torch.as_tensor(S[:, keep].T.copy(), device=where)
            Q.replace(mix, size)
            if HQ is not None:
                HQ.replace(mix, size)
            T[:] = 0
            T[np.arange(len(keep)), np.arange(len(keep))] = theta[keep]
            size = len(keep)
            restarts += 1
            guard = None if guard is None else 0  # the kept Ritz vectors mix the runs: judge the whole basis
        Q[size] = w / beta
        if guard == -1:
            guard = size
        j = size
        size += 1
    idx = idx[np.argsort(-theta[idx], kind="stable")]
    mix = torch.as_tensor(S[:, idx].T.copy(), device=where)
    vectors = Q.combine(mix, size)
    if HQ is not None:
        products = HQ.combine(mix, size)
    else:  # the products were not kept: k more of them
        products = apply(op, vectors).to(where)
        steps += len(idx)
    values = theta[idx]
    shift = torch.as_tensor(values, device=where)[:, None].expand_as(vectors)
    residuals = products.addcmul_(shift, vectors, value=-1).norm(dim=1).cpu().numpy()
    converged = bool((done or size == n) and np.all(residuals <= tol * scale))
    return (values, vectors.to(op.device) if eigenvectors else None, residuals, converged, steps, restarts)


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
