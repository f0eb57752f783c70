"""Gradient flow: training as the ODE theta' = -grad L(theta), and how far gradient descent strays from it.

    run = gradient_flow(obj, torch.linspace(0, 10, 101))     # dopri5 through torchdiffeq
    run.loss, run.grad_norm                                   # [101], at the requested times
    run = stable_rk4(obj, torch.linspace(0, 10, 101))        # Cohen et al.'s RK4, step alpha / lambda_max
    cmp = compare_gd(obj, lr=0.05, steps=200)                # GD against both flows at t = k lr
    cmp.to_flow, cmp.to_modified                              # ||theta_k - theta(k lr)||, [T]

Along gradient flow the loss never rises, dL/dt = -||grad L||^2. Gradient descent with
learning rate lr is Euler's method for it with step lr, so theta_k stays O(lr) from
theta(k lr) over a fixed time. Barrett and Dherin 2021 ("Implicit gradient regularization")
found the flow that GD follows one order closer, O(lr^2): the *modified flow*

    theta' = -grad L~(theta),   L~ = L + (lr/4) ||grad L||^2,   grad L~ = grad L + (lr/2) H grad L,

one Hessian-vector product per evaluation (``modified_lr=lr``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torchdiffeq import odeint
from tqdm.auto import tqdm

from dynamics.descent import gradient_descent
from dynamics.edge_of_stability import SharpnessHistory, SharpnessTracker
from landscape.core.objective import Objective
from landscape.core.results import jsonable

Tensor = torch.Tensor

ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
# torchdiffeq's Adams methods are left out: at its default order 12, explicit Adams diverged on a quadratic
# at h lambda_max = 0.1 (error 1e105), and implicit Adams warns and drops its history at these tolerances.
FIXED = ("rk4", "euler", "midpoint", "heun2", "heun3")
SCIPY = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
METHODS = ADAPTIVE + FIXED + SCIPY


@dataclass
class FlowRun:
    """A flow integrated through ``times [T]``: ``loss [T]`` and ``grad_norm [T]`` of L (not L~) there,
    NaN where not reached; ``theta [n]``, the last state reached (None if none); ``snapshots [T, n]`` on the CPU
    (NaN rows where not reached) when asked for. ``reached`` requested times were reached;
    ``diverged`` says the loss or gradient became non-finite, ``message`` why the run stopped
    early ("" when it did not). ``n_gradients`` and ``n_matvecs`` count full-data gradients and HVPs,
    the solver's and the recording's. ``stable_rk4`` adds every ``step_sizes [S]`` it took and
    the ``sharpness`` its tracker recorded."""

    times: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    theta: Tensor | None
    snapshots: Tensor | None
    reached: int
    diverged: bool
    message: str
    method: str
    n_gradients: int
    n_matvecs: int
    seconds: float
    settings: dict = field(default_factory=dict)
    step_sizes: np.ndarray | None = None
    sharpness: SharpnessHistory | None = None

    def to_dict(self) -> dict:
        """Everything but the states (``theta``, ``snapshots``), as strict JSON."""
        skip = ("theta", "snapshots", "sharpness")
        return jsonable({**{k: v for k, v in vars(self).items() if k not in skip},
                         "sharpness": None if self.sharpness is None else self.sharpness.to_dict()})


@dataclass
class GDComparison:
    """Gradient descent at learning rate ``lr`` against gradient flow and the modified flow, at the
    GD ``steps [T]`` (times ``k * lr``): ``gd_loss [T]``, ``gd_grad_norm [T]`` (NaN after a
    divergence), the distances ``to_flow [T]`` = ||theta_k - theta_GF(k lr)|| and ``to_modified [T]``
    = ||theta_k - theta_MF(k lr)||, and both flows' runs (their losses at the same times)."""

    lr: float
    steps: np.ndarray
    times: np.ndarray
    gd_loss: np.ndarray
    gd_grad_norm: np.ndarray
    gd_diverged: bool
    to_flow: np.ndarray
    to_modified: np.ndarray
    flow: FlowRun
    modified: FlowRun
    seconds: float
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return jsonable({**vars(self), "flow": self.flow.to_dict(), "modified": self.modified.to_dict()})


class _Stop(Exception):
    """Ends an integration early: raised by the vector field (non-finite loss) or for a failed solver."""

    def __init__(self, message: str, diverged: bool):
        super().__init__(message)
        self.message, self.diverged = message, diverged

    @classmethod
    def non_finite(cls, loss: float, other: str, t: float) -> _Stop:
        what = "loss" if not math.isfinite(loss) else other
        return cls(f"the {what} became non-finite at t = {t:g} (loss {loss:g})", diverged=True)


class _Field:
    """(t, theta) -> -grad L(theta), or -grad L~(theta) with ``modified_lr``; keeps the last ``loss``."""

    def __init__(self, obj: Objective, modified_lr: float | None, bar, start: float):
        self.obj, self.modified_lr, self.bar = obj, modified_lr, bar
        self.loss, self.seen = math.nan, start
        self.end = start + (bar.total or 0.0)

    def __call__(self, t, theta: Tensor) -> Tensor:
        loss, grad = self.obj.loss_and_grad(theta)
        if self.modified_lr is not None:
            grad = grad + (self.modified_lr / 2) * self.obj.hvp(grad, theta)
        self.loss = loss.item()
        if not (math.isfinite(self.loss) and torch.isfinite(grad).all()):
            raise _Stop.non_finite(self.loss, "gradient", float(t))
        now = min(float(t), self.end)  # an adaptive step may look past the last time asked for
        if now > self.seen:
            self.bar.update(now - self.seen)
            self.seen = now
        return -grad


class _Recorder:
    """L and ||grad L|| at each requested time, snapshots and the callback; the first non-finite loss stops it."""

    def __init__(self, obj: Objective, times: np.ndarray, snapshots: bool,
                 callback: Callable[[float, Tensor], None] | None):
        self.obj, self.times, self.callback = obj, times, callback
        self.loss = np.full(len(times), np.nan)
        self.grad_norm = np.full(len(times), np.nan)
        self.snapshots = torch.full((len(times), obj.space.n), math.nan, dtype=obj.dtype) if snapshots else None
        self.reached, self.theta, self.diverged, self.message = 0, None, False, ""
        self.counts = obj.counts.copy()
        self.start = time.perf_counter()

    def __call__(self, i: int, theta: Tensor) -> bool:
        """Record ``theta`` at ``times[i]``; False (and a recorded NaN) if its loss is not finite."""
        loss, grad = self.obj.loss_and_grad(theta)
        loss, norm = loss.item(), grad.norm().item()
        if not (math.isfinite(loss) and math.isfinite(norm)):
            self.stop(_Stop.non_finite(loss, "gradient norm", self.times[i]))
            return False
        self.loss[i], self.grad_norm[i] = loss, norm
        self.reached, self.theta = i + 1, theta
        if self.snapshots is not None:
            self.snapshots[i] = theta.cpu()
        if self.callback is not None:
            self.callback(float(self.times[i]), theta)
        return True

    def stop(self, reason: _Stop) -> None:
        self.message, self.diverged = reason.message, reason.diverged

    def result(self, method: str, settings: dict, **extra) -> FlowRun:
        counts = self.obj.counts
        theta = None if self.theta is None else self.theta.clone()  # not a view that keeps a solver's output alive
        return FlowRun(times=self.times, loss=self.loss, grad_norm=self.grad_norm, theta=theta,
                       snapshots=self.snapshots, reached=self.reached, diverged=self.diverged, message=self.message,
                       method=method, n_gradients=counts["n_gradients"] - self.counts["n_gradients"],
                       n_matvecs=counts["n_matvecs"] - self.counts["n_matvecs"], seconds=time.perf_counter() - self.start,
                       settings=settings, **extra)


def _times(times) -> np.ndarray:
    times = np.asarray(torch.as_tensor(times, dtype=torch.float64).cpu(), dtype=np.float64)
    if times.ndim != 1 or len(times) == 0:
        raise ValueError(f"times must be a non-empty 1-D sequence, got shape {times.shape}")
    if not np.isfinite(times).all() or np.any(np.diff(times) <= 0):
        raise ValueError("times must be finite and strictly increasing (the first is the start)")
    return times


def _check_lr(modified_lr: float | None) -> None:
    if modified_lr is not None and not modified_lr > 0:
        raise ValueError(f"modified_lr must be a positive learning rate, got {modified_lr}")


def _grid(t: Tensor, step_size: float) -> Tensor:
    """Each interval of ``t`` cut into equal steps of at most ``step_size``: the requested times are grid points."""
    pieces = []
    for a, b in zip(t[:-1], t[1:]):
        m = max(1, math.ceil((b - a).item() / step_size * (1 - 1e-12)))
        pieces.append(a + (b - a) * torch.arange(m, dtype=t.dtype, device=t.device) / m)
    return torch.cat(pieces + [t[-1:]])


def _torchdiffeq(field: _Field, theta: Tensor, t: np.ndarray, method: str, rtol: float, atol: float,
                 step_size: float | None) -> Tensor:
    options = {}
    if method in FIXED and step_size is not None:
        options["grid_constructor"] = lambda f, y0, grid: _grid(grid, step_size)
    try:
        return odeint(field, theta, torch.as_tensor(t, device=theta.device), rtol=rtol, atol=atol, method=method,
                      options=options)
    except AssertionError as error:  # torchdiffeq's "underflow in dt ..." and "max_num_steps exceeded"
        reason = str(error).splitlines()[0][:200]
        raise _Stop(f"{method} failed between t = {t[0]:g} and {t[-1]:g}: {reason}", diverged=False) from None


def _scipy(field: _Field, theta: Tensor, t: np.ndarray, method: str, rtol: float, atol: float) -> Tensor:
    def fun(s, y):
        return field(s, torch.from_numpy(y).to(theta.device, theta.dtype)).cpu().double().numpy()

    solution = solve_ivp(fun, (t[0], t[-1]), theta.cpu().double().numpy(), method=method, t_eval=t, rtol=rtol,
                         atol=atol)
    if solution.status != 0:
        raise _Stop(f"{method} failed between t = {t[0]:g} and {t[-1]:g}: {solution.message}", diverged=False)
    return torch.from_numpy(solution.y.T.copy()).to(theta.device, theta.dtype)


def gradient_flow(obj: Objective, times, *, theta: Tensor | None = None, modified_lr: float | None = None,
                  method: str = "dopri5", rtol: float | None = None, atol: float | None = None,
                  step_size: float | None = None, snapshots: bool = False,
                  callback: Callable[[float, Tensor], None] | None = None, progress: bool = True) -> FlowRun:
    """Integrate theta' = -grad L(theta) from ``theta`` (default ``obj.theta0``) at ``times[0]`` through ``times [T]``.

    ``modified_lr=lr`` integrates the modified flow of GD at that learning rate instead,
    theta' = -(grad L + (lr/2) H grad L). ``method``: torchdiffeq's adaptive ``dopri5`` (default),
    ``dopri8``, ``bosh3``, ``fehlberg2``, ``adaptive_heun``, or its fixed-step ``rk4`` (3/8 rule),
    ``euler``, ``midpoint``, ``heun2``, ``heun3`` with steps of at most
    ``step_size`` (default: the requested times; the requested times are always grid points),
    all on the objective's device; or scipy's ``solve_ivp`` with ``RK45``, ``RK23``, ``DOP853``,
    ``Radau``, ``BDF``, ``LSODA`` (a float64 NumPy state on the CPU, for small problems).

    ``rtol``/``atol`` bound the adaptive solvers' local error, atol + rtol |theta_i| per entry.
    Defaults: float64 1e-8/1e-10, an order tighter than torchdiffeq's 1e-7/1e-9 (measured on a
    quadratic: global error 1.2e-9 against 1.2e-8, at 1.5x the evaluations). float32 1e-5/1e-7:
    a float32 state carries ~1e-6 of roundoff, and torchdiffeq's 1e-7/1e-9 ask for less than
    that, so its error estimate is partly roundoff and the steps shrink for nothing (measured on
    quadratics: 1.6-2.2x the evaluations of 1e-5/1e-7 for errors of 6e-7 against 1.3e-6 and 9e-6
    against 1.2e-5), or until "underflow in dt". Gradient flows of networks are mostly stiff:
    dopri5's steps are held near 3.3/lambda_max by stability, not accuracy, and the tolerance
    changes their number little (digits-mlp: 458 evaluations at 1e-5, 566 at 1e-7).

    The state is the one at each requested time: ``snapshots=True`` keeps them all (``[T, n]``,
    CPU), ``callback(t, theta)`` sees each in turn without keeping it (don't modify it). The
    solver is run over as many requested times at once as a quarter of the objective's memory
    budget holds, so a big model's trajectory is never all in memory. A non-finite loss or
    gradient, or a solver that gives up, ends the run: what was reached is kept, the next time
    is NaN, and ``diverged`` and ``message`` say why. Returns a ``FlowRun``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    _check_lr(modified_lr)
    if step_size is not None and (method not in FIXED or not step_size > 0):
        raise ValueError(f"step_size must be positive and is for the fixed-step methods ({', '.join(FIXED)}), "
                         f"got {step_size} with {method}")
    times = _times(times)
    float64 = obj.dtype == torch.float64
    rtol = rtol if rtol is not None else 1e-8 if float64 else 1e-5
    atol = atol if atol is not None else 1e-10 if float64 else 1e-7
    settings = {"rtol": rtol, "atol": atol, "step_size": step_size, "modified_lr": modified_lr,
                "dtype": str(obj.dtype).removeprefix("torch.")}

    record = _Recorder(obj, times, snapshots, callback)
    bar = tqdm(total=float(times[-1] - times[0]), desc="modified flow" if modified_lr else "gradient flow",
               unit="time", disable=not progress, dynamic_ncols=True, bar_format="{l_bar}{bar}| t={n:.4g}/{total:.4g}")
    field = _Field(obj, modified_lr, bar, times[0])
    theta = obj.point(theta).clone()
    per_time = obj.space.n * theta.element_size()
    chunk = max(1, min(len(times) - 1, obj.memory_budget() // 4 // per_time))
    i = 0
    with torch.no_grad():
        ok = record(0, theta)
        while ok and i < len(times) - 1:
            j = min(i + chunk, len(times) - 1)
            try:
                states = (_scipy(field, theta, times[i:j + 1], method, rtol, atol) if method in SCIPY else
                          _torchdiffeq(field, theta, times[i:j + 1], method, rtol, atol, step_size))
            except _Stop as stop:
                if j > i + 1:  # find the last requested time it reaches, one interval at a time
                    chunk = 1
                    continue
                record.stop(stop)
                break
            for k in range(i + 1, j + 1):
                ok = record(k, states[k - i])
                if not ok:
                    break
            theta, i = states[-1], j
    bar.close()
    return record.result(method, settings)


def stable_rk4(obj: Objective, times, *, alpha: float = 1.0, every: int = 1, tol: float = 1e-5,
               theta: Tensor | None = None, modified_lr: float | None = None, snapshots: bool = False,
               callback: Callable[[float, Tensor], None] | None = None, progress: bool = True) -> FlowRun:
    """Gradient flow by classical RK4 with step h = ``alpha`` / lambda_max, Cohen et al. 2021's stability-aware solver.

    "Gradient descent on neural networks typically occurs at the edge of stability", appendix on
    gradient flow: RK4 is stable on theta' = -H theta while h lambda_max <= 2.79, so a step
    alpha / lambda_max (alpha = 1 there) follows the flow however sharp it gets, at a cost
    that grows with the sharpness. lambda_max is refreshed every ``every`` steps by a warm-started
    ``SharpnessTracker`` (Lanczos to residual ``tol``); where it is not positive, nothing
    limits the step. A step is shortened to land on the next requested time (and may be
    stretched by 1e-9 relative to do so). ``modified_lr`` integrates the modified flow, with
    lambda_max + (lr/2) lambda_max^2, the top eigenvalue of its Jacobian H + (lr/2) H^2 near a
    minimum, in place of lambda_max. The rest as for ``gradient_flow``; the run adds
    ``step_sizes [S]`` and the tracker's ``sharpness`` history (its steps count RK4 steps).
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    _check_lr(modified_lr)
    times = _times(times)
    tracker = SharpnessTracker(obj, every=every, tol=tol)
    settings = {"alpha": alpha, "every": every, "tol": tol, "modified_lr": modified_lr,
                "dtype": str(obj.dtype).removeprefix("torch.")}
    record = _Recorder(obj, times, snapshots, callback)
    bar = tqdm(total=float(times[-1] - times[0]), desc="stable RK4", unit="time", disable=not progress,
               dynamic_ncols=True, bar_format="{l_bar}{bar}| t={n:.4g}/{total:.4g} {postfix}")
    field = _Field(obj, modified_lr, bar, times[0])
    y, t, h_stable, sizes = obj.point(theta).clone(), times[0], math.inf, []
    with torch.no_grad():
        ok = record(0, y)
        for i in range(1, len(times)):
            if not ok:
                break
            try:
                while True:
                    k1 = field(t, y)
                    sharp = tracker(len(sizes), y, field.loss)
                    if sharp is not None:
                        rate = sharp + modified_lr / 2 * sharp ** 2 if modified_lr is not None else sharp
                        h_stable = alpha / rate if rate > 0 else math.inf
                        bar.set_postfix(lambda_max=f"{sharp:.4g}", refresh=False)
                    last = times[i] - t <= h_stable * (1 + 1e-9)
                    h = times[i] - t if last else h_stable
                    k2 = field(t + h / 2, y + (h / 2) * k1)
                    k3 = field(t + h / 2, y + (h / 2) * k2)
                    k4 = field(t + h, y + h * k3)
                    y = y + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
                    sizes.append(h)
                    t = times[i] if last else t + h
                    if last:
                        break
            except _Stop as stop:
                record.stop(stop)
                break
            ok = record(i, y)
    bar.close()
    return record.result("stable_rk4", settings, step_sizes=np.array(sizes), sharpness=tracker.history())


def compare_gd(obj: Objective, lr: float, steps: int, *, every: int = 1, theta: Tensor | None = None,
               method: str = "dopri5", rtol: float | None = None, atol: float | None = None,
               progress: bool = True) -> GDComparison:
    """Full-batch GD for ``steps`` steps at ``lr`` against gradient flow and the modified flow at t = k lr.

    Records at every ``every``-th step and at the last: the GD loss and the distances
    ||theta_k - theta_GF(k lr)|| (O(lr) over a fixed time) and ||theta_k - theta_MF(k lr)||
    (O(lr^2)). Both flows start from GD's start and are integrated by ``gradient_flow`` with
    ``method``, ``rtol`` and ``atol``; the GD iterates at the recorded steps are held on the CPU
    (``[T, n]``), the flows' states are streamed. GD is ``dynamics.descent.gradient_descent``
    run from record to record (one extra gradient per record). Returns a ``GDComparison``.
    """
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if steps < 1 or every < 1:
        raise ValueError(f"steps and every must be at least 1, got steps={steps}, every={every}")
    start = time.perf_counter()
    ks = np.array(sorted(set(range(0, steps, every)) | {steps}))
    gd_loss, gd_norm = np.full(len(ks), np.nan), np.full(len(ks), np.nan)
    theta = obj.point(theta).clone()
    iterates = [theta.cpu()]
    diverged = False
    for s, (a, b) in enumerate(zip(ks[:-1], ks[1:])):
        run = gradient_descent(obj, lr, int(b - a), theta=theta, progress=False)
        gd_loss[s], gd_norm[s] = run.loss[0], run.grad_norm[0]
        if run.diverged:
            diverged = True
            break
        theta = run.theta
        iterates.append(theta.cpu())
        gd_loss[s + 1], gd_norm[s + 1] = run.loss[-1], run.grad_norm[-1]

    def distances(**kwargs) -> tuple[FlowRun, np.ndarray]:
        far = np.full(len(ks), np.nan)
        seen = iter(range(len(ks)))

        def measure(t: float, state: Tensor) -> None:
            k = next(seen)
            if k < len(iterates):
                far[k] = (state.cpu() - iterates[k]).norm().item()

        run = gradient_flow(obj, ks * lr, theta=iterates[0], method=method, rtol=rtol, atol=atol,
                            callback=measure, progress=progress, **kwargs)
        return run, far

    flow, to_flow = distances()
    modified, to_modified = distances(modified_lr=lr)
    return GDComparison(lr=lr, steps=ks, times=ks * lr, gd_loss=gd_loss, gd_grad_norm=gd_norm, gd_diverged=diverged,
                        to_flow=to_flow, to_modified=to_modified, flow=flow, modified=modified,
                        seconds=time.perf_counter() - start,
                        settings={"steps": steps, "every": every, "method": method, "rtol": flow.settings["rtol"],
                                  "atol": flow.settings["atol"]})
