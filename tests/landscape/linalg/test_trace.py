"""Trace, diagonal and Frobenius estimators against exact values of dense matrices."""

import numpy as np
import pytest
import torch

import landscape
from landscape import Objective
from landscape.curvature.operators import MatrixOperator
from landscape.linalg.trace import diagonal, frobenius, hutchinson, hutchpp
from tests.landscape.curvature.test_spectrum import symmetric
from tests.reference import dense_hessian, make


def low_rank_plus_noise(n=150, rank=8, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, rank)))
    noise = rng.standard_normal((n, n)) * 0.02
    return (U * np.linspace(50, 10, rank)) @ U.T + (noise + noise.T) / 2


@pytest.mark.parametrize("estimator", [hutchinson, hutchpp])
def test_within_three_standard_errors_over_many_seeds(estimator):
    A = symmetric(np.r_[np.linspace(-1, 4, 95), 20, 15, 12, 9, 7])
    truth = np.trace(A)
    hits = [abs(e.estimate - truth) <= 3 * e.stderr
            for e in (estimator(MatrixOperator(A), n_matvecs=60, seed=s) for s in range(60))]
    assert np.mean(hits) >= 0.9


def test_hutchpp_beats_hutchinson_at_equal_budget():
    A = low_rank_plus_noise()
    truth = np.trace(A)

    def rms(estimator):
        return np.sqrt(np.mean([(estimator(MatrixOperator(A), n_matvecs=45, seed=s).estimate - truth) ** 2
                                for s in range(40)]))

    assert rms(hutchpp) * 3 < rms(hutchinson)


@pytest.mark.parametrize("estimator", [hutchinson, hutchpp])
def test_target_relative_error(estimator):
    A = symmetric(np.r_[np.linspace(0.5, 4, 95), 20, 15, 12, 9, 7])
    result = estimator(MatrixOperator(A), rtol=0.01, seed=1)
    assert result.stderr <= 0.01 * abs(result.estimate)
    assert abs(result.estimate - np.trace(A)) <= 4 * result.stderr
    assert result.n_matvecs >= 10


def test_budgets_are_spent_exactly():
    A = MatrixOperator(symmetric(np.linspace(0, 1, 50)))
    assert hutchinson(A, n_matvecs=37).n_matvecs == 37
    assert hutchpp(A, n_matvecs=37).n_matvecs == 37
    assert np.mean(hutchpp(A, n_matvecs=37).samples) == pytest.approx(hutchpp(A, n_matvecs=37).estimate)
    with pytest.raises(ValueError, match="n_matvecs must be at least 3"):
        hutchpp(A, n_matvecs=2)


def test_hutchpp_is_exact_when_the_sketch_spans_everything():
    model, loss_fn, X, y = make("mlp")
    H = dense_hessian(model, loss_fn, X, y).numpy()
    result = hutchpp(landscape.hessian(Objective(model, loss_fn, (X, y))), n_matvecs=3 * 51)
    assert result.estimate == pytest.approx(np.trace(H), rel=1e-10) and result.stderr == 0.0


def test_diagonal_estimate():
    A = symmetric(np.r_[np.linspace(-1, 4, 45), 10.0, 8.0, 6.0, 5.0, 5.5])
    d = diagonal(MatrixOperator(A), n_matvecs=400, seed=2)
    error = (d.estimate.numpy() - np.diag(A)) / d.stderr.numpy()
    assert np.mean(np.abs(error) <= 3) >= 0.9
    coarse = diagonal(MatrixOperator(A), n_matvecs=20, seed=2).estimate.numpy()
    assert np.abs(d.estimate.numpy() - np.diag(A)).mean() < np.abs(coarse - np.diag(A)).mean()


def test_frobenius_norm():
    A = low_rank_plus_noise(seed=4)
    result = frobenius(MatrixOperator(A), n_matvecs=200, seed=0)
    assert abs(result.estimate - np.linalg.norm(A)) <= 3 * result.stderr
    assert result.stderr < 0.05 * result.estimate


def test_float32_operator():
    A = torch.as_tensor(symmetric(np.linspace(1, 3, 40)), dtype=torch.float32)
    assert hutchpp(MatrixOperator(A), n_matvecs=120).estimate == pytest.approx(float(A.double().trace()), rel=1e-5)


def test_the_default_trace_is_hutchpp():
    A = MatrixOperator(symmetric(np.linspace(0, 1, 50)))
    assert landscape.trace(A, n_matvecs=30).method == "hutch++"
    assert landscape.trace(A, method="hutchinson", n_matvecs=30).method == "hutchinson"
    with pytest.raises(ValueError, match="method must be one of hutch\\+\\+, hutchinson"):
        landscape.trace(A, method="exact")


def test_diagonal_to_dict_and_frobenius_budget():
    A = MatrixOperator(symmetric(np.linspace(0, 1, 10)))
    assert len(diagonal(A, n_matvecs=4).to_dict()["estimate"]) == 10
    with pytest.raises(ValueError, match="n_matvecs must be at least 2"):
        frobenius(A, n_matvecs=0)
