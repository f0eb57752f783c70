"""Sharpness measures against closed forms on quadratics and dense Hessians; per-layer blocks."""

import numpy as np
import pytest
import torch

import landscape
from landscape import Objective
from landscape.curvature.sharpness import adaptive_sharpness, epsilon_sharpness
from landscape.problems import Quadratic
from tests.reference import dense_hessian, make


def diagonal_quadratic(a, seed=0) -> Objective:
    """L = 1/2 (theta - c)^T diag(a) (theta - c), at its minimum theta = c."""
    a = torch.as_tensor(a, dtype=torch.float64)
    c = torch.randn(len(a), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    model = Quadratic(torch.diag(a), c, c)
    return Objective(model, lambda out, y: out.mean(), (torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1)))


def test_epsilon_sharpness_reaches_the_corner_of_the_box():
    a = np.linspace(0.5, 8.0, 20)
    obj = diagonal_quadratic(a)
    r = 1e-2 * (obj.theta0.abs().numpy() + 1)
    assert epsilon_sharpness(obj, epsilon=1e-2) == pytest.approx(100 * 0.5 * np.sum(a * r**2), rel=1e-10)


def test_adaptive_sharpness_is_the_top_of_t_h_t():
    a = np.r_[1.0, 2.0, 3.0, 40.0, np.linspace(0.1, 1, 16)]
    obj = diagonal_quadratic(a, seed=1)
    T = obj.theta0.abs().numpy() + 0.01
    expected = 0.5 * 0.05**2 * np.max(a * T**2)
    assert adaptive_sharpness(obj, rho=0.05, eta=0.01, ascent_steps=40) == pytest.approx(expected, rel=1e-6)


def test_sharpness_on_a_network_against_the_dense_hessian():
    model, loss_fn, X, y = make("layernorm")
    H = dense_hessian(model, loss_fn, X, y).numpy()
    eig = np.linalg.eigvalsh((H + H.T) / 2)
    obj = Objective(model, loss_fn, (X, y))
    result = landscape.sharpness(obj, tol=1e-10, probes=32, density_steps=40)
    assert result.lambda_max == pytest.approx(eig[-1], rel=1e-8)
    assert result.lambda_min == pytest.approx(eig[0], rel=1e-8)
    assert result.ratio == pytest.approx(eig[0] / eig[-1], rel=1e-7)
    assert abs(result.trace - eig.sum()) <= 3 * result.trace_stderr
    negative = result.negative_mass  # the share of the dense spectrum below the same threshold, within SLQ's noise
    assert negative.value == pytest.approx(np.mean(eig < negative.threshold), abs=max(0.05, 3 * negative.stderr))
    assert negative.threshold == -max(1e-3 * negative.scale, negative.broadening)
    assert negative.scale == pytest.approx(np.abs(eig).max(), rel=1e-6)  # the extreme Gauss nodes are eigenvalues
    assert result.epsilon_sharpness > 0 and result.adaptive_sharpness > 0
    assert result.cost["eigenvalues"]["n_matvecs"] > 0 and result.cost["trace"]["n_matvecs"] == 99
    assert result.cost["density"]["n_matvecs"] == 32 * 40
    assert result.cost["epsilon_sharpness"]["n_gradients"] == 20
    assert result.to_dict()["settings"]["eigenvalues_converged"]


def test_per_layer_spectra_are_the_diagonal_blocks():
    model, loss_fn, X, y = make("cnn-bn")
    H = dense_hessian(model, loss_fn, X, y).numpy()
    obj = Objective(model, loss_fn, (X, y))
    layers = landscape.per_layer(obj, k=2, tol=1e-10)
    assert list(layers) == ["0", "1", "4"]  # conv, batchnorm, linear
    for group, result in layers.items():
        cut = np.r_[tuple(np.arange(s.start, s.stop) for name, s in obj.space.slices().items()
                          if name.startswith(group + "."))]
        block = H[np.ix_(cut, cut)]
        assert np.allclose(result.eigenvalues, np.linalg.eigvalsh((block + block.T) / 2)[::-1][:2], rtol=1e-8)


def test_per_layer_with_named_groups():
    model, loss_fn, X, y = make("mlp")
    obj = Objective(model, loss_fn, (X, y))
    layers = landscape.per_layer(obj, k=1, groups={"weights": ["*.weight"], "biases": ["*.bias"]}, tol=1e-10)
    assert set(layers) == {"weights", "biases"}
    H = dense_hessian(model, loss_fn, X, y, names=["0.bias", "2.bias"]).numpy()
    assert layers["biases"].eigenvalues[0] == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-8)


def test_one_parameter_models_and_blocks():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.PReLU()).double()
    X, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    obj = Objective(model, torch.nn.functional.mse_loss, (X, y))
    layers = landscape.per_layer(obj, k=1, which="both", tol=1e-10)
    H = dense_hessian(model, torch.nn.functional.mse_loss, X, y, names=["1.weight"]).item()
    assert layers["1"].eigenvalues == pytest.approx([H], rel=1e-8)
    scalar = diagonal_quadratic([3.0])
    result = landscape.sharpness(scalar, probes=2, density_steps=1, trace_matvecs=3)
    assert result.lambda_max == result.lambda_min == pytest.approx(3.0) and result.trace == pytest.approx(3.0)


def test_negative_mass_has_one_definition_an_error_and_a_verdict():
    from landscape.curvature.operators import MatrixOperator
    from tests.landscape.curvature.test_spectrum import symmetric

    B = symmetric(np.r_[-np.ones(20), np.linspace(0.5, 3, 80)])  # 20% at -1, far below any threshold
    found = landscape.density(MatrixOperator(B), probes=32, steps=40).negative_mass()
    assert found.value == pytest.approx(0.2, abs=3 * found.stderr) and 0 < found.stderr < 0.05
    assert found.verdict == "resolved" and found.threshold == -max(1e-3 * 3, found.broadening)
    null = symmetric(np.r_[np.zeros(95), 1.0, 2.0, 3.0, 4.0, 50.0])  # rounding around a null space is no curvature
    assert landscape.density(MatrixOperator(null), probes=4).negative_mass().verdict == "none below the threshold"
    grazing = symmetric(np.r_[-0.002 * np.ones(10), np.linspace(0.5, 3, 90)])  # finer than SLQ's broadening (0.03)
    rho = landscape.density(MatrixOperator(grazing), probes=16, steps=40)
    assert rho.negative_mass().value == 0.0 and rho.mass_below(0.0) > 0.05  # there, below zero; not resolved as such
    assert landscape.sharpness(Objective(*quadratic_problem(grazing)), probes=16).negative_mass.value == 0.0


def quadratic_problem(A):
    """(model, loss_fn, data) whose Hessian is A, for sharpness."""
    n = A.shape[0]
    A = torch.as_tensor(A, dtype=torch.float64)
    data = (torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    return Quadratic(A, torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)), \
        (lambda out, y: out.mean()), data


def test_negative_mass_ignores_rounding_around_a_null_space():
    from landscape.curvature.operators import MatrixOperator
    from tests.landscape.curvature.test_spectrum import symmetric

    A = symmetric(np.r_[np.zeros(95), 1.0, 2.0, 3.0, 4.0, 50.0])
    assert landscape.density(MatrixOperator(A), probes=4).mass_below() == 0.0
    B = symmetric(np.r_[-np.ones(20), np.linspace(0.5, 3, 80)])
    assert landscape.density(MatrixOperator(B), probes=32, steps=40).mass_below() == pytest.approx(0.2, abs=0.08)
