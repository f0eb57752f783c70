"""Lanczos eigenpairs and SLQ densities against numpy.linalg.eigh of dense matrices."""

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

import landscape
from landscape import Objective
from landscape.curvature.operators import MatrixOperator
from tests.reference import dense_hessian, make


def symmetric(eigenvalues, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
    return (Q * np.asarray(eigenvalues, dtype=float)) @ Q.T


def ends(ev: np.ndarray, k: int, which: str) -> np.ndarray:
    ev = np.sort(ev)[::-1]
    return {"largest": ev[:k], "smallest": ev[-k:], "both": np.r_[ev[:k], ev[-k:]]}[which]


def check(result, A: np.ndarray, k: int, which: str, rel: float):
    truth = ends(np.linalg.eigvalsh(A), k, which)
    scale = np.abs(np.linalg.eigvalsh(A)).max()
    assert result.converged
    assert np.all(np.abs(result.eigenvalues - truth) <= rel * np.abs(truth) + 1e-13 * scale)
    V = result.eigenvectors.cpu().numpy()
    true_residuals = np.linalg.norm(V @ A - result.eigenvalues[:, None] * V, axis=1)
    assert np.allclose(result.residuals, true_residuals, rtol=1e-2, atol=1e-13 * scale)  # reported honestly
    assert np.allclose(np.linalg.norm(V, axis=1), 1.0)


@pytest.mark.parametrize("which", ["largest", "smallest", "both"])
@pytest.mark.parametrize("name", ["mlp", "cnn-bn"])
def test_hessian_ends_match_dense_eigh(name, which):
    model, loss_fn, X, y = make(name)
    H = dense_hessian(model, loss_fn, X, y).numpy()
    result = landscape.eigenvalues(landscape.hessian(Objective(model, loss_fn, (X, y))), k=4, which=which,
                                   tol=1e-10)
    check(result, (H + H.T) / 2, 4, which, 1e-8)


SPECTRA = {
    "spread": np.linspace(-1.0, 10.0, 120),
    "clustered": np.r_[10.0, 10.0 - 1e-5, 10.0 - 2e-5, np.linspace(-1, 5, 117)],
    "negative": np.r_[-np.linspace(0.5, 10, 117), -20.0, -30.0, -40.0],
    "indefinite": np.r_[np.linspace(-50, -45, 5), np.linspace(-1, 1, 110), np.linspace(45, 50, 5)],
}


@pytest.mark.parametrize("which", ["largest", "smallest", "both"])
@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_plain_matrices(name, which):
    A = symmetric(SPECTRA[name])
    check(landscape.eigenvalues(MatrixOperator(A), k=3, which=which, tol=1e-10), A, 3, which, 1e-8)


def test_thick_restart_converges_with_a_small_basis():
    A = symmetric(np.linspace(0, 1, 300) ** 3)
    result = landscape.linalg.lanczos.lanczos(MatrixOperator(A), k=4, tol=1e-9, basis_size=12, max_steps=3000)
    assert result.restarts > 0
    check(result, A, 4, "largest", 1e-8)


def test_budget_exhausted_is_reported_not_hidden():
    A = symmetric(np.linspace(0, 1, 300))
    result = landscape.eigenvalues(MatrixOperator(A), k=3, tol=1e-12, max_steps=15)
    assert not result.converged and result.n_matvecs == 15
    V = result.eigenvectors.numpy()
    assert np.allclose(result.residuals, np.linalg.norm(V @ A - result.eigenvalues[:, None] * V, axis=1), rtol=1e-6)


@pytest.mark.parametrize("which", ["largest", "smallest", "both"])
def test_rank_below_k_and_breakdown(which):
    A = symmetric(np.r_[3.0, 2.0, -1.0, np.zeros(37)])  # four distinct eigenvalues: Krylov breaks down
    result = landscape.eigenvalues(MatrixOperator(A), k=5, which=which)
    check(result, A, 5, which, 1e-10)
    assert result.n_matvecs < 40


def test_identity_breaks_down_at_once():
    result = landscape.eigenvalues(MatrixOperator(np.eye(30) * 2.5), k=3)
    assert np.allclose(result.eigenvalues, 2.5) and result.converged and result.n_matvecs == 4


def test_exactly_repeated_eigenvalue_is_found_once_as_documented():
    A = symmetric(np.r_[5.0, 5.0, 5.0, np.linspace(0, 4, 37)])
    result = landscape.eigenvalues(MatrixOperator(A), k=3, tol=1e-10)
    assert result.eigenvalues[0] == pytest.approx(5.0, abs=1e-10)
    V = result.eigenvectors.numpy()  # every returned pair is a true eigenpair, with its residual
    assert np.all(np.linalg.norm(V @ A - result.eigenvalues[:, None] * V, axis=1) < 1e-8)


def test_k_may_be_a_numpy_integer_and_budgets_are_checked():
    assert len(landscape.eigenvalues(MatrixOperator(np.eye(5)), k=np.int64(2)).eigenvalues) == 2
    with pytest.raises(ValueError, match="max_steps 1 is below the 2 products"):
        landscape.eigenvalues(MatrixOperator(np.eye(5)), k=2, max_steps=1)


def test_bad_warm_starts_and_k():
    with pytest.raises(ValueError, match="v0 must be a nonzero, finite vector"):
        landscape.eigenvalues(MatrixOperator(np.eye(5)), v0=torch.zeros(5))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        landscape.eigenvalues(MatrixOperator(np.eye(5)), k=0)


def test_k_larger_than_the_dimension_is_an_error():
    with pytest.raises(ValueError, match="asked for 6 eigenvalues of a 5 x 5 operator"):
        landscape.eigenvalues(MatrixOperator(np.eye(5)), k=3, which="both")
    with pytest.raises(ValueError, match="which must be one of"):
        landscape.eigenvalues(MatrixOperator(np.eye(5)), which="top")


@pytest.mark.parametrize("k, change, ratio", [(1, 1e-6, 0.85), (1, 1e-2, 0.85), (5, 1e-6, 0.85)])
def test_warm_start_cuts_the_cost(k, change, ratio):
    A = symmetric(np.r_[np.linspace(20, 16, 5), np.linspace(-2, 12, 195)])
    old = landscape.eigenvalues(MatrixOperator(A), k=k, tol=1e-8)
    B = A + change * symmetric(np.random.default_rng(1).standard_normal(200), seed=2)
    warm = landscape.eigenvalues(MatrixOperator(B), k=k, tol=1e-8, v0=old.eigenvectors)
    check(warm, B, k, "largest", 1e-8)
    assert warm.n_matvecs <= ratio * landscape.eigenvalues(MatrixOperator(B), k=k, tol=1e-8).n_matvecs


def test_warm_start_still_finds_a_new_top_eigenvalue():
    A = symmetric(np.linspace(-9, 9, 60), seed=5)
    bottom = np.linalg.eigh(A)[1][:, 0]
    old = landscape.eigenvalues(MatrixOperator(A), k=3, tol=1e-9)
    B = A + 30 * np.outer(bottom, bottom)  # the old top three stay eigenvectors; 21 is the new top
    check(landscape.eigenvalues(MatrixOperator(B), k=3, v0=old.eigenvectors), B, 3, "largest", 1e-8)
    smallest = landscape.eigenvalues(MatrixOperator(A), k=1, which="smallest", tol=1e-10)
    check(landscape.eigenvalues(MatrixOperator(A), k=1, v0=smallest.eigenvectors), A, 1, "largest", 1e-8)
    top3 = old.eigenvectors
    check(landscape.eigenvalues(MatrixOperator(A), k=3, which="smallest", v0=top3), A, 3, "smallest", 1e-8)


def test_float32_residuals_include_the_products_rounding():
    A = symmetric(np.linspace(-1, 3, 120), seed=3)
    op = MatrixOperator(torch.as_tensor(A, dtype=torch.float32))
    result = landscape.eigenvalues(op, k=2, tol=1e-8)
    V = result.eigenvectors.to(torch.float32)
    true = ((V @ op.A).double() - torch.as_tensor(result.eigenvalues)[:, None] * V.double()).norm(dim=1).numpy()
    assert np.all(result.residuals > 1e-8) and np.allclose(result.residuals, true, rtol=0.5)
    assert not result.converged  # float32 products cannot meet tol 1e-8, and it says so
    assert landscape.eigenvalues(op, k=2, tol=1e-5).converged


def test_warm_start_from_an_exact_eigenvector_still_finds_the_top():
    A = symmetric(np.r_[9.0, 4.0, np.linspace(-1, 3, 58)])
    second = np.linalg.eigh(A)[1][:, -2]  # the eigenvector of 4: an invariant start
    result = landscape.eigenvalues(MatrixOperator(A), k=1, tol=1e-10, v0=torch.as_tensor(second))
    check(result, A, 1, "largest", 1e-10)


def test_basis_on_the_cpu_under_a_tiny_budget():
    A = symmetric(np.linspace(-3, 7, 80))
    result = landscape.linalg.lanczos.lanczos(MatrixOperator(A), k=2, tol=1e-10, max_memory=1)
    check(result, A, 2, "largest", 1e-8)


# -- density ------------------------------------------------------------------------------


def test_density_integrates_to_one_and_weights_sum_to_one():
    rho = landscape.density(MatrixOperator(symmetric(np.linspace(-2, 9, 100))), probes=4, steps=20)
    grid, values = rho.curve()
    assert np.trapezoid(values, grid) == pytest.approx(1.0, abs=1e-8)
    assert np.allclose(np.nansum(rho.weights, axis=1), 1.0)
    assert rho.n_matvecs == 4 * 20


@pytest.mark.parametrize("reorthogonalize", [True, False])
def test_density_reproduces_the_moments(reorthogonalize):
    eig = np.r_[np.linspace(-1, 1, 60), 3.0, 5.0]
    A = symmetric(eig)
    rho = landscape.linalg.density.slq(MatrixOperator(A), probes=300, steps=6, reorthogonalize=reorthogonalize)
    gen = torch.Generator().manual_seed(0)  # the same Rademacher probes slq draws
    Z = ((torch.randint(0, 2, (300, 62), generator=gen, dtype=torch.float64) * 2 - 1) / np.sqrt(62)).numpy()
    for j in range(1, 12):  # Gauss quadrature with 6 nodes is exact up to degree 11
        exact = np.mean(np.einsum("pn,nm,pm->p", Z, np.linalg.matrix_power(A, j), Z))
        assert rho.moment(j) == pytest.approx(exact, rel=1e-9)
    assert rho.moment(2) == pytest.approx(np.mean(eig**2), rel=0.1)  # and estimates tr(H^j) / n


def test_density_approaches_the_dense_spectrum():
    eig = np.r_[np.random.default_rng(3).standard_normal(190) * 0.3, np.linspace(4, 9, 10)]
    A = MatrixOperator(symmetric(eig))

    def w1(probes, steps):
        rho = landscape.density(A, probes=probes, steps=steps)
        ok = np.isfinite(rho.nodes)
        return wasserstein_distance(rho.nodes[ok], eig, rho.weights[ok], None)

    coarse, medium, fine = w1(1, 4), w1(4, 15), w1(32, 60)
    assert coarse > medium > fine and fine < 0.05


def test_density_on_a_real_hessian_matches_the_dense_mass_below_zero():
    model, loss_fn, X, y = make("layernorm")
    H = dense_hessian(model, loss_fn, X, y).numpy()
    eig = np.linalg.eigvalsh((H + H.T) / 2)
    rho = landscape.density(landscape.hessian(Objective(model, loss_fn, (X, y))), probes=64, steps=63)
    assert rho.mass_below(0.0) == pytest.approx(np.mean(eig < 0), abs=0.1)
    ok = np.isfinite(rho.nodes)
    assert wasserstein_distance(rho.nodes[ok], eig, rho.weights[ok], None) < 0.02 * (eig.max() - eig.min())


def test_a_non_finite_product_is_a_clear_error():
    class Broken(MatrixOperator):
        def __matmul__(self, V):
            return super().__matmul__(V) * float("nan")

    with pytest.raises(ValueError, match="the operator returned a non-finite product"):
        landscape.eigenvalues(Broken(np.diag([3.0, 2.0, 1.0])), k=1)
