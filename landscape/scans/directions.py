"""Directions to look along: random (normalized), Hessian eigenvectors, PCA of a trajectory, given.

A scan evaluates L(center + sum_a x_a d_a) on a grid of coordinates x, with directions
``d_a`` the rows of ``Directions.vectors [k, n]``. How the directions are scaled decides
what a unit step means, so random directions are normalized against the centre's weights
(Li et al. 2018, "Visualizing the loss landscape of neural nets"):

- ``"filter"``: each filter of a direction (slice ``[i]`` along dim 0 of a parameter: a
  conv filter, a row of a linear weight) is scaled to the norm of the same filter of the
  centre, d_{p,i} <- d_{p,i} ||w_{p,i}|| / ||d_{p,i}||;
- ``"layer"``: each parameter tensor scaled to the norm of the centre's tensor;
- ``"model"``: the whole direction scaled to the norm of the centre (over the included tensors);
- ``"none"``: the raw N(0, 1) draw.

Parameters with at most one dimension (biases, BatchNorm weights and biases) are zero in
a direction unless ``include_1d=True``; then each is normalized as one filter. ``random``'s default
(``include_1d=None``) includes them only when no selected parameter has two dimensions or more (a
quadratic's one vector, a subset of biases), where leaving them out would leave nothing to move. Buffers
(BatchNorm running statistics) are never part of theta, so no direction moves them.
Random directions are drawn in float64 on the CPU from a local generator, so a seed gives
the same directions on any device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from landscape.core.objective import Objective
from landscape.core.results import Result, fingerprint, jsonable
from landscape.core.space import ParamSpace
from landscape.curvature.operators import hessian as hessian_operator
from landscape.curvature.spectrum import eigenvalues

Tensor = torch.Tensor
NORMS = ("filter", "layer", "model", "none")


@dataclass
class Directions:
    """``vectors [k, n]`` spanning a scan's axes, the ``recipe`` that made them (JSON), and where they start.

    ``center [n]`` is the point the grid is centred on when the directions come with one
    (PCA: the last checkpoint; ``between``: the first model); ``None`` means the
    objective's ``theta0``. ``explained_variance`` is the PCA ratio per component.
    """

    vectors: Tensor
    recipe: dict
    center: Tensor | None = None
    explained_variance: list[float] | None = field(default=None)

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def to_dict(self) -> dict:
        return jsonable({"recipe": self.recipe, "k": len(self), "n": self.vectors.shape[1],
                         "norms": self.vectors.double().norm(dim=1), "explained_variance": self.explained_variance,
                         "sha256": fingerprint(self.vectors)})


def normalize(space: ParamSpace, D: Tensor, center: Tensor, norm: str = "filter", include_1d: bool = False) -> Tensor:
    """Scale directions ``D [k, n]`` against ``center [n]`` (see the module docstring); a new tensor."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    D = D.clone()
    tiny = torch.finfo(D.dtype).tiny
    parts = space.unflatten(D)
    weights = space.unflatten(center)
    kept = []
    for name in space.names:
        d, w = parts[name], weights[name]
        if w.ndim <= 1 and not include_1d:
            d.zero_()
            continue
        kept.append(name)
        if norm in ("filter", "layer"):
            groups = w.shape[0] if norm == "filter" and w.ndim >= 2 else 1  # filters, or the tensor as one
            rows_d, rows_w = d.reshape(d.shape[0], groups, -1), w.reshape(groups, -1)
            scale = rows_w.norm(dim=-1) / rows_d.norm(dim=-1).clamp_min(tiny)
            d.copy_((rows_d * scale[..., None]).reshape(d.shape))
    if not kept:
        raise ValueError("every selected parameter has at most one dimension (biases, BatchNorm), so the "
                         "directions would be zero; include them (include_1d=True, --include-1d)")
    if norm == "model":
        mask = torch.zeros(space.n, dtype=torch.bool, device=D.device)
        for name, where in space.slices().items():
            mask[where] = name in kept
        D.mul_(center[mask].norm() / D.norm(dim=1, keepdim=True).clamp_min(tiny))
    return D


def _orthogonalize(D: Tensor) -> Tensor:
    """Gram-Schmidt on the rows of ``D [k, n]``, each row keeping its norm."""
    Q, R = torch.linalg.qr(D.T)
    return (Q * torch.sign(torch.diagonal(R))).T * D.norm(dim=1, keepdim=True)


def _center(obj: Objective, center: Tensor | None) -> Tensor:
    return obj.point(center).detach().to("cpu", torch.float64)


def _finish(obj: Objective, D: Tensor) -> Tensor:
    return D.to(obj.device, obj.dtype)


def random(obj: Objective, k: int = 2, norm: str = "filter", seed: int = 0, include_1d: bool | None = None,
           orthogonal: bool = False, center: Tensor | None = None) -> Directions:
    """``k`` Gaussian directions normalized against ``center`` (default ``obj.theta0``), centred there.

    ``orthogonal=True`` makes them orthogonal by Gram-Schmidt, each keeping its norm
    (the filter norms then hold only approximately; random directions in many
    dimensions are nearly orthogonal anyway).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if include_1d is None:
        include_1d = all(len(shape) <= 1 for shape in obj.space.shapes)
    theta = _center(obj, center)
    generator = torch.Generator().manual_seed(seed)
    D = normalize(obj.space, torch.randn(k, obj.space.n, generator=generator, dtype=torch.float64), theta, norm,
                  include_1d)
    if orthogonal:
        D = _orthogonalize(D)
    recipe = {"kind": "random", "k": k, "norm": norm, "seed": seed, "include_1d": include_1d,
              "orthogonal": orthogonal, "center": fingerprint(theta)}
    return Directions(_finish(obj, D), recipe, center=None if center is None else _finish(obj, theta))


def hessian(obj: Objective, k: int = 2, which: str = "largest", tol: float = 1e-6, seed: int = 0,
            center: Tensor | None = None) -> Directions:
    """The Hessian's top (``which="largest"``) or bottom eigenvectors at ``center`` (default ``obj.theta0``), unit norm.

    Each eigenvector's sign is fixed so that its largest-magnitude entry is positive.
    """
    theta = obj.point(center)
    result = eigenvalues(hessian_operator(obj, theta), k=k, which=which, tol=tol, seed=seed)
    V = result.eigenvectors.to("cpu", torch.float64)
    if which == "smallest":
        V = V.flip(0)  # the lowest eigenvalue first
    V = V * torch.sign(V.gather(1, V.abs().argmax(dim=1, keepdim=True)))
    recipe = {"kind": "hessian", "k": k, "which": which, "tol": tol, "seed": seed,
              "eigenvalues": (result.eigenvalues[::-1] if which == "smallest" else result.eigenvalues).tolist(),
              "converged": result.converged, "center": fingerprint(theta)}
    return Directions(_finish(obj, V), recipe, center=None if center is None else theta.clone())


def pca(obj: Objective, trajectory: Tensor, k: int = 2, center: Tensor | None = None) -> Directions:
    """Principal directions of a training trajectory ``[m, n]`` (checkpoints as flat vectors, in order).

    As Li et al.: the rows theta_i - center (center: the last checkpoint unless given) are
    centred on their mean, and the top right singular vectors of that matrix are the
    directions (unit norm, sign fixed so the largest-magnitude entry is positive).
    ``explained_variance`` is each component's share of the total variance, s_a^2 / sum s^2.
    """
    T = torch.as_tensor(trajectory).detach().to("cpu", torch.float64)
    if T.ndim != 2 or T.shape[1] != obj.space.n:
        raise ValueError(f"the trajectory must be [m, {obj.space.n}] (one flat checkpoint per row), "
                         f"got {tuple(T.shape)}")
    theta = T[-1] if center is None else _center(obj, center)
    M = T - theta
    M = M - M.mean(dim=0)
    _, s, Vt = torch.linalg.svd(M, full_matrices=False)
    rank = int((s > s[0] * T.shape[1] * torch.finfo(torch.float64).eps).sum()) if s.numel() and s[0] > 0 else 0
    if rank < k:
        raise ValueError(f"the trajectory spans {rank} dimension(s) after centring, fewer than the {k} directions "
                         f"asked for; give at least {k + 1} distinct checkpoints")
    V = Vt[:k]
    V = V * torch.sign(V.gather(1, V.abs().argmax(dim=1, keepdim=True)))
    ratio = (s[:k] ** 2 / (s ** 2).sum()).tolist()
    recipe = {"kind": "pca", "k": k, "checkpoints": T.shape[0], "trajectory": fingerprint(T),
              "center": fingerprint(theta)}
    return Directions(_finish(obj, V), recipe, center=_finish(obj, theta), explained_variance=ratio)


def between(obj: Objective, start: Tensor, end: Tensor) -> Directions:
    """The one direction ``end - start`` from one model to another, centred at ``start`` (x = 1 is ``end``)."""
    a, b = _center(obj, start), _center(obj, end)
    if torch.equal(a, b):
        raise ValueError("the two models are identical, so the direction between them is zero")
    recipe = {"kind": "between", "start": fingerprint(a), "end": fingerprint(b)}
    return Directions(_finish(obj, (b - a)[None]), recipe, center=_finish(obj, a))


def plane(obj: Objective, start: Tensor, bend: Tensor, end: Tensor) -> Directions:
    """The plane through two models and a curve's bend(s), centred at ``start``.

    d1 = end - start (x = 1 is ``end``); d2 is orthogonal to d1 and scaled to its length, so the
    plane's units are the same along both axes: for one bend ``[n]``, the part of bend - start
    orthogonal to d1 (Garipov et al. 2018's plane, which holds a quadratic Bezier curve exactly);
    for several bends ``[m, n]``, the direction that holds most of their offsets from the line
    (the top singular vector of those orthogonal parts), the bends on the positive side.
    """
    a, b = _center(obj, start), _center(obj, end)
    C = torch.as_tensor(bend).detach().to("cpu", torch.float64)
    C = C[None] if C.ndim == 1 else C
    if C.ndim != 2 or C.shape[1] != obj.space.n or C.shape[0] == 0:
        raise ValueError(f"the bends must be [{obj.space.n}] or [m, {obj.space.n}], got {tuple(C.shape)}")
    u = b - a
    if u.norm() == 0:
        raise ValueError("the two ends are identical, so they span no plane")
    R = C - a
    R = R - (R @ u)[:, None] / (u @ u) * u
    _, sv, Vt = torch.linalg.svd(R, full_matrices=False)
    if sv[0] <= 1e-12 * u.norm():
        raise ValueError("the bend lies on the straight line between the ends (an untrained curve?), "
                         "so the points span no plane")
    v = Vt[0] * (u.norm() if float((R @ Vt[0]).sum()) >= 0 else -u.norm())
    recipe = {"kind": "plane", "start": fingerprint(a), "bends": fingerprint(C), "end": fingerprint(b)}
    return Directions(_finish(obj, torch.stack([u, v])), recipe, center=_finish(obj, a))


def given(obj: Objective, vectors: Tensor, norm: str = "none", include_1d: bool = True,
          center: Tensor | None = None) -> Directions:
    """User-given directions ``[k, n]`` (or ``[n]``), used as they are or normalized like random ones."""
    V = torch.as_tensor(vectors).detach().to("cpu", torch.float64)
    V = V[None] if V.ndim == 1 else V
    if V.ndim != 2 or V.shape[1] != obj.space.n or V.shape[0] == 0:
        raise ValueError(f"directions must have shape [k, {obj.space.n}] or [{obj.space.n}], "
                         f"got {tuple(torch.as_tensor(vectors).shape)}")
    if not torch.isfinite(V).all() or (V.norm(dim=1) == 0).any():
        raise ValueError("every given direction must be finite and nonzero")
    theta = _center(obj, center)
    if norm != "none" or not include_1d:
        V = normalize(obj.space, V, theta, norm, include_1d)
    recipe = {"kind": "given", "k": V.shape[0], "norm": norm, "include_1d": include_1d, "vectors": fingerprint(V),
              "center": fingerprint(theta)}
    return Directions(_finish(obj, V), recipe, center=None if center is None else _finish(obj, theta))


@dataclass
class Projection(Result):
    """Checkpoints placed in a scan's coordinates: ``coords [m, k]`` (least squares in the direction basis)
    and ``residuals [m]``, the distance of each checkpoint from the span (0: exactly on the plane);
    ``relative [m]`` is that distance over ||theta_i - center||."""

    coords: np.ndarray
    residuals: np.ndarray
    relative: np.ndarray


def project(directions: Directions, trajectory: Tensor, center: Tensor | None = None) -> Projection:
    """Project checkpoints ``[m, n]`` onto center + span(directions): c_i = argmin ||theta_i - center - c D||.

    ``center`` defaults to the directions' own; computed in float64.
    """
    if center is None:
        center = directions.center
    if center is None:
        raise ValueError("these directions carry no centre; pass center= (the point at coordinates 0)")
    D = directions.vectors.detach().to("cpu", torch.float64)
    T = torch.as_tensor(trajectory).detach().to("cpu", torch.float64)
    T = T[None] if T.ndim == 1 else T
    if T.ndim != 2 or T.shape[1] != D.shape[1]:
        raise ValueError(f"checkpoints must be [m, {D.shape[1]}], got {tuple(T.shape)}")
    R = T - torch.as_tensor(center).detach().to("cpu", torch.float64)
    coords = torch.linalg.lstsq(D.T, R.T).solution.T
    residuals = (R - coords @ D).norm(dim=1)
    relative = residuals / R.norm(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
    return Projection(coords.numpy(), residuals.numpy(), relative.numpy())
