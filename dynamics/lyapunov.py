"""Lyapunov spectra by the QR method (Shimada and Nagashima 1979; Benettin et al. 1980).

k tangent vectors, the rows of ``V [k, n]``, ride along a trajectory and are pushed forward
by the Jacobian; every ``interval`` steps they are re-orthonormalized, V^T = Q R, and the
growth of the i-th Gram-Schmidt direction over that interval is log|R_ii|. The exponents are

    lambda_i = (1 / T) * sum over intervals of log|R_ii|,

T the number of steps (maps: exponents per step) or the time (flows: per unit time).
The first ``transient`` steps run the same way but are not counted: the state settles
on its attractor and the tangents turn onto the growing directions, so the random
orthonormal start (from ``seed``) leaves no 1/T bias once the transient is long enough.
``interval`` defaults to 1 for maps and gradient descent, 10 for flows (RK4 steps).

- ``map_spectrum(F, x0, ...)``: x_{t+1} = F(x_t); tangents V <- V J(x_t)^T.
- ``flow_spectrum(f, x0, ...)``: x' = f(x) with the variational equation Q' = J(x) Q,
  both integrated by one fixed-step classical RK4 (step ``dt``), the tangents evaluated at
  each stage's state.
- ``gd_spectrum(obj, lr, k, ...)``: gradient descent theta <- theta - lr grad L(theta),
  whose Jacobian is I - lr H(theta): V <- V - lr (H V), one batched HVP ``obj.hvp(V, theta)``.
- ``gradient_flow_spectrum(obj, k, ...)``: theta' = -grad L(theta), whose variational
  equation is Q' = -H(theta) Q, integrated with theta by the same RK4.

A custom map or flow is any function of a state ``[n]`` (its ``x0`` may default to an
attribute ``F.x0``). The tangents are pushed forward by ``jvp(x, V) -> J(x) V`` (rows of
``V [k, n]``) if given; else by ``F.linearize(x) -> (F(x), product)`` if ``F`` has one (the
systems of :mod:`dynamics.systems` do: one analytic Jacobian per step or stage); else by
``torch.func.jvp`` vmapped over the k rows. An ``F.kind`` of "map" or "flow", where
present, must match the function called. Either way the k tangents go through ONE batched product per
step or stage; ``batched=False`` pushes them one at a time instead (the same numbers,
for benchmarks). On a quadratic loss with Hessian eigenvalues a_i the GD exponents are
log|1 - lr a_i| and the gradient-flow exponents -a_i (tests/dynamics/test_lyapunov.py).

``LyapunovSpectrum`` holds the exponents (descending), the running estimate after every
re-orthonormalization and the finite-time exponents of every interval (at ``times``: steps
or time since the transient), the cost, the settings and the Kaplan-Yorke dimension.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np
import torch
from torch.func import jvp as _jvp
from torch.func import vmap

from landscape.core.objective import Objective
from landscape.core.results import jsonable

Tensor = torch.Tensor
Linearize = Callable[[Tensor], tuple[Tensor, Callable[[Tensor], Tensor]]]


def kaplan_yorke(exponents: Sequence[float]) -> float:
    """The Kaplan-Yorke (Lyapunov) dimension of a spectrum (sorted descending here first).

    D = j + (lambda_1 + ... + lambda_j) / |lambda_{j+1}|, with j the largest index whose
    partial sum lambda_1 + ... + lambda_j is >= 0. Edge cases: lambda_1 < 0 gives 0; every
    partial sum >= 0 gives k, the number of exponents (with k < n it is a lower bound).
    """
    lam = np.sort(np.asarray(exponents, dtype=np.float64).reshape(-1))[::-1]
    partial = np.cumsum(lam)
    if lam.size == 0 or partial[0] < 0:
        return 0.0
    if np.all(partial >= 0):
        return float(lam.size)
    j = int(np.nonzero(partial >= 0)[0][-1]) + 1  # partial sums fall once they turn negative
    return j + float(partial[j - 1]) / abs(float(lam[j]))


@dataclass
class LyapunovSpectrum:
    """A Lyapunov spectrum and how it converged.

    ``exponents [k]``: descending, per step (maps, GD) or per unit time (flows).
    ``times [T]``: steps (maps) or time (flows) since the end of the transient, at each of the
    T re-orthonormalizations; the last is ``steps`` (times ``dt`` for flows).
    ``finite_time [T, k]``: each interval's exponents, log|R_ii| / (interval length), in the
    QR's column order (column i follows the i-th Gram-Schmidt direction).
    ``running [T, k]``: the estimate after each interval, sum of log|R_ii| so far / times[t],
    sorted descending in each row; ``running[-1]`` is ``exponents``.
    Cost: ``n_steps`` (transient included), ``n_matvecs`` (tangent vectors pushed through a
    Jacobian or Hessian, one per vector), ``n_evaluations`` (of the map, field or gradient),
    ``seconds``. ``settings``: what reproduces it (method, system, k, n, steps, transient,
    interval, dt or lr, seed, batched, dtype, device, and the start x0 when n <= 16).
    """

    exponents: np.ndarray
    running: np.ndarray
    finite_time: np.ndarray
    times: np.ndarray
    n_steps: int
    n_matvecs: int
    n_evaluations: int
    seconds: float
    settings: dict = field(default_factory=dict)

    @property
    def kaplan_yorke(self) -> float:
        """The Kaplan-Yorke dimension of ``exponents`` (see :func:`kaplan_yorke`); a lower bound when
        ``kaplan_yorke_bound``."""
        return kaplan_yorke(self.exponents)

    @property
    def truncated(self) -> bool:
        """Whether fewer exponents were computed than the system has dimensions (k < n)."""
        return len(self.exponents) < self.settings.get("n", len(self.exponents))

    @property
    def kaplan_yorke_bound(self) -> bool:
        """Whether ``kaplan_yorke`` is only a lower bound: every computed partial sum is >= 0 and the spectrum is
        truncated, so the dimension is at least k (the exponents not computed decide the rest)."""
        return self.truncated and bool(np.all(np.cumsum(self.exponents) >= 0))

    @property
    def spread(self) -> np.ndarray:
        """How far each running estimate still moves: max - min of ``running`` over the last quarter of the
        intervals (at least two), ``[k]``; compare it with the exponent (a convergence measure, not an error bar)."""
        tail = self.running[-max(2, len(self.running) // 4):]
        return tail.max(axis=0) - tail.min(axis=0)

    @property
    def moving(self) -> np.ndarray:
        """Which exponents have not converged, ``[k]`` bool: their ``spread`` is over 10% of their size, the size
        taken as at least 1% of the largest |exponent| (an exponent of 0, like a flow's along its own direction,
        converges to the spectrum's scale, never relative to itself)."""
        size = np.maximum(np.abs(self.exponents), 0.01 * np.abs(self.exponents).max(initial=0.0))
        return self.spread > 0.1 * size

    def to_dict(self) -> dict:
        """Everything as JSON-ready lists and numbers, with ``kaplan_yorke`` (and whether it is a bound), the
        ``spread`` of each exponent, which are still ``moving`` and whether the spectrum is ``truncated``."""
        return jsonable({**vars(self), "kaplan_yorke": self.kaplan_yorke, "kaplan_yorke_bound": self.kaplan_yorke_bound,
                         "spread": self.spread, "moving": self.moving, "truncated": self.truncated})


# -- public entry points ---------------------------------------------------------------------


def map_spectrum(F: Callable[[Tensor], Tensor], x0: Tensor | Sequence[float] | None = None, *, steps: int,
                 k: int | None = None, transient: int = 0, interval: int = 1, seed: int = 0,
                 batched: bool = True, jvp: Callable[[Tensor, Tensor], Tensor] | None = None) -> LyapunovSpectrum:
    """k exponents (default: all n) of the map x_{t+1} = F(x_t) from ``x0 [n]`` (default ``F.x0``).

    ``steps`` counted steps after ``transient`` uncounted ones, re-orthonormalizing every
    ``interval`` steps; ``jvp(x, V [k, n]) -> [k, n]`` gives J(x) V (see the module docstring).
    """
    _kind(F, "map")
    x = _state(x0, F)
    _check(steps=steps, transient=transient, interval=interval, k=k, n=x.numel())
    settings = {"method": "map", "system": _name(F)}
    return _spectrum(_linearizer(F, jvp), x, k or x.numel(), steps, transient, interval, None, seed, batched,
                     settings)


def flow_spectrum(f: Callable[[Tensor], Tensor], x0: Tensor | Sequence[float] | None = None, *, dt: float,
                  steps: int, k: int | None = None, transient: int = 0, interval: int = 10, seed: int = 0,
                  batched: bool = True, jvp: Callable[[Tensor, Tensor], Tensor] | None = None) -> LyapunovSpectrum:
    """k exponents (default: all n) of the flow x' = f(x) from ``x0 [n]`` (default ``f.x0``).

    RK4 with step ``dt`` on the state and the variational equation together: ``steps``
    counted steps (time ``steps * dt``) after ``transient`` uncounted ones,
    re-orthonormalizing every ``interval`` steps; ``jvp(x, V [k, n]) -> [k, n]`` gives J(x) V.
    """
    _kind(f, "flow")
    x = _state(x0, f)
    _check(steps=steps, transient=transient, interval=interval, k=k, n=x.numel(), dt=dt)
    settings = {"method": "flow", "system": _name(f)}
    return _spectrum(_linearizer(f, jvp), x, k or x.numel(), steps, transient, interval, float(dt), seed, batched,
                     settings)


def gd_spectrum(obj: Objective, lr: float, k: int, *, steps: int, theta: Tensor | None = None,
                transient: int = 0, interval: int = 1, seed: int = 0, batched: bool = True) -> LyapunovSpectrum:
    """k exponents (per step) of gradient descent theta <- theta - lr grad L(theta), from ``theta`` [n].

    ``theta`` defaults to ``obj.theta0``.

    The tangent map is V <- V - lr H(theta) V: one ``obj.hvp(V, theta)`` on ``V [k, n]`` per step.
    """
    _check(lr=lr)
    x = _theta(obj, theta)
    _check(steps=steps, transient=transient, interval=interval, k=k, n=x.numel())

    def linearize(theta: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        return theta - lr * obj.grad(theta), lambda V: V - lr * obj.hvp(V, theta)

    settings = {"method": "gd", "system": type(obj.model).__name__, "lr": float(lr)}
    return _spectrum(linearize, x, k, steps, transient, interval, None, seed, batched, settings)


def gradient_flow_spectrum(obj: Objective, k: int, *, dt: float, steps: int, theta: Tensor | None = None,
                           transient: int = 0, interval: int = 10, seed: int = 0,
                           batched: bool = True) -> LyapunovSpectrum:
    """k exponents (per unit time) of gradient flow theta' = -grad L(theta), from ``theta`` [n].

    ``theta`` defaults to ``obj.theta0``.

    The variational equation Q' = -H(theta) Q is integrated with theta by RK4 (step ``dt``):
    one ``obj.hvp(V, theta)`` on ``V [k, n]`` per stage, four per step.
    """
    x = _theta(obj, theta)
    _check(steps=steps, transient=transient, interval=interval, k=k, n=x.numel(), dt=dt)

    def linearize(theta: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        return -obj.grad(theta), lambda V: -obj.hvp(V, theta)

    settings = {"method": "gradient-flow", "system": type(obj.model).__name__}
    return _spectrum(linearize, x, k, steps, transient, interval, float(dt), seed, batched, settings)


# -- checks ------------------------------------------------------------------------------------


def _check(*, steps=None, transient=None, interval=None, k=None, n=None, dt=None, lr=None) -> None:
    """One-line ValueErrors for the arguments given (None: not checked, or the default k = n)."""
    for name, value, least in (("steps", steps, 1), ("transient", transient, 0), ("interval", interval, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, Integral) or value < least):
            kind = "a positive" if least else "a non-negative"
            raise ValueError(f"{name} must be {kind} integer, got {value!r}")
    for name, value in (("dt", dt), ("lr", lr)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, Real)
                                  or not math.isfinite(value) or value <= 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if k > n:
            raise ValueError(f"k = {k} exceeds the dimension n = {n} of the state: at most n exponents exist")


def _kind(system, expected: str) -> None:
    """A system that says it is a flow (``kind``) is not iterated as a map, nor the other way round."""
    kind = getattr(system, "kind", expected)
    if kind != expected:
        other = {"map": "map_spectrum", "flow": "flow_spectrum"}.get(kind, "the matching function")
        raise ValueError(f"{_name(system)} is a {kind}, not a {expected}: use {other}")


def _state(x0, system) -> Tensor:
    """``x0`` (or ``system.x0``) as a finite 1-D floating tensor; float64 unless it is a floating tensor."""
    if x0 is None:
        x0 = getattr(system, "x0", None)
        if x0 is None:
            raise ValueError(f"x0 is required: {_name(system)} has no default start x0")
    x = x0 if isinstance(x0, Tensor) and x0.is_floating_point() else torch.as_tensor(x0, dtype=torch.float64)
    if x.ndim != 1 or x.numel() == 0:
        raise ValueError(f"x0 must be one state of shape [n], got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"x0 has non-finite entries: {x.tolist() if x.numel() <= 8 else 'NaN or inf'}")
    return x.detach().clone()


def _theta(obj: Objective, theta: Tensor | None) -> Tensor:
    x = obj.theta0 if theta is None else torch.as_tensor(theta)
    if x.shape != (obj.space.n,):
        raise ValueError(f"theta must have shape [{obj.space.n}], got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("theta has non-finite entries")
    return x.detach().to(obj.device, obj.dtype).clone()


def _name(system) -> str:
    """A dataclass system's repr (its parameters), else the function's name."""
    if hasattr(system, "__dataclass_fields__"):
        return repr(system)
    return getattr(system, "__name__", type(system).__name__)


# -- the QR method -----------------------------------------------------------------------------


def _linearizer(F: Callable[[Tensor], Tensor], jvp: Callable[[Tensor, Tensor], Tensor] | None) -> Linearize:
    """x -> (F(x), V -> J(x) V rows): from ``jvp``, else ``F.linearize``, else vmapped ``torch.func.jvp``."""
    if jvp is not None:
        return lambda x: (F(x), lambda V: jvp(x, V))
    if callable(getattr(F, "linearize", None)):
        return F.linearize

    def linearize(x: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        return F(x), vmap(lambda v: _jvp(F, (x,), (v,))[1])

    return linearize


def _push(product: Callable[[Tensor], Tensor], V: Tensor, batched: bool) -> Tensor:
    """J V for the rows of ``V [k, n]``: one product, or one per row (``batched=False``)."""
    return product(V) if batched else torch.cat([product(V[i:i + 1]) for i in range(V.shape[0])])


def _step(linearize: Linearize, x: Tensor, V: Tensor, dt: float | None, batched: bool) -> tuple[Tensor, Tensor]:
    """One map step (``dt`` None) or one classical RK4 step of (x' = f(x), V' = V J(x)^T)."""
    if dt is None:
        y, product = linearize(x)
        return y, _push(product, V, batched)
    f1, product = linearize(x)
    g1 = _push(product, V, batched)
    f2, product = linearize(torch.add(x, f1, alpha=dt / 2))
    g2 = _push(product, torch.add(V, g1, alpha=dt / 2), batched)
    f3, product = linearize(torch.add(x, f2, alpha=dt / 2))
    g3 = _push(product, torch.add(V, g2, alpha=dt / 2), batched)
    f4, product = linearize(torch.add(x, f3, alpha=dt))
    g4 = _push(product, torch.add(V, g3, alpha=dt), batched)
    x = torch.add(x, torch.add(f1 + f4, f2 + f3, alpha=2.0), alpha=dt / 6)
    V = torch.add(V, torch.add(g1 + g4, g2 + g3, alpha=2.0), alpha=dt / 6)
    return x, V


_HINTS = {"map": "start in the basin of an attractor, or take fewer steps",
          "flow": "try a smaller dt, or fewer steps", "gd": "try a smaller lr, or fewer steps",
          "gradient-flow": "try a smaller dt, or fewer steps"}


def _orthonormalize(V: Tensor) -> tuple[Tensor, Tensor]:
    """V^T = Q R by Householder: (Q^T [k, n], log|R_ii| [k]).

    ``geqrf`` and ``householder_product`` rather than ``torch.linalg.qr``: on a busy CPU the
    latter's threading costs about 10 ms a call even for 3 x 3 (measured on 2 shared cores),
    against 4 us for these two.
    """
    a, tau = torch.geqrf(V.mT)
    return torch.linalg.householder_product(a, tau).mT, a.diagonal().abs().log()


def _run(linearize: Linearize, x: Tensor, V: Tensor, steps: int, interval: int, dt: float | None, batched: bool,
         done: int, hint: str) -> tuple[Tensor, Tensor, list[Tensor], list[int]]:
    """``steps`` steps, re-orthonormalizing every ``interval`` and at the end: (x, V, log|R_ii| rows, lengths)."""
    logs, lengths = [], []
    for start in range(0, steps, interval):
        length = min(interval, steps - start)
        for _ in range(length):
            x, V = _step(linearize, x, V, dt, batched)
        finite_x, finite_V = torch.stack([torch.isfinite(x).all(), torch.isfinite(V).all()]).tolist()
        if not finite_x:
            raise ValueError(f"the state is not finite after step {done + start + length}: the trajectory "
                             f"diverged ({hint})")
        if not finite_V:
            raise ValueError(f"the tangent vectors overflowed by step {done + start + length}: "
                             f"re-orthonormalize more often (a smaller interval than {interval})")
        V, log_r = _orthonormalize(V)
        logs.append(log_r)
        lengths.append(length)
    return x, V, logs, lengths


def _warn_unresolved(logs: np.ndarray, dtype: torch.dtype, interval: int) -> None:
    """Warn when an interval shrank a direction below what the QR resolves in ``dtype``.

    Householder QR gives R_ii to a relative error of about eps |R_11| / |R_ii|: once a
    direction's growth falls below 1e3 eps of a larger one's within one interval, its
    log|R_ii| is rounding, not dynamics (e.g. Henon with interval = 10 in float32).
    """
    with np.errstate(invalid="ignore"):  # -inf - (-inf): a direction that was already lost
        ratio = (logs - np.maximum.accumulate(logs, axis=1)).min(axis=0)
    floor = 1e3 * torch.finfo(dtype).eps
    lost = np.nonzero(ratio < math.log(floor))[0]
    if lost.size:
        warnings.warn(f"exponents from #{lost[0] + 1} on are not resolved: within one interval a tangent direction "
                      f"shrank to {math.exp(ratio[lost].min()):.1g} of a larger one, below what "
                      f"{str(dtype).removeprefix('torch.')} rounding resolves (1e3 eps = {floor:.0e}); "
                      f"re-orthonormalize more often (a smaller interval than {interval}) or use float64",
                      RuntimeWarning, stacklevel=4)


def _spectrum(linearize: Linearize, x: Tensor, k: int, steps: int, transient: int, interval: int,
              dt: float | None, seed: int, batched: bool, settings: dict) -> LyapunovSpectrum:
    start = time.perf_counter()
    n = x.numel()
    first = x.tolist() if n <= 16 else None
    generator = torch.Generator().manual_seed(seed)
    V = _orthonormalize(torch.randn(k, n, generator=generator, dtype=torch.float64))[0].to(x.device, x.dtype)
    hint = _HINTS[settings["method"]]
    if transient:
        x, V, _, _ = _run(linearize, x, V, transient, interval, dt, batched, 0, hint)
    x, V, logs, lengths = _run(linearize, x, V, steps, interval, dt, batched, transient, hint)
    logs = torch.stack(logs).to("cpu", torch.float64).numpy()
    _warn_unresolved(logs, x.dtype, interval)
    span = np.asarray(lengths, dtype=np.float64) * (dt or 1.0)
    times = np.cumsum(span)
    running = -np.sort(-np.cumsum(logs, axis=0) / times[:, None], axis=1)
    stages = 4 if dt else 1
    total = steps + transient
    settings = {**settings, "k": k, "n": n, "steps": steps, "transient": transient, "interval": interval,
                **({"dt": dt} if dt else {}), **({"x0": first} if first is not None else {}), "seed": seed,
                "batched": batched, "dtype": str(x.dtype).removeprefix("torch."), "device": str(x.device)}
    return LyapunovSpectrum(exponents=running[-1].copy(), running=running, finite_time=logs / span[:, None],
                            times=times, n_steps=total, n_matvecs=total * stages * k,
                            n_evaluations=total * stages, seconds=time.perf_counter() - start, settings=settings)
