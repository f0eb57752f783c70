"""Edge of stability: track the Hessian's top eigenvalue (sharpness) during training.

Gradient descent theta <- theta - lr grad L on a quadratic with curvature a is stable when
|1 - lr a| <= 1, i.e. a <= 2/lr. Cohen et al. 2021 ("Gradient descent on neural networks
typically occurs at the edge of stability") found that full-batch GD raises the sharpness
lambda_max(H) until it reaches 2/lr and then hovers there while the loss keeps falling,
non-monotonically.

    tracker = SharpnessTracker(obj, lr=0.1, every=100)
    for step in range(steps):
        ...                                   # any training loop
        tracker(step, theta)                  # computes on every 100th step, else returns None
    tracker.history().sharpness               # [T, k]

``gradient_descent(obj, lr, steps, tracker=...)`` is the full-batch GD loop with it built in.
Each estimate is thick-restart Lanczos on the exact Hessian (``landscape.eigenvalues``,
algebraically largest, so a large negative eigenvalue is never reported as sharpness),
warm-started from the previous estimate's eigenvectors: the Hessian moves little between
two estimates, so the start is already close.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from landscape.core.objective import Objective
from landscape.curvature.operators import hessian
from landscape.curvature.spectrum import eigenvalues

Tensor = torch.Tensor


def _json(values: np.ndarray) -> list:
    """Floats for JSON, non-finite ones as null."""
    return [v if math.isfinite(v) else None for v in values.tolist()]


@dataclass
class SharpnessHistory:
    """What a ``SharpnessTracker`` recorded: at ``steps [T]``, the ``loss [T]`` (NaN where not given),
    the top eigenvalues ``sharpness [T, k]`` (descending; column 0 is lambda_max), the Lanczos
    ``residuals [T, k]``, the ``hvps [T]`` each estimate cost and whether it ``converged [T]``;
    ``two_over_lr`` is GD's stability limit (None without a learning rate)."""

    steps: np.ndarray
    loss: np.ndarray
    sharpness: np.ndarray
    residuals: np.ndarray
    hvps: np.ndarray
    converged: np.ndarray
    lr: float | None
    warm: bool
    tol: float
    seconds: float

    @property
    def two_over_lr(self) -> float | None:
        return None if self.lr is None else 2.0 / self.lr

    def to_dict(self) -> dict:
        return {"steps": self.steps.tolist(), "loss": _json(self.loss),
                "sharpness": self.sharpness.tolist(), "residuals": self.residuals.tolist(),
                "hvps": self.hvps.tolist(), "converged": self.converged.tolist(), "lr": self.lr,
                "two_over_lr": self.two_over_lr, "warm": self.warm, "tol": self.tol, "seconds": self.seconds}


class SharpnessTracker:
    """lambda_max (and the next ``k - 1``) of the Hessian of ``obj``, every ``every`` steps.

    Call it as ``tracker(step, theta, loss=None)`` from any training loop (theta the flat
    parameters ``[n]`` in ``obj``'s space), or ``tracker.attach(optimizer, model)`` to run it
    after each ``optimizer.step()``. ``warm=False`` starts every Lanczos run afresh (to
    measure what warm starts save). ``tol`` is Lanczos' residual tolerance relative to
    lambda_max; the eigenvalue's own error is of the order of its square.
    """

    def __init__(self, obj: Objective, *, lr: float | None = None, every: int = 1, k: int = 1, tol: float = 1e-4,
                 warm: bool = True, seed: int = 0):
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}")
        if lr is not None and not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.obj, self.lr, self.every, self.k, self.tol, self.warm, self.seed = obj, lr, every, k, tol, warm, seed
        self._vectors: Tensor | None = None
        self._rows: list[tuple] = []
        self._seconds = 0.0

    def __call__(self, step: int, theta: Tensor | None = None, loss: float | None = None) -> float | None:
        """Estimate at ``step`` if it is a multiple of ``every``: returns lambda_max, else None."""
        if step % self.every:
            return None
        start = time.perf_counter()
        found = eigenvalues(hessian(self.obj, theta), k=self.k, which="largest", tol=self.tol, seed=self.seed,
                            v0=self._vectors if self.warm else None)
        self._vectors = found.eigenvectors
        self._seconds += time.perf_counter() - start
        self._rows.append((step, math.nan if loss is None else float(loss), found.eigenvalues, found.residuals,
                           found.n_matvecs, found.converged))
        return float(found.eigenvalues[0])

    def attach(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> Callable[[], None]:
        """Run after every ``optimizer.step()`` on ``model``'s current parameters (counted from step 1).
        Returns a function that detaches it again."""
        count = [0]

        def after_step(*_):
            count[0] += 1
            theta = self.obj.space.flatten(dict(model.named_parameters())).detach()
            self(count[0], theta.to(self.obj.device, self.obj.dtype))

        return optimizer.register_step_post_hook(after_step).remove

    def history(self) -> SharpnessHistory:
        rows = self._rows
        return SharpnessHistory(
            steps=np.array([r[0] for r in rows], dtype=np.int64), loss=np.array([r[1] for r in rows]),
            sharpness=np.array([r[2] for r in rows]).reshape(len(rows), self.k),
            residuals=np.array([r[3] for r in rows]).reshape(len(rows), self.k),
            hvps=np.array([r[4] for r in rows], dtype=np.int64), converged=np.array([r[5] for r in rows], dtype=bool),
            lr=self.lr, warm=self.warm, tol=self.tol, seconds=self._seconds)


@dataclass
class GDRun:
    """Full-batch gradient descent: ``loss [steps + 1]`` at every iterate (NaN after a divergence),
    ``grad_norm [steps + 1]``, the final ``theta [n]``, ``diverged`` (the loss stopped being
    finite at ``steps_done``), the tracker's ``sharpness`` history, and the cost."""

    lr: float
    loss: np.ndarray
    grad_norm: np.ndarray
    theta: Tensor
    steps_done: int
    diverged: bool
    sharpness: SharpnessHistory | None
    seconds: float
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"lr": self.lr, "loss": _json(self.loss), "grad_norm": _json(self.grad_norm),
                "steps_done": self.steps_done, "diverged": self.diverged,
                "sharpness": None if self.sharpness is None else self.sharpness.to_dict(),
                "seconds": self.seconds, "settings": self.settings}


def gradient_descent(obj: Objective, lr: float, steps: int, *, theta: Tensor | None = None,
                     tracker: SharpnessTracker | None = None, progress: bool = True) -> GDRun:
    """theta_{t+1} = theta_t - lr grad L(theta_t) on the full data, from ``theta`` (default ``obj.theta0``),
    with ``tracker`` (if given) called at every step. A loss that stops being finite ends the run
    (recorded, not raised)."""
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if steps < 0:
        raise ValueError(f"steps must be at least 0, got {steps}")
    start = time.perf_counter()
    theta = obj.point(theta).clone()
    losses = np.full(steps + 1, np.nan)
    norms = np.full(steps + 1, np.nan)
    diverged, done = False, 0
    bar = tqdm(total=steps, desc=f"GD lr={lr:g}", unit="step", disable=not progress, dynamic_ncols=True)
    for step in range(steps + 1):
        loss, grad = obj.loss_and_grad(theta)
        losses[step], norms[step] = loss.item(), grad.norm().item()
        if not (math.isfinite(losses[step]) and math.isfinite(norms[step])):
            diverged = True
            break
        if tracker is not None:
            sharp = tracker(step, theta, losses[step])
            if sharp is not None:
                bar.set_postfix(loss=f"{losses[step]:.4g}", sharpness=f"{sharp:.4g}", refresh=False)
        done = step
        if step == steps:
            break
        theta = theta - lr * grad
        bar.update(1)
    bar.close()
    return GDRun(lr=lr, loss=losses, grad_norm=norms, theta=theta, steps_done=done, diverged=diverged,
                 sharpness=None if tracker is None else tracker.history(), seconds=time.perf_counter() - start,
                 settings={"steps": steps})
