"""Curvature operators against dense matrices built by hand."""

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import eigsh
from torch import nn
from torch.nn import functional as F

import landscape
from landscape import Objective
from tests.reference import dense_hessian, flat_grad, make, rel


def jacobian(model, X) -> torch.Tensor:
    """[outputs, n]: one reverse pass per output entry, on the module itself."""
    params = list(model.parameters())
    out = model(X).reshape(-1)
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(o, params, retain_graph=True)]) for o in out]
    return torch.stack(rows)


def output_hessian(name: str, out: torch.Tensor) -> torch.Tensor:
    """Closed form d^2 loss / d out^2 for mean-reduced cross-entropy or MSE, [outputs, outputs]."""
    B, C = out.shape
    if name == "cross_entropy":
        p = out.softmax(-1)
        blocks = [torch.diag(pi) - torch.outer(pi, pi) for pi in p]
        return torch.block_diag(*blocks) / B
    return 2 * torch.eye(B * C, dtype=out.dtype) / (B * C)


@pytest.mark.parametrize("name, loss_fn", [("mlp", F.cross_entropy), ("buffers", F.mse_loss)])
def test_ggn_equals_dense_jt_h_j(name, loss_fn):
    model, _, X, y = make(name)
    J = jacobian(model, X)
    with torch.no_grad():
        H_out = output_hessian(loss_fn.__name__, model(X))
    G = J.T @ H_out @ J
    obj = Objective(model, loss_fn, (X, y), batch_size=10)  # batches of 10, 10, 3
    V = torch.randn(4, obj.space.n, dtype=torch.float64)
    assert rel(landscape.ggn(obj) @ V, V @ G) < 1e-12
    assert rel(landscape.ggn(obj) @ V[0], G @ V[0]) < 1e-12
    assert torch.linalg.eigvalsh(G).min() > -1e-12  # PSD, as it must be


def test_ggn_is_the_hessian_of_a_linear_least_squares():
    model = nn.Linear(5, 2).double()
    X, y = torch.randn(17, 5, dtype=torch.float64), torch.randn(17, 2, dtype=torch.float64)
    obj = Objective(model, F.mse_loss, (X, y))
    V = torch.randn(3, obj.space.n, dtype=torch.float64)
    assert rel(landscape.ggn(obj) @ V, V @ dense_hessian(model, F.mse_loss, X, y)) < 1e-12


def test_fisher_equals_sum_of_per_example_outer_products():
    model, loss_fn, X, y = make("cnn-bn")
    G = torch.stack([flat_grad(model, loss_fn, X[i:i + 1], y[i:i + 1]) for i in range(len(y))])
    F_ref = G.T @ G / len(y)
    obj = Objective(model, loss_fn, [(X[:9], y[:9]), (X[9:], y[9:])], max_memory=1)  # chunks of one example
    V = torch.randn(3, obj.space.n, dtype=torch.float64)
    assert rel(landscape.fisher(obj) @ V, V @ F_ref) < 1e-12


def test_fisher_refuses_train_mode():
    model, loss_fn, X, y = make("cnn-bn")
    with pytest.raises(ValueError, match="train mode"):
        landscape.fisher(Objective(model, loss_fn, (X, y), train=True)) @ torch.zeros(123, dtype=torch.float64)


@pytest.mark.parametrize("make_op", [landscape.hessian, landscape.ggn, landscape.fisher])
def test_operators_are_symmetric(make_op):
    model, loss_fn, X, y = make("layernorm")
    op = make_op(Objective(model, loss_fn, (X, y)))
    u, v = torch.randn(2, op.shape[0], dtype=torch.float64)
    assert abs(u @ (op @ v) - v @ (op @ u)) <= 1e-12 * (op @ v).norm() * u.norm()
    assert op.shape == (63, 63) and op.dtype == torch.float64 and op.device.type == "cpu"


def test_hessian_operator_counts_and_checks_shapes():
    model, loss_fn, X, y = make("mlp")
    obj = Objective(model, loss_fn, (X, y))
    H = landscape.hessian(obj)
    H @ torch.zeros(3, 51, dtype=torch.float64)
    H @ torch.zeros(51, dtype=torch.float64)
    assert H.n_matvecs == 4 and obj.counts["n_matvecs"] == 4
    with pytest.raises(ValueError, match=r"HessianOperator is 51 x 51: it multiplies \[51\] or \[k, 51\]"):
        H @ torch.zeros(2, 50)


def test_to_scipy_gives_the_known_spectrum():
    problem = landscape.load("quadratic", n=30, eigenvalues=np.linspace(-2.0, 5.0, 30))
    op = landscape.hessian(problem.objective()).to_scipy()
    assert op.shape == (30, 30) and op.dtype == np.float64
    top = eigsh(op, k=2, which="LA", return_eigenvectors=False)
    assert np.allclose(sorted(top), [5.0 - 7.0 / 29, 5.0], atol=1e-10)
    x = np.random.default_rng(0).standard_normal((30, 3))
    assert np.allclose(op @ x, np.column_stack([op.matvec(c) for c in x.T]), atol=1e-12)


@pytest.mark.parametrize("make_op", [landscape.ggn, landscape.fisher])
def test_ggn_and_fisher_on_a_parameter_subset_are_blocks(make_op):
    model, loss_fn, X, y = make("mlp")
    full = make_op(Objective(model, loss_fn, (X, y)))
    block = make_op(Objective(model, loss_fn, (X, y), params="2.*"))
    M = full @ torch.eye(51, dtype=torch.float64)
    cut = slice(30, 51)  # 2.weight and 2.bias come last
    assert rel(block @ torch.eye(21, dtype=torch.float64), M[cut, cut]) < 1e-12


def test_operator_keeps_its_point():
    model, loss_fn, X, y = make("mlp")
    obj = Objective(model, loss_fn, (X, y))
    theta = obj.theta0.clone()
    H = landscape.hessian(obj, theta)
    v = torch.randn(51, dtype=torch.float64)
    before = H @ v
    theta += 1.0
    assert torch.equal(H @ v, before)


def test_to_scipy_in_float32():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    X, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    H = landscape.hessian(Objective(model, F.cross_entropy, (X, y)))
    op = H.to_scipy()
    assert op.dtype == np.float32
    dense = (H @ torch.eye(H.shape[0])).double().numpy()
    top = eigsh(op, k=1, which="LA", return_eigenvectors=False)[0]
    assert abs(top - np.linalg.eigvalsh((dense + dense.T) / 2)[-1]) < 1e-4 * abs(top)
