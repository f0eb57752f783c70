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

``dynamics.descent.gradient_descent(obj, lr, steps, tracker=...)`` is the full-batch GD loop with it built in.
Each estimate is thick-restart Lanczos on the exact Hessian (``landscape.eigenvalues``,
algebraically largest, so a large negative eigenvalue is never reported as sharpness),
warm-started from the previous estimate's eigenvectors: the Hessian moves little between
two estimates, so the start is already close.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from landscape.core.objective import Objective
from landscape.core.results import jsonable
from landscape.curvature.operators import hessian
from landscape.curvature.spectrum import eigenvalues

Tensor = torch.Tensor


@dataclass
class SharpnessHistory:
    """What a ``SharpnessTracker`` recorded: at ``steps [T]``, the ``loss [T]`` (NaN where not given),
    the top eigenvalues ``sharpness [T, k]`` (descending; column 0 is lambda_max), the Lanczos
    ``residuals [T, k]``, the ``n_matvecs [T]`` each estimate cost and whether it ``converged [T]``;
    ``two_over_lr`` is GD's stability limit (None without a learning rate)."""

    steps: np.ndarray
    loss: np.ndarray
    sharpness: np.ndarray
    residuals: np.ndarray
    n_matvecs: np.ndarray
    converged: np.ndarray
    lr: float | None
    warm: bool
    tol: float
    seconds: float

    @property
    def two_over_lr(self) -> float | None:
        return None if self.lr is None else 2.0 / self.lr

    def to_dict(self) -> dict:
        return jsonable({**vars(self), "two_over_lr": self.two_over_lr})


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
            n_matvecs=np.array([r[4] for r in rows], dtype=np.int64), converged=np.array([r[5] for r in rows], dtype=bool),
            lr=self.lr, warm=self.warm, tol=self.tol, seconds=self._seconds)
