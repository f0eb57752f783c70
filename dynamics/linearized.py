"""Training in the kernel regime: the model linearized at theta_0, solved in closed form under a square loss.

The loss, and its normalisation (checked, not assumed), is

    L(theta) = (c / 2m) sum_i ||f(theta, x_i) - y_i||^2        over m examples with C outputs each,

with c = 1 for ``landscape.problems.square_loss`` (1/2 mean_i ||f_i - e_{y_i}||^2) and c = 2/C
for ``F.mse_loss``. The targets y and c are read off ``loss_fn`` by autograd (y = f - (m/c) dL/df)
and the loss is then checked to be exactly that quadratic, so any other loss is refused.

The linearized model f_lin(theta, x) = f(theta_0, x) + J(x)(theta - theta_0) has a constant
kernel Theta = J J^T ``[mC, mC]`` (the empirical NTK of ``landscape.kernels.ntk`` at theta_0, row
``i*C + c``). On the training inputs, with r_0 = f_0 - y:

- gradient flow theta' = -grad L (the time of ``dynamics.flow.gradient_flow``; GD at lr for
  k steps is t = k lr):  f_t = y + exp(-c Theta t / m) r_0;
- gradient descent at ``lr``:  f_k = y + (I - lr c Theta / m)^k r_0.

At other inputs x (``X_test``) the outputs move by the cross kernel Theta(x, X) ``[m_t C, mC]``:
f_t(x) = f_0(x) - Theta(x, X) Theta^+ (I - exp(-c Theta t / m)) r_0, the same with
(I - lr c Theta / m)^k for GD. Both are evaluated in Theta's eigenbasis, where
(1 - exp(-a lambda)) / lambda -> a as lambda -> 0: the kernel's null space never moves.

``compare`` trains the real network (GD, or gradient flow) from the same theta_0 and records
how far its outputs drift from the linearized ones: where the kernel regime holds (wide
networks) the gap stays small, and it grows as width shrinks. ``sweep`` runs ``compare`` over
widths and seeds, and ``power_law`` fits the rate, gap ~ A width^-p: Lee et al. (2019) bound it
by p >= 1/2; in the NTK parametrization (``landscape.problems.NTKLinear``) Dyer & Gur-Ari (2019)
predict p = 1 for wide networks, which tests/dynamics/test_linearized.py approaches (0.90).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils._pytree import tree_map
from tqdm.auto import tqdm

from landscape.core.data import examples
from landscape.core.objective import Objective
from landscape.core.results import jsonable
from landscape.kernels import ntk

Tensor = torch.Tensor
METHODS = ("gd", "flow")


def _square_loss(obj: Objective, theta: Tensor, X, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, float]:
    """Outputs ``[m_b, C]``, targets ``[m_b, C]`` and c of one batch whose loss is (c/2m_b) sum ||f - y||^2.

    From g = dL/df at f: y = f - (m_b/c) g, where c/m_b = <dL/df(f + d) - g, d> / ||d||^2 for a
    random d. Then L(f + d) must equal (c/2m_b) ||f + d - y||^2 at f and at the random point.
    """
    with obj.configured(), torch.no_grad():
        f = obj.forward(theta, X)
    if not isinstance(f, Tensor):
        raise ValueError(f"the linearized model needs outputs that are one tensor under a square loss; this model "
                         f"returns {type(f).__name__}")
    m_b = f.shape[0] if f.ndim else 1

    def loss_and_grad(outputs: Tensor) -> tuple[Tensor, Tensor]:
        outputs = outputs.detach().requires_grad_()
        with torch.enable_grad():
            value = obj.loss_fn(outputs, y)
            if not isinstance(value, Tensor) or value.ndim != 0:
                raise ValueError("loss_fn must return a scalar (the batch mean)")
            grad, = torch.autograd.grad(value, outputs, allow_unused=True)
        return value.detach(), torch.zeros_like(outputs) if grad is None else grad

    d = torch.randn(f.shape, generator=generator, dtype=torch.float64).to(f.device, f.dtype)
    value, g = loss_and_grad(f)
    moved, g_moved = loss_and_grad(f + d)
    curvature = float(((g_moved - g) * d).sum() / (d * d).sum())  # c / m_b
    targets = f - g / curvature if curvature > 0 else f
    tol = 1e-9 if f.dtype == torch.float64 else 1e-4
    for at, expected in ((f, value), (f + d, moved)):
        quadratic = 0.5 * curvature * float(((at - targets) ** 2).sum())
        if not curvature > 0 or abs(quadratic - float(expected)) > tol * max(1.0, abs(float(expected))):
            raise ValueError("the linearized solution needs the square loss (c/2m) sum_i ||f(x_i) - y_i||^2, "
                             "e.g. landscape.problems.square_loss or 0.5 * ((f - y) ** 2).sum(-1).mean(); "
                             "this loss_fn is not of that form")
    return f.reshape(m_b, -1), targets.reshape(m_b, -1), curvature * m_b


def _cat(batches: list):
    return tree_map(lambda *parts: torch.cat(parts), *batches) if len(batches) > 1 else batches[0]


@dataclass
class Linearized:
    """The model linearized at ``theta0 [n]`` on the objective's m training examples, C outputs each.

    ``kernel [mC, mC]`` the empirical NTK (row ``i*C + c``), ``eigenvalues [mC]`` (ascending,
    clipped at 0) and ``eigenvectors [mC, mC]`` (columns); ``f0``, ``targets`` ``[m, C]``; ``scale``
    the c of L = (c/2m) sum ||f - y||^2; ``inputs``, the m training inputs as the data holds them.
    With test inputs: ``test_inputs``, ``test_kernel [m_t C, mC]`` and ``f0_test [m_t, C]``.
    All float64 on the objective's device.
    """

    theta0: Tensor
    kernel: Tensor
    eigenvalues: Tensor
    eigenvectors: Tensor
    f0: Tensor
    targets: Tensor
    scale: float
    inputs: object = None
    test_inputs: object = None
    test_kernel: Tensor | None = None
    f0_test: Tensor | None = None

    @property
    def m(self) -> int:
        return self.f0.shape[0]

    def _outputs(self, decay: Tensor, moved: Tensor, test: bool) -> Tensor:
        """Outputs ``[T, m, C]`` (or ``[T, m_t, C]``) from the residual's decay ``[T, mC]`` per
        eigenvalue, or for test inputs from ``moved [T, mC]`` = (1 - decay) / lambda."""
        V = self.eigenvectors
        r0 = V.T @ (self.f0 - self.targets).reshape(-1)  # the residual in the eigenbasis
        if not test:
            out = self.targets.reshape(-1) + (decay * r0) @ V.T
            return out.reshape(len(decay), *self.f0.shape)
        if self.test_kernel is None:
            raise ValueError("no test inputs: build it with linearize(obj, X_test=...)")
        out = self.f0_test.reshape(-1) - (moved * r0) @ (self.test_kernel @ V).T
        return out.reshape(len(decay), *self.f0_test.shape)

    def flow(self, times, *, test: bool = False) -> Tensor:
        """Outputs ``[T, m, C]`` under gradient flow theta' = -grad L at ``times [T]``
        (``test=True``: at the test inputs, ``[T, m_t, C]``)."""
        t = torch.as_tensor(np.asarray(times, dtype=np.float64), device=self.kernel.device).reshape(-1, 1)
        a = self.scale / self.m * t  # [T, 1]
        lam = self.eigenvalues[None]
        decay = torch.exp(-a * lam)
        positive = lam > 0
        moved = torch.where(positive, -torch.expm1(-a * lam) / torch.where(positive, lam, 1.0), a)
        return self._outputs(decay, moved, test)

    def gd(self, lr: float, steps, *, test: bool = False) -> Tensor:
        """Outputs ``[T, m, C]`` after each of ``steps [T]`` steps of gradient descent at ``lr``."""
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        k = torch.as_tensor(np.asarray(steps, dtype=np.float64), device=self.kernel.device).reshape(-1, 1)
        b = lr * self.scale / self.m
        lam = self.eigenvalues[None]
        decay = (1 - b * lam) ** k
        positive = lam > 0
        # 1 - (1 - b lambda)^k = -expm1(k log1p(-b lambda)), exact to rounding as lambda -> 0 (where b lambda < 1)
        small = -torch.expm1(k * torch.log1p(-(b * lam).clamp(max=0.5)))
        gained = torch.where(b * lam < 0.5, small, 1 - decay)
        moved = torch.where(positive, gained / torch.where(positive, lam, 1.0), b * k)
        return self._outputs(decay, moved, test)

    def loss(self, outputs: Tensor) -> Tensor:
        """L = (c/2m) sum ||f - y||^2 of training outputs ``[T, m, C]``, ``[T]``."""
        return 0.5 * self.scale / self.m * ((outputs - self.targets) ** 2).sum(dim=(-2, -1))

    def max_stable_lr(self) -> float:
        """2m / (c lambda_max): gradient descent on the linearized model converges below it."""
        return 2 * self.m / (self.scale * float(self.eigenvalues[-1]))


def _flat_kernel(full: Tensor) -> Tensor:
    """``[m1, m2, C, C]`` -> ``[m1 C, m2 C]``, row ``i*C + c``, column ``j*C + d``."""
    m1, m2, C, _ = full.shape
    return full.permute(0, 2, 1, 3).reshape(m1 * C, m2 * C)


def linearize(obj: Objective, *, theta: Tensor | None = None, X_test=None, seed: int = 0) -> Linearized:
    """The linearized model at ``theta`` (default ``obj.theta0``) on all of the objective's data.

    Gathers the inputs, reads the targets and c off the loss (refusing a loss that is not
    (c/2m) sum ||f - y||^2), forms the NTK in float64 and diagonalises it. ``X_test`` (inputs
    as the data holds them) adds the cross kernel for predictions away from the data.
    The objective must be in eval mode (``ntk.kernel``'s rule); ``seed`` draws the loss check's
    random point.
    """
    obj.require_whole_data("linearized.linearize")
    if obj.dtype != torch.float64:
        obj = obj.to(dtype=torch.float64)
    theta = obj.point(theta)
    generator = torch.Generator().manual_seed(seed)
    inputs, f0, targets, scales = [], [], [], []
    for X, y, _ in obj.batches():
        f, target, c = _square_loss(obj, theta, X, y, generator)
        inputs.append(X)
        f0.append(f)
        targets.append(target)
        scales.append(c)
    if max(scales) - min(scales) > 1e-6 * max(scales):
        raise ValueError(f"the loss's scale c differs between batches ({min(scales):.6g} to {max(scales):.6g})")
    X = _cat(inputs)
    kernel = _flat_kernel(ntk.kernel(obj, X, theta=theta))
    kernel = 0.5 * (kernel + kernel.T)
    eigenvalues, eigenvectors = torch.linalg.eigh(kernel)
    result = Linearized(theta, kernel, eigenvalues.clamp_min(0), eigenvectors, torch.cat(f0), torch.cat(targets),
                        float(np.mean(scales)), inputs=X)
    if X_test is not None:
        result.test_inputs, m_test = examples(X_test, obj.device, obj.dtype, "X_test")
        result.test_kernel = _flat_kernel(ntk.kernel(obj, result.test_inputs, X, theta=theta))
        with obj.configured(), torch.no_grad():
            result.f0_test = obj.forward(theta, result.test_inputs).reshape(m_test, -1)
    return result


@dataclass
class KernelRegime:
    """Real training against its linearization, at ``steps [T]`` (``times [T]`` = steps * lr).

    ``loss`` and ``linear_loss`` ``[T]``; ``gap [T]`` = ||f_real - f_lin|| / ||f_0 - y|| on the
    training inputs; ``test_gap [T]`` the RMS difference at the test inputs (None without);
    ``movement [T]`` = ||theta - theta_0|| / ||theta_0||; ``kernel_change`` =
    ||Theta_end - Theta_0||_F / ||Theta_0||_F; ``eigenvalues [mC]`` of Theta_0, descending;
    ``lambda_max``; ``max_stable_lr``. NaN after the real run diverged.
    """

    method: str
    lr: float
    steps: np.ndarray
    times: np.ndarray
    loss: np.ndarray
    linear_loss: np.ndarray
    gap: np.ndarray
    test_gap: np.ndarray | None
    movement: np.ndarray
    kernel_change: float
    eigenvalues: np.ndarray
    seconds: float
    settings: dict = field(default_factory=dict)

    @property
    def lambda_max(self) -> float:
        return float(self.eigenvalues[0])

    @property
    def max_stable_lr(self) -> float:
        """2m / (c lambda_max), the linearized model's stability limit."""
        return 2 * self.settings["m"] / (self.settings["scale"] * self.lambda_max)

    @property
    def max_gap(self) -> float:
        """sup over the recorded steps of ``gap``."""
        return float(np.nanmax(self.gap))

    def to_dict(self) -> dict:
        return jsonable({**vars(self), "max_gap": self.max_gap, "lambda_max": self.lambda_max,
                         "max_stable_lr": self.max_stable_lr})


def compare(obj: Objective, steps: int, *, lr: float | None = None, stable_fraction: float = 0.5, every: int = 1,
            method: str = "gd", X_test=None, theta: Tensor | None = None, rtol: float | None = None,
            atol: float | None = None, progress: bool = False) -> KernelRegime:
    """Train the real network from ``theta`` (default ``obj.theta0``) and its linearization side by side.

    ``method="gd"``: ``steps`` full-batch GD steps at ``lr``, against ``Linearized.gd``;
    ``"flow"``: gradient flow (``dynamics.flow.gradient_flow``, dopri5 at ``rtol``/``atol``) to
    t = steps * lr, against ``Linearized.flow``. ``lr=None`` takes ``stable_fraction`` of the
    linearized model's stability limit 2m / (c lambda_max), so that networks whose kernels differ
    in scale train for the same time in the kernel's units. Records at every ``every``-th step
    and the last; the kernel is formed again at the end for ``kernel_change``. All in float64.
    """
    obj.require_whole_data("linearized.compare")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if lr is not None and not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if lr is None and not 0 < stable_fraction:
        raise ValueError(f"stable_fraction must be positive, got {stable_fraction}")
    if steps < 1 or every < 1:
        raise ValueError(f"steps and every must be at least 1, got steps={steps}, every={every}")
    start = time.perf_counter()
    obj64 = obj if obj.dtype == torch.float64 else obj.to(dtype=torch.float64)
    lin = linearize(obj64, theta=theta, X_test=X_test)
    lr = stable_fraction * lin.max_stable_lr() if lr is None else lr
    X, X_t = lin.inputs, lin.test_inputs
    ks = np.array(sorted(set(range(0, steps, every)) | {steps}))
    T = len(ks)
    linear = lin.gd(lr, ks) if method == "gd" else lin.flow(ks * lr)
    linear_test = None if X_t is None else (lin.gd(lr, ks, test=True) if method == "gd"
                                            else lin.flow(ks * lr, test=True))
    loss, gap, movement = np.full(T, np.nan), np.full(T, np.nan), np.full(T, np.nan)
    test_gap = None if X_t is None else np.full(T, np.nan)
    r0 = float((lin.f0 - lin.targets).norm())
    norm0 = float(lin.theta0.norm())
    last = [lin.theta0]

    def record(row: int, state: Tensor) -> bool:
        with obj64.configured(), torch.no_grad():
            f = obj64.forward(state, X).reshape(lin.f0.shape)
            if not torch.isfinite(f).all():
                return False
            loss[row] = float(lin.loss(f[None])[0])
            gap[row] = float((f - linear[row]).norm()) / max(r0, 1e-300)
            movement[row] = float((state - lin.theta0).norm()) / max(norm0, 1e-300)
            if X_t is not None:
                f_t = obj64.forward(state, X_t).reshape(lin.f0_test.shape)
                test_gap[row] = float((f_t - linear_test[row]).pow(2).mean().sqrt())
        last[0] = state
        return True

    if method == "gd":
        from dynamics.descent import gradient_descent

        state = lin.theta0
        record(0, state)
        for row in range(1, T):
            run = gradient_descent(obj64, lr, int(ks[row] - ks[row - 1]), theta=state, progress=progress)
            if run.diverged or not record(row, run.theta):
                break
            state = run.theta
    else:
        from dynamics.flow import gradient_flow

        rows = iter(range(T))
        alive = [True]

        def callback(t: float, state: Tensor) -> None:
            row = next(rows)
            if alive[0]:
                alive[0] = record(row, state.clone())

        gradient_flow(obj64, ks * lr, theta=lin.theta0, rtol=rtol, atol=atol, callback=callback, progress=progress)
    end_kernel = _flat_kernel(ntk.kernel(obj64, X, theta=last[0]))
    kernel_change = float((end_kernel - lin.kernel).norm() / lin.kernel.norm())
    return KernelRegime(method=method, lr=lr, steps=ks, times=ks * lr, loss=loss,
                        linear_loss=lin.loss(linear).cpu().numpy(), gap=gap, test_gap=test_gap, movement=movement,
                        kernel_change=kernel_change, eigenvalues=lin.eigenvalues.cpu().numpy()[::-1].copy(),
                        seconds=time.perf_counter() - start,
                        settings={"steps": steps, "every": every, "m": lin.m, "outputs": lin.f0.shape[1],
                                  "scale": lin.scale, "parameters": obj.space.n,
                                  "stable_fraction": lr / lin.max_stable_lr()})


@dataclass
class WidthSweep:
    """``compare`` over ``widths [W]`` and ``seeds [S]``: ``max_gap [W, S]`` (sup over time of the
    relative output gap), ``kernel_change [W, S]``, ``lr [W, S]``; the power laws fitted to the
    seed means, gap ~ ``prefactor`` * width^-``rate`` and kernel change ~ width^-``kernel_rate``;
    ``runs[w][s]`` the ``KernelRegime`` of each network."""

    widths: np.ndarray
    seeds: list[int]
    max_gap: np.ndarray
    kernel_change: np.ndarray
    lr: np.ndarray
    rate: float
    prefactor: float
    kernel_rate: float
    runs: list[list[KernelRegime]]
    seconds: float

    def table(self) -> str:
        """One line per width: parameters, lr, max gap and kernel change (seed means), and the final
        loss of the first seed's network and of its linearization."""
        lines = [f"{'width':>6} {'params':>8} {'lr':>8} {'max gap':>9} {'kernel moved':>12} {'loss':>9} {'linear':>9}"]
        for i, width in enumerate(self.widths):
            run = self.runs[i][0]
            lines.append(f"{width:>6} {run.settings['parameters']:>8} {self.lr[i].mean():>8.4g} "
                         f"{self.max_gap[i].mean():>9.4g} {self.kernel_change[i].mean():>12.4g} {run.loss[-1]:>9.4g} "
                         f"{run.linear_loss[-1]:>9.4g}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return jsonable({**vars(self), "runs": [[run.to_dict() for run in row] for row in self.runs]})


def sweep(build: Callable[[int, int], Objective], widths, *, seeds=(0,), steps: int = 200, every: int = 10,
          stable_fraction: float = 0.5, method: str = "gd", progress: bool = True) -> WidthSweep:
    """``compare`` for the objective ``build(width, seed)`` of each width and seed, and the rates.

    Each network trains at ``stable_fraction`` of its own stability limit for ``steps`` steps,
    the same time in its kernel's units. The rates are ``power_law`` fits to the mean over seeds.
    """
    widths = np.asarray(widths, dtype=int)
    if len(widths) < 2 or np.any(widths < 1) or len(set(widths.tolist())) != len(widths):
        raise ValueError(f"widths must be two or more distinct positive integers, got {widths.tolist()}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    start = time.perf_counter()
    runs = []
    with tqdm(total=len(widths) * len(seeds), desc="widths", unit="network", disable=not progress) as bar:
        for width in widths:
            row = []
            for seed in seeds:
                row.append(compare(build(int(width), seed), steps, stable_fraction=stable_fraction, every=every,
                                   method=method))
                bar.update()
            runs.append(row)
    gap = np.array([[run.max_gap for run in row] for row in runs])
    change = np.array([[run.kernel_change for run in row] for row in runs])
    rate, prefactor = power_law(widths, gap.mean(1))
    kernel_rate, _ = power_law(widths, change.mean(1))
    return WidthSweep(widths, seeds, gap, change, np.array([[run.lr for run in row] for row in runs]), rate,
                      prefactor, kernel_rate, runs, time.perf_counter() - start)


def power_law(x, y) -> tuple[float, float]:
    """(rate p, prefactor A) of the least-squares fit log y = log A - p log x, for positive ``x``, ``y``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or len(x) < 2 or not (np.all(x > 0) and np.all(y > 0)):
        raise ValueError("power_law needs two or more positive (x, y) pairs of equal length")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(-slope), float(np.exp(intercept))
