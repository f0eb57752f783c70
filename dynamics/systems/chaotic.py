"""Classic chaotic systems with known Lyapunov exponents: the references the QR method is tested on.

Maps ``x_{t+1} = F(x_t)`` (``kind = "map"``) and flows ``x' = f(x)`` (``kind = "flow"``):

- ``Logistic(r)``: x -> r x (1 - x), d = 1;
- ``Henon(a, b)``: (x, y) -> (1 - a x^2 + y, b x), d = 2;
- ``Lorenz(sigma, rho, beta)``: (sigma (y - x), x (rho - z) - y, x y - beta z), d = 3;
- ``Rossler(a, b, c)``: (-y - z, x + a y, b + z (x - c)), d = 3.

Each system is a frozen dataclass of its parameters. Called on states ``x [..., d]``
(any leading batch shape, any floating dtype; the default start ``x0`` is float64)
it returns the map's image or the vector field, ``[..., d]``. It also gives

- ``jacobian(x) [..., d, d]``, the analytic Jacobian J(x) = dF/dx (or df/dx);
- ``jvp(x, V) [..., k, d]``: J(x) applied to the rows of ``V [..., k, d]``, i.e. ``V @ J(x)^T``;
- ``linearize(x) -> (F(x), product)`` with ``product(V) = V @ J(x)^T``: what
  :mod:`dynamics.lyapunov` calls once per map step or RK4 stage;
- ``x0 [d]``, a float64 start in the basin of the attractor, and ``reference``: the
  exponents a computed spectrum should reproduce (exact where known in closed form,
  else the published values for the standard parameters; ``None`` for other parameters).

All four are quadratic, F(x) = c + A x + 1/2 M(x) x with M(x) = sum_l x_l C_l linear in
x, so J(x) = A + M(x): J(x)^T, A + M(x)/2 and the image (or field) c + (A + M(x)/2) x are
three fused matrix-vector products with constant tensors. The Jacobians are analytic
rather than ``torch.func.jvp`` because on states this small the cost is the number of
torch calls, and long runs take ~10^5 steps: measured on 2 shared CPU cores, an RK4 step
of Lorenz with 3 tangents takes ~70 us this way and ~4.3 ms with vmapped
``torch.func.jvp`` (60x), a Henon step ~17 us against ~830 us (50x). ``torch.func`` stays
the default for maps and flows given as plain functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor


def _start(*values: float) -> Tensor:
    return torch.tensor(values, dtype=torch.float64)


@dataclass(frozen=True)
class _Quadratic:
    """F(x) = c + A x + 1/2 M(x) x with M(x) = sum_l x_l C_l, so that J(x) = A + M(x).

    Subclasses set ``kind`` and ``dim`` and give ``_coefficients() -> (c [d], A [d][d], C [d][d][d])``,
    ``C[l][i][j]`` the coefficient of x_l in M(x)_ij.
    """

    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def _coefficients(self) -> tuple[list, list, list]:
        raise NotImplementedError

    def _tensors(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """In x's dtype and device, built once per dtype and device: c [d], A [d*d] and A^T [d*d]
        flattened, and C [d*d, d], C' [d*d, d] with C x = M(x) and C' x = M(x)^T flattened."""
        key = (x.dtype, x.device)
        if key not in self._cache:
            c, A, C = (torch.tensor(t, dtype=x.dtype, device=x.device) for t in self._coefficients())
            self._cache[key] = (c, A.reshape(-1), A.mT.reshape(-1), C.permute(1, 2, 0).reshape(-1, self.dim),
                                C.permute(2, 1, 0).reshape(-1, self.dim))
        return self._cache[key]

    def __call__(self, x: Tensor) -> Tensor:
        return self.linearize(x)[0]

    def jacobian(self, x: Tensor) -> Tensor:
        _, A, _, C, _ = self._tensors(x)
        return (A + x @ C.mT).view(x.shape[:-1] + (self.dim, self.dim))

    def jvp(self, x: Tensor, V: Tensor) -> Tensor:
        return V @ self.jacobian(x).mT

    def linearize(self, x: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        c, A, A_t, C, C_t = self._tensors(x)
        d = self.dim
        if x.ndim == 1:  # the Lyapunov loop's case: three fused products, no broadcasting
            J_t = torch.addmv(A_t, C_t, x).view(d, d)
            half = torch.addmv(A, C, x, alpha=0.5).view(d, d)  # A + M(x) / 2
            value = torch.addmv(c, half, x)
        else:
            shape = x.shape[:-1] + (d, d)
            J_t = (A_t + x @ C_t.mT).view(shape)
            value = ((A + 0.5 * (x @ C.mT)).view(shape) @ x.unsqueeze(-1)).squeeze(-1) + c
        return value, lambda V: V @ J_t


@dataclass(frozen=True)
class Logistic(_Quadratic):
    """The logistic map x -> r x (1 - x) on [0, 1], with F'(x) = r (1 - 2x). d = 1.

    Reference exponents: at r = 4 the map is conjugate to the tent map (Ulam and von
    Neumann 1947), lambda = ln 2 exactly; for 1 < r < 3 orbits settle on the fixed point
    1 - 1/r, where F' = 2 - r, so lambda = ln|2 - r|; for 0 < r < 1 on 0, lambda = ln r.
    """

    r: float = 4.0
    kind = "map"
    dim = 1

    @property
    def x0(self) -> Tensor:
        return _start(0.1)

    @property
    def reference(self) -> tuple[float, ...] | None:
        if self.r == 4.0:
            return (math.log(2.0),)
        if 1.0 < self.r < 3.0:
            return (math.log(abs(2.0 - self.r)),)
        if 0.0 < self.r < 1.0:
            return (math.log(self.r),)
        return None

    def _coefficients(self) -> tuple[list, list, list]:
        return [0.0], [[self.r]], [[[-2.0 * self.r]]]  # M(x) = [[-2 r x]]


@dataclass(frozen=True)
class Henon(_Quadratic):
    """The Henon map (x, y) -> (1 - a x^2 + y, b x), J = [[-2 a x, 1], [b, 0]], det J = -b. d = 2.

    Reference exponents at a = 1.4, b = 0.3: 0.41922, -1.62319 (J. C. Sprott, "Lyapunov
    exponent spectrum software", sprott.physics.wisc.edu/chaos/lespec.htm, 2005/2010:
    0.419217, -1.623190, Kaplan-Yorke dimension 1.258267; the same in Sprott, *Chaos
    and Time-Series Analysis*, Oxford 2003). Their sum is ln b = ln 0.3 exactly, since
    |det J| = b at every point.
    """

    a: float = 1.4
    b: float = 0.3
    kind = "map"
    dim = 2

    @property
    def x0(self) -> Tensor:
        return _start(0.0, 0.0)

    @property
    def reference(self) -> tuple[float, ...] | None:
        return (0.41922, -1.62319) if (self.a, self.b) == (1.4, 0.3) else None

    def _coefficients(self) -> tuple[list, list, list]:
        C = [[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]
        C[0][0][0] = -2.0 * self.a  # M(x) = [[-2 a x, 0], [0, 0]]
        return [1.0, 0.0], [[0.0, 1.0], [self.b, 0.0]], C


@dataclass(frozen=True)
class Lorenz(_Quadratic):
    """The Lorenz (1963) flow x' = sigma (y - x), y' = x (rho - z) - y, z' = x y - beta z. d = 3.

    J = [[-sigma, sigma, 0], [rho - z, -1, -x], [y, x, -beta]]; trace J = -(sigma + 1 + beta),
    so the exponents sum to -(sigma + 1 + beta) = -13.6667 at the standard parameters.

    Reference exponents at sigma = 10, rho = 28, beta = 8/3: 0.9056, 0, -14.5723 (J. C.
    Sprott, *Chaos and Time-Series Analysis*, Oxford 2003, appendix A; his "Lyapunov
    exponent spectrum software" page gives 0.90563, 0, -14.57219 and Kaplan-Yorke
    dimension 2.06215).
    """

    sigma: float = 10.0
    rho: float = 28.0
    beta: float = 8.0 / 3.0
    kind = "flow"
    dim = 3

    @property
    def x0(self) -> Tensor:
        return _start(1.0, 1.0, 1.0)

    @property
    def reference(self) -> tuple[float, ...] | None:
        standard = (self.sigma, self.rho, self.beta) == (10.0, 28.0, 8.0 / 3.0)
        return (0.9056, 0.0, -14.5723) if standard else None

    def _coefficients(self) -> tuple[list, list, list]:
        s, r, b = self.sigma, self.rho, self.beta
        A = [[-s, s, 0.0], [r, -1.0, 0.0], [0.0, 0.0, -b]]
        # M(x) = [[0, 0, 0], [-z, 0, -x], [y, x, 0]] = x C_0 + y C_1 + z C_2
        C = [[[0.0] * 3 for _ in range(3)] for _ in range(3)]
        C[0][1][2], C[0][2][1], C[1][2][0], C[2][1][0] = -1.0, 1.0, 1.0, -1.0
        return [0.0, 0.0, 0.0], A, C


@dataclass(frozen=True)
class Rossler(_Quadratic):
    """The Rossler (1976) flow x' = -y - z, y' = x + a y, z' = b + z (x - c). d = 3.

    J = [[0, -1, -1], [1, a, 0], [z, 0, x - c]]; trace J = a + x - c, so the exponents sum
    to a - c + <x>, the time average of x along the orbit.

    Reference exponents at a = 0.2, b = 0.2, c = 5.7: 0.0714, 0, -5.3943 (J. C. Sprott,
    *Chaos and Time-Series Analysis*, Oxford 2003, appendix A). Measured with
    ``flow_spectrum`` (dt = 0.02, 16 orbits of T = 5000 averaged): 0.0713, 0.0001, -5.3933.
    """

    a: float = 0.2
    b: float = 0.2
    c: float = 5.7
    kind = "flow"
    dim = 3

    @property
    def x0(self) -> Tensor:
        return _start(1.0, 1.0, 1.0)

    @property
    def reference(self) -> tuple[float, ...] | None:
        return (0.0714, 0.0, -5.3943) if (self.a, self.b, self.c) == (0.2, 0.2, 5.7) else None

    def _coefficients(self) -> tuple[list, list, list]:
        A = [[0.0, -1.0, -1.0], [1.0, self.a, 0.0], [0.0, 0.0, -self.c]]
        # M(x) = [[0, 0, 0], [0, 0, 0], [z, 0, x]] = x C_0 + z C_2
        C = [[[0.0] * 3 for _ in range(3)] for _ in range(3)]
        C[0][2][2], C[2][2][0] = 1.0, 1.0
        return [0.0, 0.0, self.b], A, C

