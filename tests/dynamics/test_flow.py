"""Gradient flow, the modified flow and Cohen et al.'s stable RK4 against closed forms and fine references."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import landscape
from dynamics.flow import ADAPTIVE, FIXED, SCIPY, compare_gd, gradient_flow, stable_rk4


def quadratic(eigenvalues):
    """The quadratic problem's objective and its eigenbasis: A = Q diag(w) Q^T, center c, d0 = Q^T (theta0 - c)."""
    problem = landscape.load("quadratic", eigenvalues=eigenvalues)
    obj = problem.objective()
    w, Q = np.linalg.eigh(problem.model.A.numpy())
    c = problem.model.center.numpy()
    return obj, w, Q, c, Q.T @ (obj.theta0.numpy() - c)


def flow_closed_form(w, Q, c, d0, times, rate=None):
    """theta(t) = c + Q exp(-rate t) Q^T (theta0 - c), rate = w for gradient flow -> [T, n]."""
    rate = w if rate is None else rate
    return c + (np.exp(-np.outer(times, rate)) * d0) @ Q.T


def rel_dist(a, b) -> np.ndarray:
    a, b = np.asarray(a), np.asarray(b)
    return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def stiff():
    return quadratic([10.0, 3.0, 1.0, 0.3, 0.1])


@pytest.fixture(scope="module")
def mlp64():
    """Cohen et al.'s setting, small: a tanh MLP 64-32-10 at init, square loss on 256 digits, float64."""
    return landscape.load("digits-mlp", steps=0, loss="mse", examples=256, hidden=32).objective(dtype=torch.float64)


@pytest.mark.parametrize("method", ["dopri5", "RK45", "DOP853"])
def test_adaptive_solvers_match_the_closed_form_on_the_quadratic_to_their_tolerance(stiff, method):
    obj, w, Q, c, d0 = stiff
    times = np.linspace(0, 3, 7)
    exact = flow_closed_form(w, Q, c, d0, times)
    for rtol, atol in [(1e-6, 1e-8), (None, None)]:  # None: the float64 defaults 1e-8 / 1e-10
        run = gradient_flow(obj, times, method=method, rtol=rtol, atol=atol, snapshots=True, progress=False)
        tolerance = run.settings["rtol"] * np.linalg.norm(exact, axis=1) + run.settings["atol"] * len(w) ** 0.5
        error = np.linalg.norm(run.snapshots.numpy() - exact, axis=1)
        assert np.all(error <= tolerance), (method, rtol, error / tolerance)  # measured 0.06-0.19 of it
        np.testing.assert_allclose(run.loss, 0.5 * np.sum(w * ((exact - c) @ Q) ** 2, axis=1),
                                   rtol=10 * run.settings["rtol"])
        assert run.reached == len(times) and not run.diverged and run.message == ""
    assert run.settings["rtol"] == 1e-8 and run.settings["atol"] == 1e-10


@pytest.mark.parametrize("method", ADAPTIVE + FIXED + SCIPY)
def test_every_offered_method_follows_the_flow(stiff, method):
    obj, w, Q, c, d0 = stiff
    times = np.array([0.0, 0.7, 2.0])
    step = {"euler": 1e-3, "midpoint": 1e-2, "heun2": 1e-2, "heun3": 1e-2, "rk4": 1e-2}.get(method)
    run = gradient_flow(obj, times, method=method, rtol=1e-6, atol=1e-8, step_size=step, snapshots=True,
                        progress=False)
    # measured: 2e-9 (rk4), 1e-7 (dopri5) ... 4.4e-5 (fehlberg2), 5.4e-5 (first-order euler at h = 1e-3)
    assert rel_dist(run.snapshots.numpy(), flow_closed_form(w, Q, c, d0, times)).max() < 1e-4


def test_dopri5_on_the_network_agrees_with_a_fine_fixed_step_rk4(mlp64):
    times = np.linspace(0, 2, 5)
    f = lambda theta: -mlp64.grad(theta)  # noqa: E731
    theta, h, reference = mlp64.theta0.clone(), 0.005, [mlp64.theta0]
    for _ in range(len(times) - 1):  # classical RK4 at h lambda_max = 0.05: 3e-10 off (h = 0.01 is 5e-9 off)
        for _ in range(round(0.5 / h)):
            k1 = f(theta)
            k2 = f(theta + h / 2 * k1)
            k3 = f(theta + h / 2 * k2)
            theta = theta + h / 6 * (k1 + 2 * k2 + 2 * k3 + f(theta + h * k3))
        reference.append(theta)
    reference = torch.stack(reference)
    run = gradient_flow(mlp64, times, snapshots=True, progress=False)
    assert rel_dist(run.snapshots, reference).max() < 1e-8  # measured 1.6e-9 at the defaults 1e-8 / 1e-10
    np.testing.assert_allclose(run.loss, [mlp64.loss(x).item() for x in reference], rtol=1e-9)  # 2.6e-10
    assert run.loss[-1] < 0.55 * run.loss[0] and np.all(np.diff(run.loss) < 0)  # the flow only descends
    # float32 at its defaults (1e-5 / 1e-7) reaches float32's floor (measured 5.7e-6) in 85 gradients, not 241
    run32 = gradient_flow(mlp64.to(dtype=torch.float32), times, snapshots=True, progress=False)
    assert rel_dist(run32.snapshots.double(), reference).max() < 2e-5 and run32.n_gradients < run.n_gradients


def test_gd_is_closer_to_the_modified_flow_by_a_factor_lr_on_a_network(mlp64):
    """||theta_k - theta_MF(k lr)|| ~ lr^2 and ||theta_k - theta_GF(k lr)|| ~ lr at a fixed time T = 1.

    Measured on this network: distances to the modified flow 2.83e-4, 7.07e-5, 1.77e-5 (slope 2.0007),
    to gradient flow 2.38e-3, 1.16e-3, 5.70e-4 (slope 1.031, the local slopes 1.04 then 1.02 falling
    towards 1 as the O(lr^2) term fades). A modified flow with a wrong coefficient has slope 1.
    """
    lrs, T = np.array([0.02, 0.01, 0.005]), 1.0
    to_flow, to_modified = [], []
    for lr in lrs:
        steps = round(T / lr)
        cmp = compare_gd(mlp64, lr, steps, every=steps, rtol=1e-9, atol=1e-11, progress=False)
        np.testing.assert_array_equal(cmp.steps, [0, steps])
        to_flow.append(cmp.to_flow[-1])
        to_modified.append(cmp.to_modified[-1])
    slope_flow = np.polyfit(np.log(lrs), np.log(to_flow), 1)[0]
    slope_modified = np.polyfit(np.log(lrs), np.log(to_modified), 1)[0]
    assert abs(slope_modified - 2) < 0.05, slope_modified
    assert abs(slope_flow - 1) < 0.08, slope_flow
    assert to_modified[-1] < 0.05 * to_flow[-1]


def test_compare_gd_matches_the_closed_forms_of_gd_and_both_flows_on_the_quadratic(stiff):
    obj, w, Q, c, d0 = stiff
    lr, steps, every = 0.05, 30, 7
    cmp = compare_gd(obj, lr, steps, every=every, progress=False)
    k = np.array([0, 7, 14, 21, 28, 30])
    np.testing.assert_array_equal(cmp.steps, k)
    np.testing.assert_allclose(cmp.times, k * lr)
    gd = c + ((1 - lr * w) ** k[:, None] * d0) @ Q.T
    flow = flow_closed_form(w, Q, c, d0, k * lr)
    modified = flow_closed_form(w, Q, c, d0, k * lr, rate=w + lr / 2 * w ** 2)  # grad L~ = (A + lr/2 A^2)(theta - c)
    np.testing.assert_allclose(cmp.to_flow, np.linalg.norm(gd - flow, axis=1), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(cmp.to_modified, np.linalg.norm(gd - modified, axis=1), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(cmp.gd_loss, 0.5 * np.sum(w * ((gd - c) @ Q) ** 2, axis=1), rtol=1e-12)
    np.testing.assert_allclose(cmp.modified.loss, 0.5 * np.sum(w * ((modified - c) @ Q) ** 2, axis=1), rtol=1e-6)
    assert cmp.modified.n_matvecs == cmp.modified.n_gradients - len(k) and cmp.flow.n_matvecs == 0  # one HVP per evaluation
    assert json.loads(json.dumps(cmp.to_dict()))["modified"]["settings"]["modified_lr"] == lr


def test_stable_rk4_steps_alpha_over_lambda_max_and_matches_the_closed_form(stiff):
    obj, w, Q, c, d0 = stiff
    alpha, times = 0.5, np.array([0.0, 0.33, 1.0, 2.2])
    run = stable_rk4(obj, times, alpha=alpha, every=4, snapshots=True, progress=False)
    history = run.sharpness
    np.testing.assert_allclose(history.sharpness[:, 0], w.max(), rtol=1e-9)  # exact on the quadratic
    np.testing.assert_array_equal(history.steps, np.arange(0, len(run.step_sizes), 4))
    ends = np.cumsum(run.step_sizes)
    on_time = np.isclose(ends[:, None], times[1:], rtol=0, atol=1e-12).any(axis=1)
    full = alpha / w.max()
    # every step is alpha / lambda_max, but the ones shortened to land on a requested time
    np.testing.assert_allclose(run.step_sizes[~on_time], full, rtol=1e-9)
    assert np.all(run.step_sizes[on_time] <= full * (1 + 1e-9)) and on_time.sum() == len(times) - 1
    # exactly RK4's amplification R(-h w) = 1 - hw + (hw)^2/2 - (hw)^3/6 + (hw)^4/24 per mode and step ...
    d, rk = d0.copy(), [c + Q @ d0]
    for h, stop in zip(run.step_sizes, on_time):
        z = -h * w
        d = (1 + z + z ** 2 / 2 + z ** 3 / 6 + z ** 4 / 24) * d
        if stop:
            rk.append(c + Q @ d)
    np.testing.assert_allclose(run.snapshots.numpy(), np.array(rk), rtol=1e-12, atol=1e-14)
    # ... which at h lambda_max = 0.5 is 4e-4 per step off exp(-0.5) in the stiffest mode: 2.5e-5 at t = 0.33
    assert rel_dist(run.snapshots.numpy(), flow_closed_form(w, Q, c, d0, times)).max() < 5e-5
    assert run.n_gradients == 4 * len(run.step_sizes) + len(times) and run.n_matvecs == history.n_matvecs.sum()


def test_stable_rk4_and_dopri5_follow_the_modified_flow_on_the_quadratic(stiff):
    obj, w, Q, c, d0 = stiff
    lr, times = 0.05, np.linspace(0, 1, 5)
    exact = flow_closed_form(w, Q, c, d0, times, rate=w + lr / 2 * w ** 2)
    dopri = gradient_flow(obj, times, modified_lr=lr, snapshots=True, progress=False)
    assert rel_dist(dopri.snapshots.numpy(), exact).max() < 1e-8  # measured 1.5e-9
    rk4 = stable_rk4(obj, times, alpha=0.2, modified_lr=lr, snapshots=True, progress=False)
    np.testing.assert_allclose(rk4.step_sizes.max(), 0.2 / (10 + lr / 2 * 100), rtol=1e-9)  # lambda_max of A + lr/2 A^2
    assert rel_dist(rk4.snapshots.numpy(), exact).max() < 1e-6  # measured 5.8e-7: RK4 at h lambda = 0.2


def test_snapshots_stream_through_the_callback_and_the_solver_runs_in_chunks_within_the_memory_budget():
    problem = landscape.load("quadratic", eigenvalues=[4.0, 2.0, 1.0, 0.5])
    times = np.linspace(0, 2, 21)
    whole = gradient_flow(problem.objective(), times, snapshots=True, progress=False)
    seen = []
    # a budget of 4 * 3 states of 4 float64s: three requested times per solver call
    chunked = gradient_flow(problem.objective(max_memory=4 * 3 * 4 * 8), times,
                            callback=lambda t, theta: seen.append((t, theta.clone())), progress=False)
    assert chunked.snapshots is None and [t for t, _ in seen] == times.tolist()
    np.testing.assert_allclose(torch.stack([x for _, x in seen]), whole.snapshots, rtol=1e-8)
    np.testing.assert_allclose(chunked.theta, whole.snapshots[-1], rtol=1e-8)
    assert chunked.n_gradients > whole.n_gradients  # each of the 7 solver calls started afresh


def test_a_loss_that_overflows_is_a_recorded_nan_and_a_clear_stop():
    obj, w, Q, c, d0 = quadratic([10.0, 1.0])
    times = np.arange(0.0, 400.0)
    run = gradient_flow(obj, times, method="euler", step_size=0.5, progress=False)  # |1 - 0.5 * 10| = 4 per step
    last = run.reached - 1
    assert run.diverged and last == 127  # at t = 128 the loss is 9e307 and ||grad||^2 overflows float64
    assert run.message.startswith("the gradient norm became non-finite at t = 128 (loss 9.1")
    assert np.isnan(run.loss[last + 1:]).all() and np.isnan(run.grad_norm[last + 1:]).all()
    k = 2 * times[:last + 1, None]  # Euler steps up to the last time reached
    np.testing.assert_allclose(run.loss[:last + 1], 0.5 * np.sum(w * ((1 - 0.5 * w) ** k * d0) ** 2, axis=1),
                               rtol=1e-10)
    assert torch.isfinite(run.theta).all()
    start = gradient_flow(obj, [0.0, 1.0], theta=torch.full((2,), float("nan")), progress=False)
    assert start.diverged and start.reached == 0 and start.theta is None and np.isnan(start.loss).all()
    assert json.loads(json.dumps(run.to_dict()))["loss"][-1] is None


class Quartic(nn.Module):
    """L(theta) = -theta^4 / 4: the flow theta' = theta^3 blows up at t = 1 / (2 theta0^2)."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.ones(1, dtype=torch.float64))

    def forward(self, x):
        return (-self.theta ** 4 / 4).expand(x.shape[0])


@pytest.mark.parametrize("method", ["dopri5", "RK45", "rk4"])
def test_a_flow_that_blows_up_in_finite_time_stops_with_a_message_not_a_traceback(method):
    obj = landscape.Objective(Quartic(), lambda out, y: out.mean(), (torch.zeros(1, 1), torch.zeros(1)),
                              dtype=torch.float64)
    times = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.45, 0.55, 0.7])  # the blow-up is at t = 0.5
    run = gradient_flow(obj, times, method=method, step_size=0.01 if method == "rk4" else None, progress=False)
    assert run.reached == 6  # up to t = 0.45
    if method == "rk4":  # a fixed step runs into the overflow
        assert run.diverged and run.message.startswith("the loss became non-finite at t = 0.5")
    else:  # an adaptive one shrinks its step to nothing first
        assert not run.diverged and run.message.startswith(f"{method} failed between t = 0.45 and 0.55: ")
    exact = 1 / np.sqrt(1 - 2 * times[:6])
    np.testing.assert_allclose(run.loss[:6], -exact ** 4 / 4, rtol=1e-5)
    assert np.isnan(run.loss[6:]).all()


class Cliff(nn.Module):
    """L(theta) = sum_i sqrt(1 - theta_i), concave (H = -1/4 (1 - theta)^(-3/2) I): the flow reaches the edge
    of the domain, theta = 1, at t = 4/3 from 0, and beyond it the loss is NaN."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def forward(self, x):
        return torch.sqrt(1 - self.theta).sum().expand(x.shape[0])


def test_stable_rk4_steps_to_the_requested_times_without_positive_curvature_and_stops_at_a_nan():
    obj = landscape.Objective(Cliff(), lambda out, y: out.mean(), (torch.zeros(1, 1), torch.zeros(1)),
                              dtype=torch.float64)
    times = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    run = stable_rk4(obj, times, progress=False)
    assert np.all(run.sharpness.sharpness[:, 0] < 0)
    np.testing.assert_allclose(run.step_sizes[:2], 0.5)  # nothing limits the step: one per requested interval
    # RK4's last stage from t = 1 lands at t = 1.5, past the edge
    assert run.reached == 3 and run.diverged and run.message == "the loss became non-finite at t = 1.5 (loss nan)"
    exact = 2 * (1 - 0.75 * times[:3]) ** (1 / 3)  # 1 - theta(t) = (1 - 3t/4)^(2/3)
    np.testing.assert_allclose(run.loss[:3], exact, rtol=1e-3)  # RK4 at h = 0.5: 3e-4 off
    assert np.isnan(run.loss[3:]).all()


def test_bad_settings_are_refused_with_a_message(stiff):
    obj = stiff[0]
    with pytest.raises(ValueError, match="method must be one of dopri5"):
        gradient_flow(obj, [0.0, 1.0], method="adams", progress=False)
    with pytest.raises(ValueError, match="step_size .* is for the fixed-step methods"):
        gradient_flow(obj, [0.0, 1.0], step_size=0.1, progress=False)
    with pytest.raises(ValueError, match="strictly increasing"):
        gradient_flow(obj, [0.0, 1.0, 1.0], progress=False)
    with pytest.raises(ValueError, match="modified_lr must be a positive"):
        stable_rk4(obj, [0.0, 1.0], modified_lr=-0.1, progress=False)
    with pytest.raises(ValueError, match="steps and every must be at least 1"):
        compare_gd(obj, 0.1, 0, progress=False)
