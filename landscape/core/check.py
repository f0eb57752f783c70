"""The self-check of an objective's HVPs: exact products against central differences of its gradient."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from landscape.core.hvp import DERIVATIVE_PATH
from landscape.core.results import Result

Tensor = torch.Tensor


@dataclass
class HVPCheck(Result):
    """Exact HVPs against central finite differences of the gradient (see ``Objective.check_hvp``)."""

    rel_error: float  # max over vectors of ||Hv - FD|| / ||FD||
    rel_errors: list[float]
    tolerance: float
    ok: bool
    mode: str
    dtype: str
    steps: list[float]  # the finite-difference step that agreed best, per vector
    seed: int
    seconds: float
    derivative_path: str = DERIVATIVE_PATH  # the HVPs' kernels, the products' own (core.hvp.twice_differentiable)
    in_own_dtype: OwnPrecision | None = None  # the products in the objective's dtype, when the check ran in another
    examples: int | None = None  # checked on the data's first examples (``Objective.head``); None: all of them

    @property
    def agrees(self) -> bool:
        """The verdict against finite differences (``rel_error <= tolerance``); ``ok`` also needs
        ``in_own_dtype``'s."""
        return self.rel_error <= self.tolerance


@dataclass
class OwnPrecision(Result):
    """The same products computed in the objective's own dtype, against the ones just checked (``HVPCheck``).

    rel_error = max over vectors of ||Hv (own dtype) - Hv (checked)|| / ||Hv (checked)||; it agrees when below
    ``tolerance`` = sqrt(eps) of the dtype (3.5e-4 for float32: healthy kernels give ~1e-6).
    """

    dtype: str
    rel_error: float
    rel_errors: list[float]
    tolerance: float
    agrees: bool


def check_hvp(objective, theta: Tensor | None = None, n_vectors: int = 3, *, dtype: torch.dtype | None = torch.float64,
              steps: Sequence[float] | None = None, mode: str | None = None, seed: int = 0,
              examples: int | None = None) -> HVPCheck:
    """Compare the HVPs of ``objective`` (an ``Objective``) on random unit vectors v with central differences of
    its gradient.

    FD_h(v) = (g(theta + h v) - g(theta - h v)) / (2h) for each step h in ``steps``
    (float64: 1e-3 ... 1e-7; float32: 1e-1 ... 1e-4); each vector's error is the
    smallest ||Hv - FD_h|| / ||FD_h|| over the steps. Large steps cross the kinks of
    ReLU-like activations, small ones lose digits to rounding; a correct derivative
    agrees at some step, a wrong one at none. The check runs in ``dtype`` (default
    float64, where errors are ~1e-9; ``None`` keeps the objective's dtype), at the precision of
    the loss as it comes out: a model that computes its own loss in float32 (Hugging Face's causal LMs
    upcast their logits to float32) is checked at float32's steps and tolerance. The products are
    the engine's own, on its path (``derivative_path``). An error above ``tolerance`` means an
    autodiff rule in the model is wrong.

    When ``dtype`` is not the objective's own, the same products are also computed in the objective's dtype,
    the precision they will be used in, where a kernel or a rule may differ (float64 cannot see a
    float32-only bug), and compared with the checked ones (``in_own_dtype``, an ``OwnPrecision``; finite
    differences in float32 are too coarse for that: ReLU kinks and rounding leave them 1e-1 off);
    ``ok`` needs both to agree.

    ``examples``: check on the data's first examples only (``Objective.head``: an autodiff rule that is wrong is
    wrong on any data), on the path the whole objective takes (its ``mode``, resolved on all the data).
    """
    if n_vectors < 1:
        raise ValueError(f"n_vectors must be at least 1, got {n_vectors}")
    start = time.perf_counter()
    if examples is not None:
        mode = objective.resolve_mode(mode)
        objective = objective.head(examples)
    obj = objective if dtype in (None, objective.dtype) else objective.to(dtype=dtype)
    own_theta = objective.point(theta)
    theta = obj.point(theta)
    precision = obj.loss(theta).dtype
    exact = precision == torch.float64
    steps = tuple(steps or ((1e-3, 1e-4, 1e-5, 1e-6, 1e-7) if exact else (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)))
    generator = torch.Generator().manual_seed(seed)
    V = torch.randn(n_vectors, obj.space.n, generator=generator, dtype=torch.float64)
    V = (V / V.norm(dim=1, keepdim=True)).to(obj.device, obj.dtype)
    resolved = obj.resolve_mode(mode)
    HV = obj.hvp(V, theta, mode=resolved)
    errors, best_steps = [], []
    for v, hv in zip(V, HV):
        trials = []
        for h in steps:
            fd = (obj.grad(theta + h * v) - obj.grad(theta - h * v)) / (2 * h)
            trials.append(((hv - fd).norm() / fd.norm().clamp_min(torch.finfo(obj.dtype).tiny)).item())
        errors.append(min(trials))
        best_steps.append(steps[trials.index(min(trials))])
    tolerance = 1e-6 if exact else 1e-2
    own = None
    if obj is not objective:
        own_HV = objective.hvp(V.to(objective.dtype), own_theta, mode=objective.resolve_mode(mode)).to(HV.dtype)
        own_errors = ((own_HV - HV).norm(dim=1) / HV.norm(dim=1).clamp_min(torch.finfo(HV.dtype).tiny)).tolist()
        own_tolerance = torch.finfo(objective.dtype).eps ** 0.5
        own = OwnPrecision(dtype=str(objective.dtype).removeprefix("torch."), rel_error=max(own_errors),
                           rel_errors=own_errors, tolerance=own_tolerance, agrees=max(own_errors) <= own_tolerance)
    return HVPCheck(rel_error=max(errors), rel_errors=errors, tolerance=tolerance,
                    ok=max(errors) <= tolerance and (own is None or own.agrees), mode=resolved,
                    dtype=str(precision).removeprefix("torch."), steps=best_steps, seed=seed,
                    seconds=time.perf_counter() - start, in_own_dtype=own, examples=examples)
