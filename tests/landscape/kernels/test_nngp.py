"""NNGP closed forms against numerical integration, and against the covariance of random networks."""

import math

import pytest
import torch
from scipy.integrate import dblquad

from landscape.kernels import nngp

COVARIANCES = [(1.0, 0.3, 2.0), (0.5, -0.4, 0.8), (2.0, 1.9, 2.0), (1.0, 0.0, 1.0), (3.0, -2.9, 3.0)]


def gaussian_expectation(phi, K11, K12, K22, low: float) -> float:
    """E[phi(u) phi(v)], (u, v) ~ N(0, [[K11, K12], [K12, K22]]), by dblquad over [low, 12 sd]^2 in each axis."""
    det = K11 * K22 - K12**2

    def integrand(v, u):
        density = math.exp(-0.5 * (K22 * u * u - 2 * K12 * u * v + K11 * v * v) / det) / (2 * math.pi * math.sqrt(det))
        return phi(u) * phi(v) * density

    s1, s2 = 12 * math.sqrt(K11), 12 * math.sqrt(K22)
    return dblquad(integrand, low * s1, s1, low * s2, s2, epsabs=1e-12, epsrel=1e-10)[0]


@pytest.mark.parametrize("K11, K12, K22", COVARIANCES)
def test_closed_forms_equal_numerical_integration(K11, K12, K22):
    # relu: the integrand vanishes off the positive quadrant, where it is smooth
    relu = gaussian_expectation(lambda t: t, K11, K12, K22, low=0.0)
    assert abs(nngp.relu_kernel(K11, K12, K22).item() - relu) < 1e-8 * math.sqrt(K11 * K22)
    erf = gaussian_expectation(math.erf, K11, K12, K22, low=-1.0)
    assert abs(nngp.erf_kernel(K11, K12, K22).item() - erf) < 1e-8


def test_closed_forms_on_the_diagonal():
    K = torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64)
    assert torch.allclose(nngp.relu_kernel(K, K, K), K / 2, rtol=1e-14)  # E[relu(u)^2] = K / 2
    assert torch.allclose(nngp.relu_kernel(K, -K, K), torch.zeros_like(K), atol=1e-14)  # relu(u) relu(-u) = 0
    assert torch.allclose(nngp.erf_kernel(K, K, K), 2 / math.pi * torch.arcsin(2 * K / (1 + 2 * K)), rtol=1e-14)


def inputs() -> torch.Tensor:
    """m = 5 inputs in R^3 of different norms, one anti-parallel to another."""
    X = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    X[4] = -0.7 * X[0]
    return X


@pytest.mark.parametrize("activation", nngp.ACTIVATIONS)
@pytest.mark.parametrize("depth, width", [(1, 2000), (2, 200)])
def test_random_networks_match_the_closed_form_within_3_standard_errors(activation, depth, width):
    """Depth 1 has no finite-width bias; at depth 2 it is at most ~1.7 / width here (ReLU; erf ~0.15 / width),
    ~0.05 standard errors at width 200."""
    X = inputs()
    settings = dict(depth=depth, activation=activation, sigma_w2=2.0, sigma_b2=0.1)
    result = nngp.empirical(X, width=width, draws=2000, seed=1, **settings)
    K = nngp.kernel(X, **settings)
    assert result.covariance.shape == result.stderr.shape == (5, 5)
    assert ((result.covariance - K).abs() <= 3 * result.stderr).all()
    assert (result.stderr < 0.05 * K.diagonal().max()).all()  # and the test has teeth
    assert result.to_dict()["draws"] == 2000


def test_one_hidden_layer_is_unbiased_at_any_width_and_depth_two_is_not():
    X = inputs()
    narrow = nngp.empirical(X, width=3, draws=20000, seed=2)
    assert ((narrow.covariance - nngp.kernel(X)).abs() <= 3 * narrow.stderr).all()
    K2 = nngp.kernel(X, depth=2)
    deep = {w: nngp.empirical(X, width=w, depth=2, draws=40000, seed=3) for w in (5, 20)}
    bias = {w: result.covariance - K2 for w, result in deep.items()}
    assert (bias[5].abs() > 5 * deep[5].stderr).any()  # resolved by the Monte Carlo error
    assert bias[20].abs().max() < 0.5 * bias[5].abs().max()  # and shrinking with the width


def test_empirical_is_seeded():
    X = inputs()
    a, b = (nngp.empirical(X, width=50, draws=10, seed=7) for _ in range(2))
    assert torch.equal(a.covariance, b.covariance)
    assert not torch.equal(a.covariance, nngp.empirical(X, width=50, draws=10, seed=8).covariance)


def test_kernel_between_two_sets_of_inputs():
    X = inputs()
    for activation in nngp.ACTIVATIONS:
        K = nngp.kernel(X, depth=3, activation=activation, sigma_b2=0.2)
        assert torch.allclose(nngp.kernel(X[:2], X[1:], depth=3, activation=activation, sigma_b2=0.2), K[:2, 1:],
                              rtol=1e-14)
        assert torch.allclose(K, K.T, rtol=1e-14)


def test_bad_input_is_refused():
    X = inputs()
    with pytest.raises(ValueError, match="activation must be one of"):
        nngp.kernel(X, activation="tanh")
    with pytest.raises(ValueError, match="depth"):
        nngp.kernel(X, depth=0)
    with pytest.raises(ValueError, match="same d"):
        nngp.kernel(X, torch.randn(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="sigma_w2 > 0"):
        nngp.empirical(X, width=10, sigma_w2=0.0)
    with pytest.raises(ValueError, match="width must be"):
        nngp.empirical(X, width=0)
    with pytest.raises(ValueError, match="draws must be"):
        nngp.empirical(X, width=10, draws=1)
