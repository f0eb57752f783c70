"""Paths between two minima: the straight line, trained Bezier curves and polygonal chains, their barriers.

A path runs from theta(0) = theta_a to theta(1) = theta_b. A curve with m bends has control
points ``points [m + 2, n]``: P_0 = theta_a, the bends P_1 ... P_m, P_{m+1} = theta_b.

- ``bezier``:    theta(t) = sum_i C(m+1, i) t^i (1 - t)^(m+1-i) P_i  (m = 1: the quadratic Bezier
  curve of Garipov et al. 2018);
- ``polychain``: straight segments through P_0, ..., P_{m+1}, reached at t = i / (m + 1);
- ``line``:      m = 0, theta(t) = (1 - t) theta_a + t theta_b (t outside [0, 1] extrapolates).

Barriers of the loss L(t) along a path, the maximum over the evaluated t in [0, 1] (the ends
included, so both are >= 0):

- ``barrier_linear`` (Entezari et al. 2021): max_t L(t) - [(1 - t) L(0) + t L(1)], positive
  exactly when the path rises above the chord between its ends;
- ``barrier_mean``   (Frankle et al. 2020):  max_t L(t) - [L(0) + L(1)] / 2, at least
  |L(0) - L(1)| / 2 even on a path that only descends.

A NaN loss on [0, 1] makes both NaN: unknown, never an underestimate.

BatchNorm in eval mode normalizes with running statistics, which belong to the endpoints and
not to the points between them. ``statistics`` says what a path used:

- ``"interpolated"``: the endpoints' statistics, linear in t (what averaging two state dicts
  gives; held at the nearer end's outside [0, 1], where a variance could turn negative);
- ``"recomputed"``: recomputed from the data at every point (Garipov et al.), one more pass over
  the data per point. ``recompute_bn=None`` (the default) recomputes along curves, whose bends
  no endpoint statistics describe, and interpolates along lines;
- ``"fixed"``: the objective's own at every point (endpoints given as flat vectors);
- ``"batch"``: an objective in train mode normalizes with batch statistics, the running ones unused;
- ``"none"``: the model has no BatchNorm.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_map
from tqdm.auto import tqdm

from landscape.core.data import examples_in, weight
from landscape.core.objective import Objective
from landscape.core.results import Result
from landscape.scans import points as evaluation

Tensor = torch.Tensor
KINDS = ("line", "bezier", "polychain")
OPTIMIZERS = ("adam", "sgd")
CHUNK = 64  # path points computed (and held as [CHUNK, n]) at a time
FORMAT = 1


def _norms(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers that keep running statistics, by name."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats}


def _statistics(obj: Objective, path: Curve, recompute_bn: bool | None) -> str:
    if not _norms(obj.model):
        return "none"
    if obj.train:
        return "batch"
    if recompute_bn or (recompute_bn is None and path.bends > 0):
        return "recomputed"
    return "interpolated" if path.buffers[0] else "fixed"


def _endpoint(obj: Objective, x, which: str) -> tuple[Tensor, dict[str, Tensor]]:
    """A flat vector ``[n]``, or a model of the objective's architecture -> (theta [n], its floating buffers)."""
    if not isinstance(x, nn.Module):
        theta = torch.as_tensor(x).detach()
        if theta.shape != (obj.space.n,):
            raise ValueError(f"model {which} must be a module or a flat vector of shape [{obj.space.n}], "
                             f"got shape {tuple(theta.shape)}")
        return theta.to(obj.device, obj.dtype), {}
    named = dict(x.named_parameters())
    for name, shape in zip(obj.space.names, obj.space.shapes):
        if name not in named:
            raise ValueError(f"model {which} has no parameter {name}")
        if named[name].shape != shape:
            raise ValueError(f"{name} has shape {tuple(named[name].shape)} in model {which} but {tuple(shape)} "
                             f"in the objective's model")
    for name, p in named.items():  # a path moves theta only: the rest must be the objective's
        if name not in obj.space.names and name in obj.fixed and not torch.equal(
                p.detach().to(obj.device, obj.dtype), obj.fixed[name]):
            raise ValueError(f"model {which} differs from the objective's model in {name}, which is not part of "
                             f"theta (params=...); a path between the two would move only theta")
    theta = obj.space.flatten(named).detach().to(obj.device, obj.dtype)
    buffers = {name: b.detach().to(obj.device, obj.dtype) for name, b in x.named_buffers()
               if b.is_floating_point() and name in obj.fixed}
    for name, t in [*zip(obj.space.names, obj.space.unflatten(theta).values()), *buffers.items()]:
        if not torch.isfinite(t).all():
            raise ValueError(f"model {which}: {name} has non-finite values")
    for name, b in buffers.items():
        if b.shape != obj.fixed[name].shape:
            raise ValueError(f"buffer {name} has shape {tuple(b.shape)} in model {which} but "
                             f"{tuple(obj.fixed[name].shape)} in the objective's model")
    return theta, buffers


@dataclass
class Curve:
    """A path through control points ``points [m + 2, n]`` (see the module docstring).

    ``buffers`` holds the endpoints' floating buffers (BatchNorm running statistics), as two dicts,
    interpolated linearly in t along the curve; empty dicts mean the objective's own.
    ``training`` records how the bends were trained (``train_curve``), or None.
    """

    kind: str
    points: Tensor
    buffers: tuple[dict[str, Tensor], dict[str, Tensor]] = field(default_factory=lambda: ({}, {}))
    training: dict | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"a curve's kind is one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.points.ndim != 2 or self.points.shape[0] < 2:
            raise ValueError(f"control points must be [m + 2, n] with m >= 0 bends, got {tuple(self.points.shape)}")
        if self.kind == "line" and self.bends:
            raise ValueError("a line has no bends: use kind='bezier' or 'polychain'")

    @property
    def bends(self) -> int:
        return self.points.shape[0] - 2

    def weights(self, t, derivative: bool = False) -> Tensor:
        """``w [T, m + 2]`` with theta(t) = w @ points (or theta'(t) with ``derivative``), in float64."""
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1)
        d = self.bends + 1
        if self.kind == "bezier":
            if derivative:
                return d * (_bernstein(t, d - 1, pad="left") - _bernstein(t, d - 1, pad="right"))
            return _bernstein(t, d)
        k = (t * d).floor().clamp(0, d - 1)  # the segment; outside [0, 1] the end segments extend
        s = t * d - k
        w = torch.zeros(t.shape[0], d + 1, dtype=torch.float64)
        rows = torch.arange(t.shape[0])
        lo, hi = k[:, 0].long(), k[:, 0].long() + 1
        w[rows, lo] = -float(d) if derivative else 1 - s[:, 0]
        w[rows, hi] = float(d) if derivative else s[:, 0]
        return w

    def __call__(self, t) -> Tensor:
        """theta(t): ``[n]`` for a number, ``[T, n]`` for ``T`` values."""
        w = self.weights(t).to(self.points.device, self.points.dtype)
        thetas = w @ self.points
        return thetas[0] if torch.as_tensor(t).ndim == 0 else thetas

    def length(self) -> float:
        """Euclidean length int_0^1 ||theta'(t)|| dt: exact for chains, 64-point Gauss-Legendre for Bezier."""
        P = self.points.detach().to("cpu", torch.float64)
        if self.kind != "bezier":
            return float((P[1:] - P[:-1]).norm(dim=1).sum())
        nodes, quad = np.polynomial.legendre.leggauss(64)
        D = P[1:] - P[:-1]  # theta'(t) = (m + 1) sum_i B_{i,m}(t) (P_{i+1} - P_i)
        W = (self.bends + 1) * _bernstein(torch.from_numpy((nodes + 1) / 2).reshape(-1, 1), self.bends)
        speed2 = ((W @ (D @ D.T)) * W).sum(dim=1).clamp_min(0)  # ||theta'||^2 through the Gram matrix
        return float((torch.from_numpy(quad) * speed2.sqrt()).sum() / 2)

    def save(self, path: str | Path) -> Path:
        """Write the curve (kind, control points, endpoint buffers, training record) for ``Curve.load``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": FORMAT, "kind": self.kind, "points": self.points.detach().cpu(),
                    "buffers_a": {k: v.cpu() for k, v in self.buffers[0].items()},
                    "buffers_b": {k: v.cpu() for k, v in self.buffers[1].items()},
                    "training": json.dumps(self.training)}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Curve:
        """A curve saved by ``save`` (read with ``weights_only=True``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"curve file {path} does not exist")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(f"{path} is not a curve file torch.load can read ({type(error).__name__})") from error
        if not isinstance(data, dict) or data.get("format") != FORMAT or "points" not in data:
            raise ValueError(f"{path} is not a curve saved by landscape (Curve.save)")
        return cls(data["kind"], data["points"], (data["buffers_a"], data["buffers_b"]), json.loads(data["training"]))


def _bernstein(t: Tensor, degree: int, pad: str | None = None) -> Tensor:
    """Bernstein polynomials B_{i,degree}(t) ``[T, degree + 1]``; ``pad`` adds a zero column left or right."""
    i = torch.arange(degree + 1, dtype=torch.float64)
    binom = torch.tensor([math.comb(degree, int(j)) for j in i], dtype=torch.float64)
    B = binom * t ** i * (1 - t) ** (degree - i)
    zero = torch.zeros(t.shape[0], 1, dtype=torch.float64)
    return B if pad is None else torch.cat([zero, B] if pad == "left" else [B, zero], dim=1)


def curve(obj: Objective, a, b, kind: str = "bezier", bends: int = 1) -> Curve:
    """A curve from ``a`` to ``b`` (flat vectors ``[n]`` or models of the objective's architecture)
    with ``bends`` control points on the straight line at t = i / (bends + 1), ready for ``train_curve``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    bends = 0 if kind == "line" else bends
    if isinstance(bends, bool) or not isinstance(bends, int) or bends < (0 if kind == "line" else 1):
        raise ValueError(f"a {kind} needs at least one bend, got bends={bends!r}")
    if isinstance(a, nn.Module) != isinstance(b, nn.Module):
        raise ValueError("give both ends as models or both as flat vectors (a model brings its BatchNorm "
                         "statistics, a vector does not)")
    (theta_a, buffers_a), (theta_b, buffers_b) = _endpoint(obj, a, "a"), _endpoint(obj, b, "b")
    if set(buffers_a) != set(buffers_b):
        raise ValueError("models a and b have different buffers: " + ", ".join(sorted(set(buffers_a) ^ set(buffers_b))))
    if bends and torch.equal(theta_a, theta_b):
        raise ValueError("models a and b are identical: there is no curve to train between them")
    s = torch.linspace(0, 1, bends + 2, dtype=obj.dtype, device=obj.device)[:, None]
    points = torch.lerp(theta_a, theta_b, s)
    points[0], points[-1] = theta_a, theta_b  # exact ends
    return Curve(kind, points, (buffers_a, buffers_b))


def batchnorm_statistics(obj: Objective, theta: Tensor) -> dict[str, Tensor]:
    """The running statistics of every BatchNorm layer at ``theta``, recomputed from the objective's data.

    Each layer's running mean and (unbiased) variance become the means over the batches of its batch
    statistics, weighted by batch size (torch's running average with momentum n_b / (seen + n_b)),
    computed with the BatchNorm layers in train mode and every other module in eval mode.
    Returns ``{buffer name: tensor}`` (empty for a model without BatchNorm).
    """
    obj.require_whole_data("curves.batchnorm_statistics")
    norms = _norms(obj.model)
    if not norms:
        return {}
    fresh = {}
    for name in norms:
        prefix = f"{name}." if name else ""
        fresh[prefix + "running_mean"] = torch.zeros_like(obj.fixed[prefix + "running_mean"])
        fresh[prefix + "running_var"] = torch.ones_like(obj.fixed[prefix + "running_var"])
        fresh[prefix + "num_batches_tracked"] = torch.zeros_like(obj.fixed[prefix + "num_batches_tracked"])
    saved = [(m, m.training) for m in obj.model.modules()]
    momenta = [(m, m.momentum) for m in norms.values()]
    seen = 0
    try:
        obj.model.eval()
        for m in norms.values():
            m.train()
        with torch.no_grad():
            for X, _, size in obj.batches():
                for m in norms.values():
                    m.momentum = size / (seen + size)
                obj.forward(theta, X, fresh)  # updates ``fresh`` in place
                seen += size
    finally:
        for m, training in saved:
            m.training = training
        for m, momentum in momenta:
            m.momentum = momentum
    obj.counts["n_forward"] += 1
    return fresh


def barriers(t, loss) -> dict[str, float]:
    """Both barriers of ``loss`` along a path sampled at ``t`` (see the module docstring).

    Returns ``{"linear", "mean", "t_linear", "t_mean"}``: the barriers and the t where each is
    attained. ``t`` must contain 0 and 1; points outside [0, 1] are ignored.
    """
    t, loss = np.asarray(t, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    if t.shape != loss.shape or t.ndim != 1:
        raise ValueError(f"t and loss must be 1-D of the same length, got {t.shape} and {loss.shape}")
    if not ((t == 0).any() and (t == 1).any()):
        raise ValueError("the path must be evaluated at t = 0 and t = 1 to measure a barrier")
    start, end = loss[t == 0][0], loss[t == 1][0]
    inside = (t >= 0) & (t <= 1)
    t, loss = t[inside], loss[inside]
    if np.isnan(loss).any():
        return {"linear": math.nan, "mean": math.nan, "t_linear": math.nan, "t_mean": math.nan}
    above_line = loss - ((1 - t) * start + t * end)
    above_mean = loss - (start + end) / 2
    i, j = int(np.argmax(above_line)), int(np.argmax(above_mean))
    return {"linear": float(above_line[i]), "mean": float(above_mean[j]), "t_linear": float(t[i]),
            "t_mean": float(t[j])}


@dataclass
class LossPath(Result):
    """The loss (and metrics) along a path at ``t [T]`` (0 and 1 included), its barriers and cost.

    ``values[name] [T]``; ``barrier_linear`` and ``barrier_mean`` as in the module docstring,
    attained at ``t_barrier`` and ``t_barrier_mean``; ``max_loss`` over t in [0, 1]; ``length`` the
    path's Euclidean length in parameter space; ``statistics`` how BatchNorm was treated; ``strategy`` how the
    points were evaluated (``points.evaluator``: "loop" or "batched"); ``n_forward`` passes over the data (a
    recomputation of BatchNorm statistics counts one).
    """

    kind: str
    bends: int
    t: np.ndarray
    values: dict[str, np.ndarray]
    barrier_linear: float
    barrier_mean: float
    t_barrier: float
    t_barrier_mean: float
    max_loss: float
    length: float
    statistics: str
    strategy: str
    n_forward: int
    seconds: float


def evaluate_curve(obj: Objective, path: Curve, num: int = 61, *, t=None,
                   metrics: Mapping[str, Callable[[Tensor, Tensor], Tensor]] | None = None,
                   recompute_bn: bool | None = None, progress: bool = True) -> LossPath:
    """The loss and ``metrics`` at ``num`` evenly spaced t in [0, 1], or at the given ``t`` (0 and 1 are added).

    ``recompute_bn``: recompute BatchNorm's running statistics at every point; None: along curves
    with bends, not along lines (module docstring).
    """
    obj.require_whole_data("curves.evaluate_curve")
    if t is None:
        if isinstance(num, bool) or not isinstance(num, int) or num < 2:
            raise ValueError(f"num must be an integer of at least 2, got {num!r}")
        t = np.linspace(0.0, 1.0, num)
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    if not np.isfinite(t).all():
        raise ValueError("t must be finite")
    t = np.union1d(t, [0.0, 1.0])
    if path.points.shape[1] != obj.space.n:
        raise ValueError(f"the curve lives in {path.points.shape[1]} parameters, the objective in {obj.space.n}")
    statistics = _statistics(obj, path, recompute_bn)
    fns = obj.functions(metrics)
    points = path.points.to(obj.device, obj.dtype)
    ends = [{k: v.to(obj.device, obj.dtype) for k, v in side.items()} for side in path.buffers]
    for name in ends[0]:
        if name not in obj.fixed:
            raise ValueError(f"the curve's buffer {name} is not a buffer of the objective's model")
    varying = statistics == "recomputed" or any(not torch.equal(ends[0][k], ends[1][k]) for k in ends[0])
    # Points one at a time on an in-place copy of the model, as a scan's loop; where every point shares the
    # buffers, the rule of an unmeasured auto (a chunk at once, vmapped, on a GPU for a model vmap can serve).
    batched = not varying and evaluation.resolve(obj, "auto") == "batched"
    evaluate = evaluation.evaluator(obj, metrics, "batched" if batched else "loop")
    rows = []
    start = time.perf_counter()
    bar = tqdm(total=len(t), desc=f"{path.kind} path", unit="pt", disable=not progress, dynamic_ncols=True)
    for lo in range(0, len(t), CHUNK):
        s = t[lo:lo + CHUNK]
        thetas = path.weights(s).to(obj.device, obj.dtype) @ points
        buffers = [{name: torch.lerp(ends[0][name], ends[1][name], min(max(float(x), 0.0), 1.0)) for name in ends[0]}
                   for x in s]
        if statistics == "recomputed":
            for theta, own in zip(thetas, buffers):
                own.update(batchnorm_statistics(obj, theta))
        rows.append(evaluate(thetas) if batched else evaluate(thetas, buffers if varying else None))
        bar.update(len(s))
    bar.close()
    found = np.concatenate(rows)
    values = {name: found[:, m] for m, name in enumerate(fns)}
    peak = barriers(t, values["loss"])
    inside = (t >= 0) & (t <= 1)
    return LossPath(kind=path.kind, bends=path.bends, t=t, values=values, barrier_linear=peak["linear"],
                    barrier_mean=peak["mean"], t_barrier=peak["t_linear"], t_barrier_mean=peak["t_mean"],
                    max_loss=float(np.max(values["loss"][inside])), length=path.length(), statistics=statistics,
                    strategy="batched" if batched else "loop",
                    n_forward=len(t) * (2 if statistics == "recomputed" else 1), seconds=time.perf_counter() - start)


def interpolate(obj: Objective, a, b, num: int = 25, *, t=None,
                metrics: Mapping[str, Callable[[Tensor, Tensor], Tensor]] | None = None,
                recompute_bn: bool | None = None, progress: bool = True) -> LossPath:
    """The loss along the straight line (1 - t) theta_a + t theta_b at ``num`` points of [0, 1].

    ``a``, ``b``: flat vectors ``[n]`` or models of the objective's architecture (their BatchNorm
    statistics are then interpolated too, or recomputed with ``recompute_bn``). Give ``t`` to
    choose the points, e.g. ``np.linspace(-0.5, 1.5, 41)`` to extrapolate; 0 and 1 are always added.
    """
    return evaluate_curve(obj, curve(obj, a, b, kind="line"), num, t=t, metrics=metrics,
                          recompute_bn=recompute_bn, progress=progress)


def train_curve(obj: Objective, path: Curve, *, epochs: int = 50, lr: float = 0.01, batch_size: int | None = None,
                optimizer: str = "adam", seed: int = 0, progress: bool = True) -> Curve:
    """Train the bends of ``path`` (ends fixed) to minimize E_{t ~ U(0, 1)} L(theta(t)) (Garipov et al. 2018).

    Each step draws one t and takes the loss of one batch at theta(t): the objective's batches, or,
    with ``batch_size``, random batches of that size cut from each of them every epoch. Adam (or SGD
    with momentum 0.9) at ``lr``. A model with BatchNorm is trained on batch statistics, as in
    Garipov et al.: the endpoints' running statistics mean nothing at the bends. Returns a new curve
    whose ``training`` records the settings, the steps, the seconds and the mean loss of each epoch.
    """
    obj.require_whole_data("curves.train_curve")
    if path.bends == 0:
        raise ValueError("a line has no bends to train")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    work = obj.to(train=True) if _norms(obj.model) and not obj.train else obj
    points = path.points.detach().to(obj.device, obj.dtype)
    first, last = points[0], points[-1]
    bends = points[1:-1].clone().requires_grad_(True)
    opt = (torch.optim.Adam([bends], lr=lr) if optimizer == "adam"
           else torch.optim.SGD([bends], lr=lr, momentum=0.9))
    g = torch.Generator().manual_seed(seed)
    history, steps = [], 0
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc=f"train {path.kind}", unit="epoch", disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        total, seen = 0.0, 0
        for X, y, size in work.batches():
            m = examples_in(X)
            order = torch.randperm(m, generator=g).to(obj.device) if batch_size else None
            for lo in range(0, m, batch_size or m):
                if order is None:
                    Xb, yb, nb = X, y, size
                else:
                    index = order[lo:lo + batch_size]
                    Xb, yb = tree_map(lambda v: v[index], X), tree_map(lambda v: v[index], y)
                    nb = weight(Xb, yb, work.weights, work.shifted)  # examples, or label tokens
                if examples_in(Xb) == 1 and work.train and _norms(obj.model):
                    continue  # BatchNorm has no batch statistics of one example
                w = path.weights(torch.rand(1, generator=g, dtype=torch.float64)).to(obj.device, obj.dtype)[0]
                with work.configured(), torch.enable_grad():
                    theta = w[0] * first + w[1:-1] @ bends + w[-1] * last
                    loss = work.batch_loss(theta, Xb, yb)
                if not torch.isfinite(loss):
                    raise ValueError(f"curve training diverged at epoch {epoch + 1} (loss {loss.item()}); "
                                     f"try a smaller lr (now {lr:g})")
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, seen, steps = total + loss.item() * nb, seen + nb, steps + 1
        history.append(total / seen)
        bar.set_postfix(loss=f"{history[-1]:.4g}", refresh=False)
    bar.close()
    training = {"epochs": epochs, "steps": steps, "lr": lr, "optimizer": optimizer, "batch_size": batch_size,
                "seed": seed, "statistics": "batch" if _norms(obj.model) else "none",
                "seconds": time.perf_counter() - start, "loss": history}
    trained = torch.cat([first[None], bends.detach(), last[None]])
    return Curve(path.kind, trained, path.buffers, training)
