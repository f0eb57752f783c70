"""The Gaussian-process limit of wide random fully connected networks (NNGP: Neal 1996, Lee et al. 2018).

The network has ``depth`` = L hidden layers of width w, activation phi and one output, on inputs x in R^d:

    h^1 = W^1 x + b^1,                 W^1_ij ~ N(0, sigma_w2 / d)
    h^{l+1} = W^{l+1} phi(h^l) + b^{l+1},  W^{l+1}_ij ~ N(0, sigma_w2 / w),  l = 1..L,   f = h^{L+1}

with every bias ~ N(0, sigma_b2); the readout W^{L+1} takes the hidden layers' sigma_w2 and
sigma_b2 (Lee et al. 2018). As w -> infinity, f is a centred Gaussian process whose covariance
is the recursion

    K^1(x, x') = sigma_b2 + sigma_w2 x.x' / d
    K^{l+1}(x, x') = sigma_b2 + sigma_w2 E[phi(u) phi(u')],  (u, u') ~ N(0, [[K^l(x, x), K^l(x, x')],
                                                                           [K^l(x, x'), K^l(x', x')]])

ending at K^{L+1}. E[phi(u) phi(u')] is in closed form for ReLU (the arc-cosine kernel of
degree 1, Cho and Saul 2009) and erf (Williams 1997). ``empirical`` draws finite networks
and measures the output covariance, with its Monte Carlo standard error.
"""

from __future__ import annotations

import math
import operator
import time
from dataclasses import dataclass

import torch

from landscape.core.results import Result

Tensor = torch.Tensor

# Draws are made this many weights at a time (a fixed count, not a share of free memory,
# so that a seed gives the same networks on every machine).
_CHUNK_NUMBERS = 2**22


def _tensors(*values) -> list[Tensor]:
    return list(torch.broadcast_tensors(*(v if isinstance(v, Tensor) else torch.tensor(v, dtype=torch.float64)
                                          for v in values)))


def relu_kernel(K11, K12, K22) -> Tensor:
    """E[relu(u) relu(u')] for (u, u') ~ N(0, [[K11, K12], [K12, K22]]) (broadcast tensors or floats).

    = sqrt(K11 K22) / (2 pi) * (sin t + (pi - t) cos t),  t = arccos(K12 / sqrt(K11 K22)):
    the arc-cosine kernel of degree 1 (Cho and Saul 2009); K11 / 2 on the diagonal.
    """
    K11, K12, K22 = _tensors(K11, K12, K22)
    norm = (K11 * K22).sqrt()
    cos = torch.where(norm > 0, K12 / norm, torch.ones_like(norm)).clamp(-1, 1)
    t = torch.arccos(cos)
    return norm / (2 * math.pi) * (torch.sin(t) + (math.pi - t) * cos)


def erf_kernel(K11, K12, K22) -> Tensor:
    """E[erf(u) erf(u')] = (2 / pi) arcsin(2 K12 / sqrt((1 + 2 K11) (1 + 2 K22))) (Williams 1997)."""
    K11, K12, K22 = _tensors(K11, K12, K22)
    return 2 / math.pi * torch.arcsin(2 * K12 / ((1 + 2 * K11) * (1 + 2 * K22)).sqrt())


ACTIVATIONS = {"relu": (torch.relu, relu_kernel), "erf": (torch.erf, erf_kernel)}


def _check(X1: Tensor, X2: Tensor | None, depth: int, activation: str, sigma_w2: float,
           sigma_b2: float) -> tuple[Tensor, Tensor]:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth (the number of hidden layers) must be a positive integer, got {depth!r}")
    if not sigma_w2 > 0 or not sigma_b2 >= 0:
        raise ValueError(f"need sigma_w2 > 0 and sigma_b2 >= 0, got {sigma_w2!r} and {sigma_b2!r}")
    X1 = torch.as_tensor(X1)
    X2 = X1 if X2 is None else torch.as_tensor(X2)
    X1, X2 = (X if X.is_floating_point() else X.double() for X in (X1, X2))
    if X1.ndim != 2 or X2.ndim != 2 or X1.shape[1] != X2.shape[1] or 0 in X1.shape or 0 in X2.shape:
        raise ValueError(f"inputs must be [m, d] with the same d >= 1, got shapes {tuple(X1.shape)} and "
                         f"{tuple(X2.shape)}")
    return X1, X2


def kernel(X1: Tensor, X2: Tensor | None = None, *, depth: int = 1, activation: str = "relu",
           sigma_w2: float = 1.0, sigma_b2: float = 0.0) -> Tensor:
    """The NNGP kernel K^{L+1}(x_i, x'_j) ``[m1, m2]`` of a network with ``depth`` hidden layers.

    ``X1 [m1, d]``, ``X2 [m2, d]`` (default ``X1``); the recursion of the module docstring, in
    the inputs' floating dtype (float64 for integers). ``activation``: ``"relu"`` or ``"erf"``.
    """
    X1, X2 = _check(X1, X2, depth, activation, sigma_w2, sigma_b2)
    expectation = ACTIVATIONS[activation][1]
    d = X1.shape[1]
    K = sigma_b2 + sigma_w2 * (X1 @ X2.T) / d
    k1 = sigma_b2 + sigma_w2 * X1.square().sum(1) / d
    k2 = sigma_b2 + sigma_w2 * X2.square().sum(1) / d
    for _ in range(depth):
        K = sigma_b2 + sigma_w2 * expectation(k1[:, None], K, k2[None, :])
        k1, k2 = (sigma_b2 + sigma_w2 * expectation(k, k, k) for k in (k1, k2))
    return K


@dataclass
class EmpiricalKernel(Result):
    """The output covariance of ``draws`` random networks on inputs ``[m, d]``.

    ``covariance [m, m]`` = (1/draws) sum_s f_s f_s^T (the mean is zero by symmetry, so it is
    not subtracted); ``stderr [m, m]`` = the sample standard deviation of the per-draw products
    f_s(x_i) f_s(x_j) over sqrt(draws), the Monte Carlo error of each entry.
    """

    covariance: Tensor
    stderr: Tensor
    draws: int
    width: int
    depth: int
    activation: str
    sigma_w2: float
    sigma_b2: float
    seed: int
    seconds: float


def empirical(X: Tensor, *, width: int, depth: int = 1, activation: str = "relu", sigma_w2: float = 1.0,
              sigma_b2: float = 0.0, draws: int = 1000, seed: int = 0) -> EmpiricalKernel:
    """The output covariance of ``draws`` networks of the module docstring drawn at random, on ``X [m, d]``.

    Every weight comes from one ``torch.Generator`` seeded with ``seed``, in X's floating dtype
    (float64 for integers) on X's device. For Gaussian outputs the Monte Carlo error of entry
    (i, j) is sqrt((K_ii K_jj + K_ij^2) / draws); ``stderr`` is its sample estimate. The finite width adds a bias:
    with one hidden layer there is none (the pre-activations are exactly Gaussian and the
    readout only averages them, so the covariance is K^2 at any width; the width changes the
    higher moments); with more layers a hidden layer's covariance is itself random, with
    O(1/sqrt(width)) fluctuations, which bias the next layer's expectation by O(1/width).
    Choose width >> sqrt(draws) to keep that bias well under the Monte Carlo error.
    """
    X, _ = _check(X, None, depth, activation, sigma_w2, sigma_b2)
    for name, value, least in (("width", width, 1), ("draws", draws, 2)):
        try:
            ok = operator.index(value) >= least and not isinstance(value, bool)
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    start = time.perf_counter()
    dtype = X.dtype
    m, d = X.shape
    phi = ACTIVATIONS[activation][0]
    generator = torch.Generator(device=X.device).manual_seed(seed)

    def normal(variance: float, *shape: int) -> Tensor:
        return math.sqrt(variance) * torch.randn(shape, generator=generator, dtype=dtype, device=X.device)

    per_draw = width * (d + (depth - 1) * width + 1 + 2 * m)  # weights and the activations [m, width]
    size = max(1, min(draws, _CHUNK_NUMBERS // per_draw))
    total = torch.zeros(m, m, dtype=dtype, device=X.device)
    total_sq = torch.zeros_like(total)
    for first in range(0, draws, size):
        k = min(size, draws - first)
        h = X @ normal(sigma_w2 / d, k, d, width) + normal(sigma_b2, k, 1, width)  # [k, m, width]
        for _ in range(depth - 1):
            h = phi(h) @ normal(sigma_w2 / width, k, width, width) + normal(sigma_b2, k, 1, width)
        f = (phi(h) @ normal(sigma_w2 / width, k, width, 1))[..., 0] + normal(sigma_b2, k, 1)  # [k, m]
        products = f[:, :, None] * f[:, None, :]
        total += products.sum(0)
        total_sq += products.square().sum(0)
    covariance = total / draws
    variance = (total_sq / draws - covariance.square()).clamp_min(0) * draws / (draws - 1)
    return EmpiricalKernel(covariance=covariance, stderr=(variance / draws).sqrt(), draws=draws, width=width,
                           depth=depth, activation=activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2, seed=seed,
                           seconds=time.perf_counter() - start)
