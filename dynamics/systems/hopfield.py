"""Hopfield networks: Hebbian storage, retrieval dynamics, storage capacity; modern Hopfield as a contrast.

Classical (Hopfield 1982): P patterns xi_mu in {-1, +1}^N are stored in the Hebbian weights

    W = (1/N) sum_mu xi_mu xi_mu^T,  W_ii = 0,     i.e. W = (1/N) X^T X - (P/N) I  for X [P, N],

and a state s in {-1, +1}^N moves by s_i <- sign(h_i), h_i = sum_j W_ij s_j, with sign(0) keeping s_i.
Asynchronous updates (one unit at a time, here in a seeded random order per sweep) never raise the
energy E(s) = -1/2 s^T W s when W is symmetric with zero diagonal (a flip changes it by
-(s_i' - s_i) h_i <= 0), so they end at a fixed point. Synchronous updates (s <- sign(W s), all
units at once) end at a fixed point or a 2-cycle (Goles et al. 1985).

Runs are batched: states are ``S [R, N]``, one row per run, and an asynchronous sweep is N
matrix-vector products ``W[i] @ S^T``, each updating unit i of all runs at once.

    W = store(patterns)                               # [N, N]
    out = retrieve(W, patterns, mode="async")         # out.states [P, N]: the fixed points reached
    cap = capacity(1000, [0.05, 0.10, 0.138, 0.16])  # flipped-bit fractions against AGS theory

Modern (Ramsauer et al. 2020, "Hopfield networks is all you need"): continuous states updated by
xi <- X^T softmax(beta X xi), one attention step; see :func:`modern_retrieve`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq, minimize_scalar
from scipy.special import erf, erfc

from landscape.core.results import Result

__all__ = ["store", "energy", "retrieve", "Retrieval", "capacity", "Capacity", "ags_flipped",
           "ags_critical_load", "modern_retrieve"]


MODES = ("async", "sync")  # one unit at a time in a random order, or all at once


def _pm1(x, name: str) -> np.ndarray:
    """x as a float64 array, checked to hold only -1 and +1."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or not np.all(np.abs(x) == 1):
        raise ValueError(f"{name} must be a non-empty array of -1 and +1")
    return x


def _weights(W) -> np.ndarray:
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1] or W.shape[0] == 0:
        raise ValueError(f"W must be a square [N, N] matrix, got shape {W.shape}")
    return W


def _states(S, N: int, name: str) -> np.ndarray:
    """``S [R, N]`` (or one state ``[N]``, made ``[1, N]``) of +-1 as float64."""
    S = np.atleast_2d(_pm1(S, name))
    if S.ndim != 2 or S.shape[1] != N:
        raise ValueError(f"{name} must be [R, {N}] to match W [{N}, {N}], got shape {S.shape}")
    return S


def store(patterns) -> np.ndarray:
    """Hebbian weights ``W [N, N]`` = (1/N) sum_mu xi_mu xi_mu^T with zero diagonal, from ``patterns [P, N]`` of +-1."""
    X = _pm1(patterns, "patterns")
    if X.ndim != 2:
        raise ValueError(f"patterns must be [P, N], got shape {X.shape}")
    W = X.T @ X  # integer-valued, exact in float64
    np.fill_diagonal(W, 0.0)
    return W / X.shape[1]


def energy(W, S) -> np.ndarray:
    """E = -1/2 s^T W s for each row of ``S [R, N]`` -> ``[R]`` (a 0-d array for one state ``[N]``)."""
    W = _weights(W)
    S = np.asarray(S, dtype=np.float64)
    if S.ndim not in (1, 2) or S.shape[-1] != W.shape[0]:
        raise ValueError(f"S must be [R, {W.shape[0]}] or [{W.shape[0]}] to match W, got shape {S.shape}")
    return -0.5 * np.sum((S @ W.T) * S, axis=-1)


@dataclass
class Retrieval(Result):
    """Where ``retrieve`` ended, per run: ``states [R, N]`` (int8, +-1), ``sweeps [R]`` (sweeps or
    synchronous steps run, counting the one that found the fixed point or closed the cycle),
    ``converged [R]`` (a fixed point), ``cycle [R]`` (synchronous only: s(t) = s(t-2) != s(t-1)),
    ``energies [T + 1, R]`` (E at the start and after each sweep or step; None unless tracked)
    and, for ``async``, the visiting ``orders [T, N]`` of the sweeps (None for ``sync``)."""

    states: np.ndarray
    sweeps: np.ndarray
    converged: np.ndarray
    cycle: np.ndarray
    energies: np.ndarray | None
    orders: np.ndarray | None
    mode: str
    max_sweeps: int
    seed: int
    seconds: float


def _sign_keep(h: np.ndarray, s: np.ndarray) -> np.ndarray:
    """sign(h), with s where h == 0."""
    new = np.sign(h)
    np.copyto(new, s, where=new == 0)
    return new


def _fields_matrix(W: np.ndarray) -> np.ndarray:
    """The matrix whose products give the fields: N W when that is a matrix of integers that gives back W
    exactly (``store``'s Hebbian weights, integers over N), else W. The signs of N W s and W s agree, and
    integer sums are exact, so an exact tie (h_i = 0, which keeps s_i) is computed as 0, not as the
    +-3e-17 that summing multiples of 1/N leaves (N = 22, P = 4 shows it)."""
    N = W.shape[0]
    integers = np.rint(W * N)
    exact = np.abs(integers).max(initial=0) < 2**52 and np.array_equal(integers / N, W)
    return integers if exact else W


def retrieve(W, S0, *, mode: str = "async", max_sweeps: int = 100, seed: int = 0,
             track_energy: bool = False) -> Retrieval:
    """Run the dynamics s_i <- sign(sum_j W_ij s_j) (sign(0) keeps s_i) from each row of ``S0 [R, N]``.

    ``mode="async"``: each sweep visits all units once in a random order (drawn from ``seed``, the
    same order for all runs), a run stopping at the first sweep that changes none of its units.
    ``mode="sync"``: s <- sign(W s), a run stopping at a fixed point or a 2-cycle. Either stops after
    ``max_sweeps``. Energy descent (async) and "fixed point or 2-cycle" (sync) need W symmetric.
    """
    t0 = time.perf_counter()
    W = _weights(W)
    N = W.shape[0]
    fields = _fields_matrix(W)
    S = _states(S0, N, "S0").T.copy()  # [N, R]: unit i of all runs is the contiguous row S[i]
    if mode not in MODES:
        raise ValueError(f"mode must be 'async' or 'sync', got {mode!r}")
    if int(max_sweeps) != max_sweeps or max_sweeps < 1:
        raise ValueError(f"max_sweeps must be a positive integer, got {max_sweeps}")
    R = S.shape[1]
    rng = np.random.default_rng(seed)
    sweeps = np.zeros(R, dtype=np.int64)
    converged = np.zeros(R, dtype=bool)
    cycle = np.zeros(R, dtype=bool)
    active = np.arange(R)
    energies = [energy(W, S.T)] if track_energy else None
    orders = [] if mode == "async" else None
    previous = None  # sync: the active runs' states one step back
    for _ in range(int(max_sweeps)):
        A = S[:, active]
        if mode == "async":
            order = rng.permutation(N)
            orders.append(order)
            changed = np.zeros(len(active), dtype=bool)
            for i in order:
                new = _sign_keep(fields[i] @ A, A[i])
                changed |= new != A[i]
                A[i] = new
            done, looped = ~changed, np.zeros(len(active), dtype=bool)
        else:
            new = _sign_keep(fields @ A, A)
            done = np.all(new == A, axis=0)
            looped = ~done & (np.all(new == previous, axis=0) if previous is not None else False)
            previous, A = A, new
        S[:, active] = A
        sweeps[active] += 1
        converged[active] = done
        cycle[active] = looped
        if track_energy:
            energies.append(energy(W, S.T))
        keep = ~(done | looped)
        active = active[keep]
        if len(active) == 0:
            break
        if previous is not None:
            previous = previous[:, keep]
    return Retrieval(states=S.T.astype(np.int8), sweeps=sweeps, converged=converged, cycle=cycle,
                     energies=None if energies is None else np.stack(energies),
                     orders=None if orders is None else np.stack(orders), mode=mode,
                     max_sweeps=int(max_sweeps), seed=seed, seconds=time.perf_counter() - t0)


# -- AGS theory -------------------------------------------------------------------------------

def _ags_lhs(y: float) -> float:
    """erf(y)/y - (2/sqrt(pi)) exp(-y^2): equals sqrt(2 alpha) at the T = 0 replica-symmetric solution."""
    return erf(y) / y - 2 / math.sqrt(math.pi) * math.exp(-y * y)


def ags_critical_load() -> tuple[float, float]:
    """(alpha_c, flipped-bit fraction there) of the AGS T = 0 retrieval state: about (0.138, 0.016)."""
    y = minimize_scalar(lambda y: -_ags_lhs(y), bounds=(0.5, 5.0), method="bounded",
                        options={"xatol": 1e-12}).x
    return _ags_lhs(y) ** 2 / 2, erfc(y) / 2


def ags_flipped(alpha: float) -> float:
    """Flipped-bit fraction (1 - m)/2 of the retrieval state by Amit, Gutfreund and Sompolinsky (1985, 1987).

    At T = 0 the replica-symmetric overlap m = erf(y) solves y (sqrt(2 alpha) + (2/sqrt(pi)) e^{-y^2}) = erf(y),
    taking the largest root y; it exists for alpha <= alpha_c ~ 0.138 (NaN above), where m ~ 0.967, i.e.
    ~1.6% of bits flipped; it is 0.10% at alpha = 0.10, 0.34% at 0.12 and 4e-6 at 0.05.
    """
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if alpha == 0:
        return 0.0
    target = math.sqrt(2 * alpha)
    y_peak = minimize_scalar(lambda y: -_ags_lhs(y), bounds=(0.5, 5.0), method="bounded",
                             options={"xatol": 1e-12}).x
    if _ags_lhs(y_peak) < target:
        return math.nan
    hi = max(10.0, 2 / target)  # _ags_lhs(y) < 1/y there, below the target
    return float(erfc(brentq(lambda y: _ags_lhs(y) - target, y_peak, hi, xtol=1e-14)) / 2)


# -- capacity experiment ----------------------------------------------------------------------

@dataclass
class Capacity(Result):
    """The capacity experiment at loads ``alphas [K]`` (``patterns [K]`` = round(alpha N)): over all
    patterns and trials, the mean and standard deviation of the flipped-bit fraction at the fixed
    point reached from each stored pattern, its maximum, the fraction of patterns ``retrieved``
    exactly, the fraction of runs ``converged`` within ``max_sweeps``, the mean ``sweeps``, and the
    AGS prediction ``theory [K]`` (NaN above alpha_c ~ 0.138)."""

    N: int
    alphas: np.ndarray
    patterns: np.ndarray
    flipped_mean: np.ndarray
    flipped_std: np.ndarray
    flipped_max: np.ndarray
    retrieved: np.ndarray
    converged: np.ndarray
    sweeps: np.ndarray
    theory: np.ndarray
    trials: int
    mode: str
    max_sweeps: int
    seed: int
    seconds: float


def capacity(N: int, alphas, *, trials: int = 1, seed: int = 0, mode: str = "async",
             max_sweeps: int = 100) -> Capacity:
    """Store P = round(alpha N) random +-1 patterns, start the dynamics at each, count flipped bits at the end.

    Theory (Amit, Gutfreund and Sompolinsky 1985; 1987, T = 0, replica symmetric, N -> infinity):
    below alpha_c ~ 0.138 each pattern has a nearby stable state with overlap m = erf(y) (see
    :func:`ags_flipped`), so (1 - m)/2 of its bits are flipped: 4e-6 at alpha = 0.05, 0.10% at
    alpha = 0.10, ~1.6% at alpha_c; above alpha_c the retrieval states vanish and the dynamics run
    far from the patterns (tens of percent flipped). Finite N rounds the transition off.

    Trial t of load P uses the generator seeded by (seed, P, t), so a load's numbers do not depend
    on the other loads asked for.
    """
    t0 = time.perf_counter()
    if int(N) != N or N < 2:
        raise ValueError(f"N must be an integer >= 2, got {N}")
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if alphas.ndim != 1 or alphas.size == 0 or not np.all(np.isfinite(alphas)):
        raise ValueError("alphas must be a non-empty 1-D list of finite loads")
    if int(trials) != trials or trials < 1:
        raise ValueError(f"trials must be a positive integer, got {trials}")
    counts = np.rint(alphas * N).astype(np.int64)
    if np.any(counts < 1):
        bad = alphas[np.argmax(counts < 1)]
        raise ValueError(f"alpha = {bad} gives P = round(alpha * N) = {round(bad * N)} patterns for N = {N}; need P >= 1")
    rows = {k: [] for k in ("flipped", "converged", "sweeps")}
    for P in counts:
        flipped, conv, sweeps = [], [], []
        for t in range(trials):
            rng = np.random.default_rng([seed, int(P), t])
            X = rng.choice(np.array([-1.0, 1.0]), size=(int(P), int(N)))
            out = retrieve(store(X), X, mode=mode, max_sweeps=max_sweeps, seed=int(rng.integers(2**63)))
            flipped.append(np.mean(out.states != X, axis=1))
            conv.append(out.converged)
            sweeps.append(out.sweeps)
        rows["flipped"].append(np.concatenate(flipped))
        rows["converged"].append(np.concatenate(conv))
        rows["sweeps"].append(np.concatenate(sweeps))
    f = rows["flipped"]
    return Capacity(N=int(N), alphas=alphas, patterns=counts, flipped_mean=np.array([x.mean() for x in f]),
                    flipped_std=np.array([x.std() for x in f]), flipped_max=np.array([x.max() for x in f]),
                    retrieved=np.array([np.mean(x == 0) for x in f]),
                    converged=np.array([x.mean() for x in rows["converged"]]),
                    sweeps=np.array([x.mean() for x in rows["sweeps"]]),
                    theory=np.array([ags_flipped(a) for a in alphas]), trials=int(trials), mode=mode,
                    max_sweeps=int(max_sweeps), seed=seed, seconds=time.perf_counter() - t0)


# -- modern Hopfield --------------------------------------------------------------------------

def modern_retrieve(patterns, queries, beta: float, *, steps: int = 1) -> np.ndarray:
    """Modern continuous Hopfield update xi <- X^T softmax(beta X xi) (Ramsauer et al. 2020), float64.

    ``patterns`` X ``[P, N]`` (any real values) as rows, ``queries [Q, N]`` (or one ``[N]``) -> ``[Q, N]``
    (or ``[N]``) after ``steps`` updates; row-wise this is softmax(beta Xi X^T) X, one attention step.
    When the query's dot product with one pattern beats all others by a margin Delta, that pattern's
    softmax weight is >= 1 - (P - 1) e^{-beta Delta}, so for large beta and well-separated patterns
    one step lands (exponentially) close to the nearest pattern, and the number of patterns that can be
    stored and retrieved this way grows exponentially in N (against ~0.138 N for the classical network).
    beta -> 0 gives the mean of the patterns.
    """
    X = np.asarray(patterns, dtype=np.float64)
    if X.ndim != 2 or X.size == 0:
        raise ValueError(f"patterns must be a non-empty [P, N] array, got shape {X.shape}")
    Xi = np.asarray(queries, dtype=np.float64)
    if Xi.ndim not in (1, 2) or Xi.shape[-1] != X.shape[1]:
        raise ValueError(f"queries must be [Q, {X.shape[1]}] or [{X.shape[1]}] to match patterns, got shape {Xi.shape}")
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be finite and >= 0, got {beta}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    for _ in range(int(steps)):
        logits = beta * (Xi @ X.T)
        weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
        Xi = (weights / weights.sum(axis=-1, keepdims=True)) @ X
    return Xi
