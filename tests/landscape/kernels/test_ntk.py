"""The empirical NTK against a dense J J^T built by a reverse-mode loop on the module itself."""

import numpy as np
import pytest
import torch
from torch import nn

import landscape
from landscape import Objective
from landscape.kernels import ntk
from landscape.kernels.ntk import NTKOperator
from tests.reference import make, rel


def jacobian(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """[m, C, n]: one torch.autograd.grad per output scalar of the plain forward (no torch.func)."""
    params = list(model.parameters())
    out = model(X)
    m = out.shape[0]
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(o, params, retain_graph=True)])
            for o in out.reshape(-1)]
    return torch.stack(rows).reshape(m, -1, sum(p.numel() for p in params))


def dense_ntk(model: nn.Module, X1: torch.Tensor, X2: torch.Tensor) -> torch.Tensor:
    """[m1, m2, C, C]."""
    return torch.einsum("acp,bdp->abcd", jacobian(model, X1), jacobian(model, X2))


def flat(K: torch.Tensor) -> torch.Tensor:
    """[m, m, C, C] -> [m*C, m*C], row i*C + c."""
    m, _, C, _ = K.shape
    return K.permute(0, 2, 1, 3).reshape(m * C, m * C)


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1/(2 n)) sum_i ||f(x_i) - y_i||^2 over a batch of n (written out: F.mse_loss breaks fwd-rev HVPs)."""
    return 0.5 * ((out - y) ** 2).sum(-1).mean()


def mlp_problem(m: int = 8):
    """A tanh MLP 5-7-3 with N(0, 0.5^2) weights, inputs [m, 5], targets [m, 3]; float64, seeded."""
    g = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    X = torch.randn(m, 5, generator=g, dtype=torch.float64)
    return model, X, torch.randn(m, 3, generator=g, dtype=torch.float64)


def conv_problem(m: int = 7):
    """Conv2d(1, 2, 3) -> BatchNorm2d (eval, running statistics away from (0, 1)) -> tanh -> Linear(32, 3)."""
    model, _, X, _ = make("cnn-bn", n_examples=m)
    y = torch.randn(m, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    return model, X, y


PROBLEMS = {"mlp": mlp_problem, "conv": conv_problem}


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("method", ntk.METHODS)
@pytest.mark.parametrize("max_memory", [None, 1])  # 1 byte: one example (or one column) at a time
def test_kernel_equals_dense_jjt(name, method, max_memory):
    model, X, y = PROBLEMS[name]()
    obj = Objective(model, mse, (X, y))
    K = ntk.kernel(obj, X, method=method, max_memory=max_memory)
    ref = dense_ntk(model, X, X)
    assert K.shape == (len(X), len(X), 3, 3)
    assert rel(K, ref) < 1e-12
    assert rel(ntk.kernel(obj, X, method=method, outputs="trace", max_memory=max_memory),
               ref.diagonal(dim1=2, dim2=3).sum(-1)) < 1e-12


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("method", ntk.METHODS)
@pytest.mark.parametrize("max_memory", [None, 1])
def test_kernel_between_two_sets_of_inputs(name, method, max_memory):
    model, X, y = PROBLEMS[name]()
    X1, X2 = X[:6], X[2:][[3, 0, 2, 4]]  # m1 = 6, m2 = 4: non-square, partly shared inputs
    obj = Objective(model, mse, (X, y))
    ref = dense_ntk(model, X1, X2)
    full = ntk.kernel(obj, X1, X2, method=method, max_memory=max_memory)
    assert full.shape == (6, 4, 3, 3)
    assert rel(full, ref) < 1e-12
    traced = ntk.kernel(obj, X1, X2, method=method, outputs="trace", max_memory=max_memory)
    assert traced.shape == (6, 4)
    assert rel(traced, ref.diagonal(dim1=2, dim2=3).sum(-1)) < 1e-12


def test_kernel_at_another_theta():
    model, X, y = mlp_problem()
    obj = Objective(model, mse, (X, y))
    theta = obj.theta0 + 0.3 * torch.randn(obj.space.n, generator=torch.Generator().manual_seed(5),
                                           dtype=torch.float64)
    torch.nn.utils.vector_to_parameters(theta, model.parameters())
    ref = dense_ntk(model, X, X)
    for method in ntk.METHODS:
        assert rel(ntk.kernel(obj, X, theta=theta, method=method), ref) < 1e-12


@pytest.mark.parametrize("name", PROBLEMS)
def test_operator_products_equal_the_dense_kernel(name):
    model, X, y = PROBLEMS[name]()
    obj = Objective(model, mse, (X, y))
    K = dense_ntk(model, X, X)
    g = torch.Generator().manual_seed(6)
    op = NTKOperator(obj, X)
    assert op.shape == (len(X) * 3, len(X) * 3)
    V = torch.randn(4, op.shape[0], generator=g, dtype=torch.float64)
    assert rel(op @ V, V @ flat(K)) < 1e-12
    assert rel(op @ V[0], flat(K) @ V[0]) < 1e-12
    traced = NTKOperator(obj, X, outputs="trace", max_memory=1)
    assert traced.shape == (len(X), len(X))
    W = torch.randn(3, len(X), generator=g, dtype=torch.float64)
    assert rel(traced @ W, W @ K.diagonal(dim1=2, dim2=3).sum(-1)) < 1e-12


@pytest.mark.parametrize("outputs", ntk.OUTPUTS)
def test_eigenvalues_equal_eigh_of_the_dense_kernel(outputs):
    model, X, y = conv_problem()
    obj = Objective(model, mse, (X, y))
    K = dense_ntk(model, X, X)
    dense = flat(K) if outputs == "full" else K.diagonal(dim1=2, dim2=3).sum(-1)
    expected = np.linalg.eigh(dense.numpy())[0][::-1][:5]
    result = landscape.eigenvalues(NTKOperator(obj, X, outputs=outputs), k=5, tol=1e-10)
    assert np.abs(result.eigenvalues - expected).max() < 1e-9 * expected[0]


@pytest.mark.parametrize("batch_size", [None, 3])
def test_top_gauss_newton_eigenvalue_is_top_ntk_eigenvalue_over_n(batch_size):
    """L = (1/(2n)) sum_i ||f(x_i) - y_i||^2: G = J^T J / n and J J^T share their nonzero eigenvalues."""
    model, X, y = mlp_problem(m=8)  # J is [24, 66]
    n = len(X)
    obj = Objective(model, mse, (X, y), batch_size=batch_size)  # batches of 3, 3, 2 weigh in by size
    top_ggn = landscape.eigenvalues(landscape.ggn(obj), k=1, tol=1e-10).eigenvalues[0]
    top_ntk = landscape.eigenvalues(NTKOperator(obj, X), k=1, tol=1e-10).eigenvalues[0]
    dense = np.linalg.eigvalsh(flat(dense_ntk(model, X, X)).numpy())[-1]
    assert abs(top_ggn - top_ntk / n) < 1e-8 * top_ggn
    assert abs(top_ntk - dense) < 1e-8 * dense


@pytest.mark.parametrize("name", PROBLEMS)
def test_trace_and_diagonal_are_squared_jacobian_entries(name):
    model, X, y = PROBLEMS[name]()
    obj = Objective(model, mse, (X, y))
    J = jacobian(model, X)
    assert abs(ntk.trace(obj, X).item() - J.square().sum().item()) < 1e-12 * J.square().sum().item()
    diag = ntk.diagonal(obj, X, max_memory=1)
    assert diag.shape == (len(X), 3)
    assert rel(diag, J.square().sum(-1)) < 1e-12
    assert rel(ntk.diagonal(obj, X, outputs="trace"), J.square().sum((1, 2))) < 1e-12
    assert rel(diag.reshape(-1), flat(dense_ntk(model, X, X)).diagonal()) < 1e-12


def test_bad_input_is_refused():
    model, X, y = mlp_problem()
    obj = Objective(model, mse, (X, y))
    with pytest.raises(ValueError, match="X2's examples have shapes"):
        ntk.kernel(obj, X, torch.randn(4, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="method must be one of"):
        ntk.kernel(obj, X, method="svd")
    with pytest.raises(ValueError, match="outputs must be one of"):
        ntk.kernel(obj, X, outputs="diagonal")
    with pytest.raises(ValueError, match="outputs must be one of"):
        NTKOperator(obj, X, outputs="sum")
    with pytest.raises(ValueError, match="m >= 1 examples"):
        ntk.kernel(obj, X[:0])
    with pytest.raises(ValueError, match="train=False"):
        ntk.trace(Objective(model, mse, (X, y), train=True), X)
