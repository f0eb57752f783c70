"""Sharpness of a minimum, several ways at once, each with what it cost.

- lambda_max and lambda_min of the Hessian (one Lanczos run at both ends), and their ratio;
- the trace (Hutch++) and the negative mass, the share of the spectrum below -max(1e-3 |lambda|_max,
  SLQ's broadening) with its standard error and verdict (``SpectralDensity.negative_mass``, the one
  definition the CLI and the docs use too);
- epsilon-sharpness (Keskar et al. 2017): 100 (max_{delta in C} L(theta + delta) - L(theta)) / (1 + L(theta))
  over the box C = {|delta_i| <= epsilon (|theta_i| + 1)}, found by projected sign-gradient ascent;
- adaptive sharpness (Kwon et al. 2021): max_{||delta / (|theta| + eta)||_2 <= rho} L(theta + delta) - L(theta),
  found by projected gradient ascent in u = delta / (|theta| + eta), on the sphere ||u|| = rho.

The ascents are local searches: they give lower bounds of the maxima (the best loss seen).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from landscape.core.objective import Objective
from landscape.core.renamed import renamed
from landscape.core.results import Result
from landscape.curvature.operators import hessian
from landscape.linalg.density import NegativeMass, slq
from landscape.linalg.lanczos import lanczos
from landscape.linalg.trace import hutchpp

Tensor = torch.Tensor


@dataclass
class Sharpness(Result):
    """Every measure of ``sharpness()``; ``cost[name]`` holds the products or gradients and seconds it took."""

    loss: float
    lambda_max: float
    lambda_min: float
    ratio: float  # lambda_min / lambda_max
    trace: float
    trace_stderr: float
    negative_mass: NegativeMass
    epsilon_sharpness: float
    adaptive_sharpness: float
    cost: dict
    settings: dict


@renamed(steps="ascent_steps")
def epsilon_sharpness(obj: Objective, theta: Tensor | None = None, epsilon: float = 1e-3, ascent_steps: int = 20,
                      seed: int = 0) -> float:
    """Keskar et al.'s sharpness in percent; the box's half-widths are epsilon (|theta_i| + 1).

    Starts at a random point of the box (``seed``), takes ``ascent_steps`` sign-gradient steps of
    2.5 / ascent_steps of the half-width, projecting back onto the box, and keeps the best loss.
    """
    theta = obj.point(theta)
    base = obj.loss(theta).item()
    radius = epsilon * (theta.abs() + 1)
    generator = torch.Generator().manual_seed(seed)
    delta = radius * (torch.rand(theta.shape, generator=generator, dtype=torch.float64) * 2 - 1).to(radius)
    best = base
    for _ in range(ascent_steps):
        value, g = obj.loss_and_grad(theta + delta)
        best = max(best, value.item())
        delta = torch.clamp(delta + 2.5 / ascent_steps * radius * g.sign(), -radius, radius)
    best = max(best, obj.loss(theta + delta).item())
    return 100 * (best - base) / (1 + base)


@renamed(steps="ascent_steps")
def adaptive_sharpness(obj: Objective, theta: Tensor | None = None, rho: float = 0.05, eta: float = 0.01,
                       ascent_steps: int = 20, seed: int = 0) -> float:
    """Kwon et al.'s adaptive sharpness with T = diag(|theta| + eta) and an l2 ball of radius ``rho``.

    Ascent in u (delta = T u): u <- rho * normalize(u + rho * normalize(T g)), which for a
    quadratic is the power iteration of T H T and reaches 1/2 rho^2 lambda_max(T H T), in
    ``ascent_steps`` steps.
    """
    theta = obj.point(theta)
    base = obj.loss(theta).item()
    scale = theta.abs() + eta
    generator = torch.Generator().manual_seed(seed)
    u = torch.randn(theta.shape, generator=generator, dtype=torch.float64).to(theta)
    u = rho * u / u.norm()
    best = base
    for _ in range(ascent_steps):
        value, g = obj.loss_and_grad(theta + scale * u)
        best = max(best, value.item())
        step = scale * g
        u = u + rho * step / step.norm().clamp_min(torch.finfo(step.dtype).tiny)
        u = rho * u / u.norm()
    best = max(best, obj.loss(theta + scale * u).item())
    return best - base


@renamed(trace_budget="trace_matvecs", steps="density_steps")
def sharpness(obj: Objective, theta: Tensor | None = None, *, tol: float = 1e-6, trace_matvecs: int = 99,
              probes: int = 8, density_steps: int = 40, epsilon: float = 1e-3, rho: float = 0.05, eta: float = 0.01,
              ascent_steps: int = 20, seed: int = 0) -> Sharpness:
    """All the measures of this module at ``theta`` (default ``obj.theta0``), with their costs: the trace
    from ``trace_matvecs`` products, the density from ``probes`` SLQ probes of ``density_steps`` steps,
    each ascent ``ascent_steps`` gradient steps."""
    theta = obj.point(theta)
    H = hessian(obj, theta)
    cost = {}

    def timed(name, fn, unit):
        before, start = dict(obj.counts), time.perf_counter()
        result = fn()
        cost[name] = {key: obj.counts[key] - before.get(key, 0) for key in (unit, "n_forward")}
        cost[name]["seconds"] = time.perf_counter() - start
        return result

    which = "both" if H.shape[0] > 1 else "largest"  # a 1 x 1 Hessian has one eigenvalue, both ends at once
    ends = timed("eigenvalues", lambda: lanczos(H, k=1, which=which, tol=tol, seed=seed), "n_matvecs")
    trace = timed("trace", lambda: hutchpp(H, n_matvecs=trace_matvecs, seed=seed), "n_matvecs")
    rho_density = timed("density", lambda: slq(H, probes=probes, steps=density_steps, seed=seed), "n_matvecs")
    eps = timed("epsilon_sharpness", lambda: epsilon_sharpness(obj, theta, epsilon, ascent_steps, seed), "n_gradients")
    adaptive = timed("adaptive_sharpness", lambda: adaptive_sharpness(obj, theta, rho, eta, ascent_steps, seed),
                     "n_gradients")
    lam_max, lam_min = float(ends.eigenvalues[0]), float(ends.eigenvalues[-1])
    return Sharpness(loss=obj.loss(theta).item(), lambda_max=lam_max, lambda_min=lam_min,
                     ratio=lam_min / lam_max if lam_max != 0 else float("nan"), trace=trace.estimate,
                     trace_stderr=trace.stderr, negative_mass=rho_density.negative_mass(),
                     epsilon_sharpness=eps, adaptive_sharpness=adaptive, cost=cost,
                     settings={"tol": tol, "trace_matvecs": trace_matvecs, "probes": probes,
                               "density_steps": density_steps,
                               "epsilon": epsilon, "rho": rho, "eta": eta, "ascent_steps": ascent_steps,
                               "seed": seed, "eigenvalues_converged": ends.converged})
