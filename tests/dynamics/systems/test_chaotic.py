"""The classic systems against hand-written formulas, finite differences and their invariants."""

import math

import pytest
import torch

from dynamics.systems import SYSTEMS, Henon, Logistic, Lorenz, Rossler


def by_hand(system, x: torch.Tensor) -> torch.Tensor:
    """The textbook equations, written out component by component."""
    if isinstance(system, Logistic):
        return system.r * x * (1 - x)
    X, Y = x[..., 0], x[..., 1]
    if isinstance(system, Henon):
        return torch.stack([1 - system.a * X**2 + Y, system.b * X], -1)
    Z = x[..., 2]
    if isinstance(system, Lorenz):
        s, r, b = system.sigma, system.rho, system.beta
        return torch.stack([s * (Y - X), X * (r - Z) - Y, X * Y - b * Z], -1)
    return torch.stack([-Y - Z, X + system.a * Y, system.b + Z * (X - system.c)], -1)


def states(system, shape=(4, 5), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return system.x0 + torch.randn(*shape, system.dim, generator=g, dtype=torch.float64)


SYSTEM_CASES = [Logistic(), Logistic(3.7), Henon(), Henon(1.2, 0.2), Lorenz(), Lorenz(16.0, 45.92, 4.0), Rossler(),
                Rossler(0.1, 0.1, 14.0)]


@pytest.mark.parametrize("system", SYSTEM_CASES, ids=repr)
def test_image_matches_the_equations_on_batched_states(system):
    x = states(system)
    assert torch.allclose(system(x), by_hand(system, x), rtol=1e-14, atol=1e-12)
    assert system(x).shape == x.shape and system(x).dtype == torch.float64
    assert system(x[1, 2]).allclose(system(x)[1, 2], rtol=0, atol=1e-13)  # a single state [d] as well
    assert system(x.float()).dtype == torch.float32


@pytest.mark.parametrize("system", SYSTEM_CASES, ids=repr)
def test_jacobian_matches_central_differences(system):
    x = states(system, shape=(3,), seed=1)
    h = 1e-6
    eye = torch.eye(system.dim, dtype=torch.float64)
    for point in x:
        fd = torch.stack([(by_hand(system, point + h * e) - by_hand(system, point - h * e)) / (2 * h) for e in eye], -1)
        assert torch.allclose(system.jacobian(point), fd, rtol=1e-7, atol=1e-7)
    assert system.jacobian(x).shape == (3, system.dim, system.dim)


@pytest.mark.parametrize("system", SYSTEM_CASES, ids=repr)
def test_jvp_and_linearize_push_rows_through_the_jacobian(system):
    x = states(system, shape=(4,), seed=2)
    V = torch.randn(4, 3, system.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    J = torch.func.vmap(torch.func.jacrev(lambda p: by_hand(system, p)))(x)  # [4, d, d], reverse mode
    expected = torch.einsum("bij,bkj->bki", J, V)
    assert torch.allclose(system.jvp(x, V), expected, rtol=1e-13, atol=1e-12)
    image, product = system.linearize(x[0])
    assert torch.allclose(image, by_hand(system, x[0]), rtol=1e-14, atol=1e-12)
    assert torch.allclose(product(V[0]), expected[0], rtol=1e-13, atol=1e-12)


def test_invariants_of_the_jacobians():
    x = states(Henon(), shape=(50,))
    assert torch.allclose(torch.linalg.det(Henon().jacobian(x)), torch.full((50,), -0.3, dtype=torch.float64))
    x = states(Lorenz(), shape=(50,))
    assert torch.allclose(Lorenz().jacobian(x).diagonal(dim1=-2, dim2=-1).sum(-1),
                          torch.full((50,), -(10 + 1 + 8 / 3), dtype=torch.float64))
    x = states(Rossler(), shape=(50,))
    trace = Rossler().jacobian(x).diagonal(dim1=-2, dim2=-1).sum(-1)
    assert torch.allclose(trace, 0.2 + x[:, 0] - 5.7)


def test_reference_exponents():
    assert Logistic().reference == (math.log(2),)
    assert Logistic(2.5).reference == pytest.approx((math.log(0.5),))
    assert Logistic(0.5).reference == pytest.approx((math.log(0.5),))
    assert Logistic(3.7).reference is None
    assert Henon().reference == (0.41922, -1.62319) and Henon(1.2).reference is None
    assert Lorenz().reference == (0.9056, 0.0, -14.5723) and Lorenz(rho=20.0).reference is None
    assert Rossler().reference == (0.0714, 0.0, -5.3943)
    assert sum(Henon().reference) == pytest.approx(math.log(0.3), abs=1e-5)
    assert sum(Lorenz().reference) == pytest.approx(-(10 + 1 + 8 / 3), abs=1e-4)


def test_registry_kinds_and_starts():
    assert {name: cls().kind for name, cls in SYSTEMS.items()} == {
        "logistic": "map", "henon": "map", "lorenz": "flow", "rossler": "flow"}
    for cls in SYSTEMS.values():
        system = cls()
        assert system.x0.shape == (system.dim,) and system.x0.dtype == torch.float64
    assert hash(Lorenz()) == hash(Lorenz()) and Lorenz() == Lorenz() and Lorenz() != Lorenz(rho=20.0)
    assert repr(Henon()) == "Henon(a=1.4, b=0.3)"
