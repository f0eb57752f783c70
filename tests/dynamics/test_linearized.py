"""Linearized training against closed forms built here, real training written out by hand, and width scaling."""

import copy

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn
from torch.nn import functional as F

from dynamics import linearized
from landscape import problems
from landscape.core.objective import Objective
from landscape.problems import square_loss


def _linear(m=20, d=5, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(m, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (m,), generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Linear(d, C).double()
    return model, X, y


def _kernel_by_hand(X1, X2, C):
    """NTK of nn.Linear: Theta(x, x')[c, e] = delta_ce (x . x' + 1), as [m1 C, m2 C] with row i*C + c."""
    return np.kron((X1 @ X2.T).numpy() + 1.0, np.eye(C))


def _gd_by_hand(model, loss_fn, X, y, lr, steps, X_test=None):
    """Plain torch GD on a copy of the model; outputs on X (and X_test) after each step, [steps + 1, ...]."""
    model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    outs, tests = [], []
    for step in range(steps + 1):
        with torch.no_grad():
            outs.append(model(X).clone())
            if X_test is not None:
                tests.append(model(X_test).clone())
        if step == steps:
            break
        optimizer.zero_grad()
        loss_fn(model(X), y).backward()
        optimizer.step()
    return torch.stack(outs), (torch.stack(tests) if X_test is not None else None)


@pytest.fixture
def linear():
    return _linear()


def test_kernel_targets_and_scale_of_a_linear_model(linear):
    model, X, y = linear
    lin = linearized.linearize(Objective(model, square_loss, (X, y)))
    np.testing.assert_allclose(lin.kernel.numpy(), _kernel_by_hand(X, X, 3), rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(lin.targets.numpy(), F.one_hot(y, 3).double().numpy(), atol=1e-15)
    assert lin.scale == pytest.approx(1.0, rel=1e-12)
    with torch.no_grad():
        np.testing.assert_allclose(lin.f0.numpy(), model(X).numpy(), rtol=1e-14)
    np.testing.assert_allclose(lin.eigenvalues.numpy(), np.clip(np.linalg.eigvalsh(_kernel_by_hand(X, X, 3)), 0, None),
                               atol=1e-11)
    m = len(X)
    assert lin.max_stable_lr() == pytest.approx(2 * m / np.linalg.eigvalsh(_kernel_by_hand(X, X, 3))[-1], rel=1e-12)


def test_flow_equals_the_matrix_exponential(linear):
    model, X, y = linear
    X_test = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lin = linearized.linearize(Objective(model, square_loss, (X, y)), X_test=X_test)
    K, K_test = _kernel_by_hand(X, X, 3), _kernel_by_hand(X_test, X, 3)
    f0, target = lin.f0.numpy().reshape(-1), F.one_hot(y, 3).double().numpy().reshape(-1)
    m = len(X)
    times = [0.0, 0.3, 2.0, 40.0]
    flows, tests = lin.flow(times).numpy(), lin.flow(times, test=True).numpy()
    with torch.no_grad():
        f0_test = model(X_test).numpy().reshape(-1)
    for t, flow, test in zip(times, flows, tests):
        decay = scipy.linalg.expm(-K * t / m)
        np.testing.assert_allclose(flow.reshape(-1), target + decay @ (f0 - target), rtol=1e-10, atol=1e-10)
        # theta_t - theta_0 = -J^T int_0^t exp(-K s/m) ds (f0 - y)/m; the integral by quadrature in s.
        s, w = np.polynomial.legendre.leggauss(40)
        s, w = 0.5 * t * (s + 1), 0.5 * t * w
        integral = sum(wi * scipy.linalg.expm(-K * si / m) for si, wi in zip(s, w))
        expected = f0_test - K_test @ integral @ (f0 - target) / m
        np.testing.assert_allclose(test.reshape(-1), expected, rtol=1e-9, atol=1e-9)


def test_gd_on_a_linear_model_is_exact_on_and_off_the_data(linear):
    """The kernel here is singular (rank 3 x 6 of 60): the null-space limit is exercised."""
    model, X, y = linear
    X_test = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lin = linearized.linearize(Objective(model, square_loss, (X, y)), X_test=X_test)
    assert (lin.eigenvalues < 1e-9).sum() == 60 - 3 * 6
    lr, steps = 0.7 * lin.max_stable_lr(), 30
    outs, tests = _gd_by_hand(model, square_loss, X, y, lr, steps, X_test)
    k = np.arange(steps + 1)
    np.testing.assert_allclose(lin.gd(lr, k).numpy(), outs.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(lin.gd(lr, k, test=True).numpy(), tests.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(lin.loss(lin.gd(lr, k)).numpy(),
                               [float(square_loss(o, y)) for o in outs], rtol=1e-12)


def test_compare_on_a_linear_model_has_no_gap(linear):
    model, X, y = linear
    obj = Objective(model, square_loss, (X, y))
    gd = linearized.compare(obj, 40, every=10)
    assert gd.max_gap < 1e-12
    assert gd.kernel_change == 0.0
    np.testing.assert_allclose(gd.eigenvalues, np.clip(np.linalg.eigvalsh(_kernel_by_hand(X, X, 3))[::-1], 0, None),
                               atol=1e-11)
    np.testing.assert_allclose(gd.loss, gd.linear_loss, rtol=1e-12)
    assert gd.lr == pytest.approx(0.5 * 2 * len(X) / np.linalg.eigvalsh(_kernel_by_hand(X, X, 3))[-1], rel=1e-12)
    flow = linearized.compare(obj, 40, every=10, method="flow")
    assert flow.max_gap < 1e-7  # dopri5 at rtol 1e-8: the real flow is solved, the linear one is exact
    np.testing.assert_allclose(flow.loss, flow.linear_loss, rtol=1e-7)
    assert np.all(np.diff(flow.loss) < 0)


def test_mse_loss_scale_is_read_and_other_losses_are_refused(linear):
    model, X, y = linear
    target = torch.randn(len(X), 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    lin = linearized.linearize(Objective(model, F.mse_loss, (X, target)))
    assert lin.scale == pytest.approx(2 / 3, rel=1e-10)  # mean over m*C entries, no 1/2: c = 2/C
    np.testing.assert_allclose(lin.targets.numpy(), target.numpy(), atol=1e-12)
    lr, steps = 0.5 * lin.max_stable_lr(), 20
    outs, _ = _gd_by_hand(model, F.mse_loss, X, target, lr, steps)
    np.testing.assert_allclose(lin.gd(lr, np.arange(steps + 1)).numpy(), outs.numpy(), rtol=1e-11, atol=1e-12)
    with pytest.raises(ValueError, match="square loss"):
        linearized.linearize(Objective(model, F.cross_entropy, (X, y)))
    with pytest.raises(ValueError, match="square loss"):
        linearized.linearize(Objective(model, lambda f, t: ((f - F.one_hot(t, 3)) ** 4).mean(), (X, y)))


def test_batches_give_the_same_linearization(linear):
    model, X, y = linear
    whole = linearized.linearize(Objective(model, square_loss, (X, y)))
    split = linearized.linearize(Objective(model, square_loss, (X, y), batch_size=7))
    np.testing.assert_allclose(split.kernel.numpy(), whole.kernel.numpy(), rtol=1e-13, atol=1e-12)
    assert split.scale == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(split.gd(0.1, [5]).numpy(), whole.gd(0.1, [5]).numpy(), rtol=1e-12)


def test_float32_objective_is_linearized_in_float64():
    model, X, y = _linear()
    lin = linearized.linearize(Objective(model.float(), square_loss, (X.float(), y)))
    assert lin.kernel.dtype == torch.float64
    np.testing.assert_allclose(lin.kernel.numpy(), _kernel_by_hand(X.float().double(), X.float().double(), 3),
                               rtol=1e-12, atol=1e-10)


def _ntk_mlp(width, seed):
    return problems.digits_mlp(hidden=width, steps=0, loss="mse", examples=32, seed=seed,
                               parametrization="ntk").objective(dtype=torch.float64)


def test_tanh_mlp_gap_shrinks_with_width_at_a_measured_rate():
    """NTK-parametrized tanh MLPs 64-w-10 on 32 digits, 100 GD steps at half the stability limit.

    Measured (seeds 0, 1): max gap 0.081, 0.019, 0.0072, 0.0017 at widths 16, 64, 256, 1024, a fitted
    rate of 0.90; the kernel moves as width^-0.92. Lee et al. (2019) bound the gap by O(width^-1/2);
    Dyer & Gur-Ari (2019) predict width^-1 for both; the measured rates approach 1.
    """
    result = linearized.sweep(_ntk_mlp, [16, 64, 256, 1024], seeds=[0, 1], steps=100, every=10, progress=False)
    gaps = result.max_gap.mean(1)
    assert np.all(np.diff(gaps) < 0) and np.all(np.diff(result.kernel_change.mean(1)) < 0)
    assert 0.7 <= result.rate <= 1.1, result.rate
    assert 0.7 <= result.kernel_rate <= 1.1, result.kernel_rate
    assert gaps[-1] < 0.01 < 0.05 < gaps[0]
    # the fit is the least-squares line through the logs
    slope = np.polyfit(np.log(result.widths), np.log(gaps), 1)[0]
    assert result.rate == pytest.approx(-slope, rel=1e-12)
    # every network ran at half its own stability limit, and the losses agree where the gap is small
    for row in result.runs:
        for run in row:
            assert run.lr == pytest.approx(0.5 * run.max_stable_lr, rel=1e-12)
    wide = result.runs[-1][0]
    np.testing.assert_allclose(wide.loss, wide.linear_loss, rtol=0.02)


def test_standard_parametrization_also_shrinks():
    def build(width, seed):
        return problems.digits_mlp(hidden=width, steps=0, loss="mse", examples=32, seed=seed).objective(
            dtype=torch.float64)

    result = linearized.sweep(build, [16, 128, 1024], steps=100, every=20, progress=False)
    assert np.all(np.diff(result.max_gap[:, 0]) < 0)


def test_ntk_linear_layer_scales_in_the_forward_pass():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layer = problems.NTKLinear(4, 3)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(layer(x).detach().numpy(),
                               (x @ layer.weight.T / 2 + 0.1 * layer.bias).detach().numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="parametrization"):
        problems.digits_mlp(steps=0, parametrization="mup")


def test_gd_filter_is_exact_for_tiny_eigenvalues():
    """(1 - (1 - b lambda)^k) / lambda -> b k (1 - (k - 1) b lambda / 2 + ...), to rounding for lambda ~ 1e-13."""
    V = torch.eye(3, dtype=torch.float64)
    lam = torch.tensor([0.0, 1e-13, 2.0], dtype=torch.float64)
    f0 = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    lin = linearized.Linearized(torch.zeros(1, dtype=torch.float64), torch.diag(lam), lam, V, f0, torch.zeros_like(f0),
                                1.0, test_kernel=torch.eye(3, dtype=torch.float64), f0_test=torch.zeros_like(f0))
    lr, k = 0.3, 50
    b = lr / 3
    moved = -lin.gd(lr, [k], test=True)[0, :, 0].numpy() / f0[:, 0].numpy()  # the filter, per eigenvector
    assert moved[0] == pytest.approx(b * k, rel=1e-15)  # the null space: the limit
    assert moved[1] == pytest.approx(b * k * (1 - (k - 1) * b * 1e-13 / 2), rel=1e-13)
    assert moved[2] == pytest.approx((1 - (1 - b * 2.0) ** k) / 2.0, rel=1e-13)


def test_bad_input_is_refused(linear):
    model, X, y = linear
    obj = Objective(model, square_loss, (X, y))
    with pytest.raises(ValueError, match="method"):
        linearized.compare(obj, 5, method="adam")
    with pytest.raises(ValueError, match="lr"):
        linearized.compare(obj, 5, lr=-1.0)
    with pytest.raises(ValueError, match="steps"):
        linearized.compare(obj, 0)
    with pytest.raises(ValueError, match="widths"):
        linearized.sweep(lambda w, s: obj, [16])
    with pytest.raises(ValueError, match="test inputs"):
        linearized.linearize(obj).flow([1.0], test=True)
    with pytest.raises(ValueError, match="positive"):
        linearized.power_law([1, 2], [1, 0])
    assert linearized.power_law([1, 10, 100], [3, 0.3, 0.03]) == pytest.approx((1.0, 3.0), rel=1e-12)
