"""Sharpness tracking and full-batch GD: the edge of stability at 2/lr, warm starts that agree with cold ones."""

import numpy as np
import pytest
import torch

import landscape
from dynamics.descent import gradient_descent
from dynamics.edge_of_stability import SharpnessTracker


@pytest.fixture(scope="module")
def small_mse():
    """A tanh MLP 64-32-10 at init, square loss on 256 digits: Cohen et al.'s setting, small."""
    return landscape.load("digits-mlp", steps=0, loss="mse", examples=256).objective()


@pytest.mark.parametrize("lr", [0.1, 0.15])
def test_full_batch_gd_on_mse_reaches_the_edge_of_stability(small_mse, lr):
    tracker = SharpnessTracker(small_mse, lr=lr, every=100)
    run = gradient_descent(small_mse, lr, 3000, tracker=tracker, progress=False)
    history = run.sharpness
    assert not run.diverged and run.loss[-1] < 0.1 * run.loss[0]
    assert history.sharpness[0, 0] < 0.75 * 2 / lr  # it starts well below the limit (9.5) ...
    assert history.sharpness[-1, 0] == pytest.approx(2 / lr, rel=0.15)  # ... and ends at it
    late = history.sharpness[history.steps >= 2000, 0]
    assert np.all(np.abs(late / (2 / lr) - 1) < 0.15)  # hovering, not passing through
    assert history.two_over_lr == 2 / lr and np.all(history.converged)
    np.testing.assert_array_equal(history.steps, np.arange(0, 3001, 100))
    np.testing.assert_allclose(history.loss, run.loss[history.steps])


def test_warm_started_tracker_agrees_with_cold_lanczos(small_mse):
    lr, every, steps = 0.1, 10, 300
    run = gradient_descent(small_mse, lr, steps, tracker=SharpnessTracker(small_mse, lr=lr, every=every, k=2),
                           progress=False)
    warm = run.sharpness
    cold = gradient_descent(small_mse, lr, steps, tracker=SharpnessTracker(small_mse, lr=lr, every=every, k=2,
                                                                          warm=False), progress=False).sharpness
    np.testing.assert_allclose(warm.sharpness, cold.sharpness, rtol=1e-6)
    assert warm.n_matvecs[1:].sum() < cold.n_matvecs[1:].sum()  # the point of warm starts (measured in bench_dynamics)
    # and a dense float64 eigensolve at the last iterate (where the last estimate was made) agrees
    obj64 = landscape.load("digits-mlp", steps=0, loss="mse", examples=256).objective(dtype=torch.float64)
    H = landscape.hessian(obj64, run.theta.double())
    eye = torch.eye(obj64.space.n, dtype=torch.float64)
    dense = torch.cat([H @ eye[i:i + 512] for i in range(0, obj64.space.n, 512)]).numpy()
    top = np.linalg.eigvalsh((dense + dense.T) / 2)[::-1][:2]
    np.testing.assert_allclose(warm.sharpness[-1], top, rtol=1e-5)  # float32 products


def test_sharpness_is_the_largest_eigenvalue_not_the_largest_magnitude():
    obj = landscape.load("quadratic", eigenvalues=[3.0, 1.0, 0.5, -10.0]).objective()
    tracker = SharpnessTracker(obj, k=2)
    assert tracker(0) == pytest.approx(3.0, rel=1e-10)  # Cohen et al.'s which='LM' would say -10
    np.testing.assert_allclose(tracker.history().sharpness[0], [3.0, 1.0], rtol=1e-8)


def test_gradient_descent_matches_the_closed_form_and_records_divergence():
    eigenvalues = np.array([4.0, 2.0, 1.0, 0.25])
    problem = landscape.load("quadratic", eigenvalues=eigenvalues)
    obj = problem.objective()
    A, c = problem.model.A.numpy(), problem.model.center.numpy()
    w, Q = np.linalg.eigh(A)
    d0 = Q.T @ (obj.theta0.numpy() - c)
    run = gradient_descent(obj, 0.3, 40, progress=False)
    for k in (0, 1, 7, 40):
        d = (1 - 0.3 * w) ** k * d0  # theta_k - c in the eigenbasis
        assert run.loss[k] == pytest.approx(0.5 * np.sum(w * d ** 2), rel=1e-10)
    np.testing.assert_allclose(run.theta.numpy(), c + Q @ ((1 - 0.3 * w) ** 40 * d0), rtol=1e-10)
    unstable = gradient_descent(obj, 0.75, 5000, progress=False)  # 2/lr = 2.67 < 4: |1 - 0.75 * 4| = 2
    last = unstable.steps_done
    assert unstable.diverged and last < 5000 and np.isfinite(unstable.loss[:last + 1]).all()
    assert not np.isfinite([unstable.loss[last + 1], unstable.grad_norm[last + 1]]).all()  # where it stopped


def test_tracker_runs_after_each_optimizer_step():
    problem = landscape.load("quadratic", eigenvalues=[5.0, 2.0, 1.0])
    obj = problem.objective()
    tracker = SharpnessTracker(obj, every=2)
    optimizer = torch.optim.SGD(problem.model.parameters(), lr=0.1)
    detach = tracker.attach(optimizer, problem.model)
    for _ in range(5):
        optimizer.zero_grad()
        problem.model(torch.zeros(1, 1)).mean().backward()
        optimizer.step()
    detach()
    optimizer.step()
    history = tracker.history()
    np.testing.assert_array_equal(history.steps, [2, 4])
    np.testing.assert_allclose(history.sharpness[:, 0], 5.0, rtol=1e-10)


@pytest.mark.parametrize("call, message", [
    (lambda obj: SharpnessTracker(obj, every=0), "every must be a positive number of steps"),
    (lambda obj: SharpnessTracker(obj, lr=-1.0), "lr must be positive"),
    (lambda obj: gradient_descent(obj, 0.0, 10), "lr must be positive"),
    (lambda obj: gradient_descent(obj, 0.1, -1), "steps must be at least 0"),
])
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(landscape.load("quadratic", n=3).objective())
