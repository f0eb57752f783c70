"""Full-batch gradient descent, theta_{t+1} = theta_t - lr grad L(theta_t), with a per-step hook.

    run = gradient_descent(obj, lr=0.1, steps=3000, tracker=SharpnessTracker(obj, lr=0.1, every=100))
    run.loss, run.grad_norm            # [steps + 1] at every iterate (NaN after a divergence)

The loop that ``landscape eos``, the flows' comparison and the linearized model's comparison run.
The ``tracker`` is any ``tracker(step, theta, loss) -> float | None`` (the edge of stability's
``SharpnessTracker`` in :mod:`dynamics.edge_of_stability`); its ``history()`` is kept in the run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from landscape.core.objective import Objective
from landscape.core.results import jsonable

Tensor = torch.Tensor


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
    sharpness: object | None  # the tracker's history (a SharpnessHistory)
    seconds: float
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Everything but the final ``theta``, as strict JSON."""
        return jsonable({"lr": self.lr, "loss": self.loss, "grad_norm": self.grad_norm,
                         "steps_done": self.steps_done, "diverged": self.diverged,
                         "sharpness": None if self.sharpness is None else self.sharpness.to_dict(),
                         "seconds": self.seconds, "settings": self.settings})


def gradient_descent(obj: Objective, lr: float, steps: int, *, theta: Tensor | None = None,
                     tracker=None, progress: bool = True) -> GDRun:
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
