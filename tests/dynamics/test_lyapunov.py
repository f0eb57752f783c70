"""Lyapunov spectra against closed forms (quadratic losses, the logistic map) and published values."""

import json
import math
import warnings

import numpy as np
import pytest
import torch

import landscape
from dynamics.lyapunov import flow_spectrum, gd_spectrum, gradient_flow_spectrum, kaplan_yorke, map_spectrum
from dynamics.systems import Henon, Logistic, Lorenz, Rossler


def descending(values) -> np.ndarray:
    return np.sort(np.asarray(values, dtype=np.float64))[::-1]


# -- training on a quadratic loss: the exponents in closed form -----------------------------------

# Hessian eigenvalues a_i and lr = 0.5: 1 - lr a_i = -1.2, -0.3, 0.5, 0.8, 1.3, so two
# directions grow (|1 - lr a| > 1: one oscillating, one along the negative curvature).
GD_EIGENVALUES = [4.4, 2.6, 1.0, 0.4, -0.6]
GD_LR = 0.5


@pytest.fixture(scope="module")
def gd_quadratic():
    return landscape.load("quadratic", eigenvalues=GD_EIGENVALUES).objective()


def test_gd_exponents_are_log_of_one_minus_lr_times_the_eigenvalues(gd_quadratic):
    # The tangent map I - lr A does not depend on theta, so after the transient has turned the
    # tangents onto A's eigenvectors (consecutive ratios |1 - lr a| of at most 0.92: 0.92^100 ~ 3e-4,
    # whose square is the error) every interval grows them by exactly |1 - lr a_i|.
    result = gd_spectrum(gd_quadratic, GD_LR, 5, steps=200, transient=100)
    expected = descending(np.log(np.abs(1 - GD_LR * np.array(GD_EIGENVALUES))))
    assert np.abs(result.exponents - expected).max() < 1e-6
    top = gd_spectrum(gd_quadratic, GD_LR, 2, steps=200, transient=100, seed=7)
    assert np.abs(top.exponents - expected[:2]).max() < 1e-6
    assert result.n_matvecs == 300 * 5 and result.n_evaluations == 300
    assert result.settings["lr"] == GD_LR and result.settings["method"] == "gd"


def test_gradient_flow_exponents_are_minus_the_eigenvalues():
    a = np.array([0.9, 0.5, 0.1, -0.3])
    obj = landscape.load("quadratic", eigenvalues=a.tolist()).objective()
    # RK4 multiplies a tangent along eigenvalue a by p(-a dt) = 1 - z + z^2/2 - z^3/6 + z^4/24
    # (z = a dt) per step, so it measures log|p(-a dt)| / dt = -a + a^5 dt^4 / 120 + O(dt^5):
    # at dt = 0.08 and |a| <= 0.9 that is 2e-7, five times below the 1e-6 asked for.
    # The transient (t = 30) turns the tangents onto the eigenvectors: gaps of 0.4 leave an angle of
    # e^{-0.4 * 30} ~ 6e-6, whose square is the error left.
    dt = 0.08
    result = gradient_flow_spectrum(obj, 4, dt=dt, steps=100, transient=375)
    assert np.abs(result.exponents - descending(-a)).max() < 1e-6
    z = -a * dt
    rk4 = np.log(np.abs(1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24)) / dt
    assert np.abs(result.exponents - descending(rk4)).max() < 1e-9  # what RK4 itself gives
    assert result.times[-1] == pytest.approx(100 * dt)
    assert result.n_matvecs == 475 * 4 * 4 and result.settings["dt"] == dt


def test_batched_and_one_at_a_time_tangents_agree(gd_quadratic):
    batched = gd_spectrum(gd_quadratic, GD_LR, 5, steps=40, transient=10, interval=3)
    single = gd_spectrum(gd_quadratic, GD_LR, 5, steps=40, transient=10, interval=3, batched=False)
    assert np.allclose(batched.running, single.running, rtol=1e-12, atol=1e-13)
    assert np.allclose(batched.finite_time, single.finite_time, rtol=1e-12, atol=1e-13)
    henon = Henon()
    for kwargs in ({}, {"jvp": henon.jvp}):  # torch.func.jvp vmapped over the rows, and a jvp given
        one = map_spectrum(henon.__call__, henon.x0, steps=200, interval=2, **kwargs)
        other = map_spectrum(henon.__call__, henon.x0, steps=200, interval=2, batched=False, **kwargs)
        assert np.allclose(one.running, other.running, rtol=1e-11, atol=1e-12)
    lorenz = Lorenz()
    flows = [flow_spectrum(lorenz, dt=0.01, steps=300, k=2, batched=b) for b in (True, False)]
    assert np.allclose(flows[0].running, flows[1].running, rtol=1e-11, atol=1e-12)


def test_torch_func_jvp_and_the_analytic_jacobian_agree():
    henon = Henon()
    autodiff = map_spectrum(henon.__call__, henon.x0, steps=300, transient=20, interval=5)
    analytic = map_spectrum(henon, steps=300, transient=20, interval=5)
    assert np.allclose(autodiff.running, analytic.running, rtol=1e-10, atol=1e-12)
    lorenz = Lorenz()
    autodiff = flow_spectrum(lorenz.__call__, lorenz.x0, dt=0.01, steps=100)
    analytic = flow_spectrum(lorenz, dt=0.01, steps=100)
    assert np.allclose(autodiff.running, analytic.running, rtol=1e-10, atol=1e-12)


# -- classic systems: closed forms and published values ---------------------------------------------


def test_logistic_map_at_r4_gives_ln2():
    result = map_spectrum(Logistic(4.0), steps=20000, transient=100, interval=10)
    assert result.exponents[0] == pytest.approx(math.log(2), abs=1e-3)


def test_logistic_map_on_its_stable_fixed_point():
    result = map_spectrum(Logistic(2.5), steps=500, transient=200, interval=10)
    assert result.exponents[0] == pytest.approx(math.log(0.5), abs=1e-12)  # F'(1 - 1/r) = 2 - r


def test_henon_map():
    # ~10^5 steps: the finite-time exponent's spread over starting points is ~0.0013 there
    # (256 starts measured), against ~0.004 at 10^4 steps, too close to the 5e-3 asked for.
    result = map_spectrum(Henon(), steps=100_000, transient=1000, interval=10)
    assert result.exponents == pytest.approx([0.41922, -1.62319], abs=5e-3)
    assert result.exponents.sum() == pytest.approx(math.log(0.3), abs=1e-6)  # |det J| = b everywhere
    assert result.kaplan_yorke == pytest.approx(1 + 0.41922 / 1.62319, abs=5e-3)


@pytest.fixture(scope="module")
def lorenz():
    # T = 1000 time units: the spread of lambda_1 over starting points is ~0.005 there (64 starts
    # measured; 0.013 at T = 200), a fourth of the 0.02 asked for. dt = 1/80: RK4's error in the sum
    # of the exponents goes like dt^4, 1.0e-4 measured at dt = 0.01, so ~2.5e-4 here against 1e-3.
    return flow_spectrum(Lorenz(), dt=0.0125, steps=80_000, transient=1000, interval=8)


def test_lorenz_flow(lorenz):
    lam = lorenz.exponents
    assert lam[0] == pytest.approx(0.9056, abs=0.02)
    assert lam[1] == pytest.approx(0.0, abs=0.02)
    assert lam.sum() == pytest.approx(-(10 + 1 + 8 / 3), abs=1e-3)  # trace J = -(sigma + 1 + beta)
    assert lam[2] == pytest.approx(-14.5723, abs=0.03)


def test_kaplan_yorke_dimension(lorenz):
    lam = lorenz.exponents
    assert lorenz.kaplan_yorke == pytest.approx(2 + (lam[0] + lam[1]) / abs(lam[2]), rel=1e-12)
    assert lorenz.kaplan_yorke == pytest.approx(2.06, abs=0.005)  # Sprott: 2.06215
    assert kaplan_yorke([0.9056, 0.0, -14.5723]) == pytest.approx(2 + 0.9056 / 14.5723, rel=1e-12)
    assert kaplan_yorke([-14.5723, 0.9056, 0.0]) == pytest.approx(2 + 0.9056 / 14.5723, rel=1e-12)  # sorts
    assert kaplan_yorke([1.0, -0.5, -2.0]) == pytest.approx(2.25)  # j = 2: 2 + 0.5 / 2
    assert kaplan_yorke([0.0, -1.0]) == 1.0  # a partial sum of exactly 0 counts
    assert kaplan_yorke([-0.1, -1.0]) == 0.0  # lambda_1 < 0: a stable point
    assert kaplan_yorke([0.5, 0.2, -0.1]) == 3.0  # every partial sum >= 0: k


def test_sum_of_exponents_follows_the_trace_along_a_rossler_orbit():
    # trace J = a + x - c varies along the orbit; the exponents must sum to its time average,
    # integrated here by a separate RK4 as a fourth coordinate w' = x. RK4's propagator misses
    # exp(integral of trace J) by O(dt^4): 1.2e-4 at dt = 0.02, ~1e-5 at dt = 0.01.
    system, dt = Rossler(), 0.01
    x = system.x0.clone()
    for _ in range(1000):  # the same transient
        x = rk4(system, x, dt)
    w = torch.cat([x, torch.zeros(1, dtype=torch.float64)])
    augmented = lambda s: torch.cat([system(s[:3]), s[:1]])  # noqa: E731
    for _ in range(3000):
        w = rk4(augmented, w, dt)
    result = flow_spectrum(system, dt=dt, steps=3000, transient=1000)
    assert result.exponents.sum() == pytest.approx(0.2 - 5.7 + w[3].item() / (3000 * dt), abs=1e-4)


def rk4(f, x, dt):
    k1 = f(x)
    k2 = f(x + dt / 2 * k1)
    k3 = f(x + dt / 2 * k2)
    k4 = f(x + dt * k3)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


# -- the result: running estimate, finite-time exponents, JSON -------------------------------------


def test_running_finite_time_and_times_fit_together():
    result = map_spectrum(Henon(), steps=23, transient=4, interval=5)
    assert np.array_equal(result.times, [5, 10, 15, 20, 23])  # the last interval is the 3 steps left
    assert result.running.shape == result.finite_time.shape == (5, 2)
    assert np.array_equal(result.running[-1], result.exponents)
    lengths = np.diff(result.times, prepend=0)
    cumulative = np.cumsum(result.finite_time * lengths[:, None], axis=0) / result.times[:, None]
    assert np.allclose(result.running, -np.sort(-cumulative, axis=1), rtol=1e-13, atol=1e-14)
    assert np.all(np.diff(result.exponents) <= 0)
    assert result.n_steps == 27 and result.n_matvecs == 27 * 2

    flow = flow_spectrum(Lorenz(), dt=0.01, steps=25, interval=10)
    assert np.allclose(flow.times, [0.1, 0.2, 0.25]) and np.array_equal(flow.running[-1], flow.exponents)
    data = json.loads(json.dumps(flow.to_dict()))
    assert data["exponents"] == flow.exponents.tolist() and data["kaplan_yorke"] == flow.kaplan_yorke
    assert len(data["running"]) == 3 and data["settings"]["x0"] == [1.0, 1.0, 1.0]
    assert data["settings"]["system"] == "Lorenz(sigma=10.0, rho=28.0, beta=2.6666666666666665)"
    assert data["n_matvecs"] == 25 * 4 * 3 and data["n_evaluations"] == 25 * 4


def test_directions_lost_to_rounding_are_flagged():
    # Henon's two directions separate by e^{2.04} a step: 5 steps is e^{-10} ~ 4e-5, below what
    # float32 resolves (1e3 eps ~ 1e-4) and far above float64's 2e-13.
    with pytest.warns(RuntimeWarning, match=r"exponents from #2 on are not resolved: .* float32 .* smaller interval"):
        map_spectrum(Henon(), Henon().x0.float(), steps=500, interval=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        map_spectrum(Henon(), Henon().x0.float(), steps=500, interval=2)
        map_spectrum(Henon(), steps=500, interval=10)


def test_the_seed_sets_the_start_and_nothing_else():
    one = map_spectrum(Henon(), steps=50, seed=3)
    assert np.array_equal(one.running, map_spectrum(Henon(), steps=50, seed=3).running)
    assert not np.array_equal(one.finite_time, map_spectrum(Henon(), steps=50, seed=4).finite_time)


# -- bad input: one line each -------------------------------------------------------------------------


@pytest.mark.parametrize("call, message", [
    (lambda: map_spectrum(Henon(), steps=10, k=3), r"k = 3 exceeds the dimension n = 2 of the state"),
    (lambda: map_spectrum(Henon(), steps=10, k=0), r"k must be a positive integer, got 0"),
    (lambda: map_spectrum(Henon(), steps=0), r"steps must be a positive integer, got 0"),
    (lambda: map_spectrum(Henon(), steps=2.5), r"steps must be a positive integer, got 2.5"),
    (lambda: map_spectrum(Henon(), steps=10, interval=0), r"interval must be a positive integer, got 0"),
    (lambda: map_spectrum(Henon(), steps=10, transient=-1), r"transient must be a non-negative integer, got -1"),
    (lambda: flow_spectrum(Lorenz(), dt=0.0, steps=10), r"dt must be a positive finite number, got 0.0"),
    (lambda: flow_spectrum(Lorenz(), dt=-0.01, steps=10), r"dt must be a positive finite number, got -0.01"),
    (lambda: flow_spectrum(Lorenz(), dt=float("nan"), steps=10), r"dt must be a positive finite number, got nan"),
    (lambda: map_spectrum(Henon(), [0.0, float("nan")], steps=10), r"x0 has non-finite entries: \[0.0, nan\]"),
    (lambda: map_spectrum(Henon(), torch.zeros(2, 2), steps=10),
     r"x0 must be one state of shape \[n\], got shape \(2, 2\)"),
    (lambda: map_spectrum(Lorenz(), steps=10), r"Lorenz\(.*\) is a flow, not a map: use flow_spectrum"),
    (lambda: flow_spectrum(Henon(), dt=0.1, steps=10), r"Henon\(a=1.4, b=0.3\) is a map, not a flow: use map_spectrum"),
    (lambda: map_spectrum(lambda x: x, steps=10), r"x0 is required: .* has no default start x0"),
    (lambda: map_spectrum(Henon(), [10.0, 10.0], steps=40, interval=5),
     r"the state is not finite after step 10: the trajectory diverged"),
    (lambda: map_spectrum(lambda x: x, [1.0], steps=20, interval=5, jvp=lambda x, V: 1e100 * V),
     r"the tangent vectors overflowed by step 5: re-orthonormalize more often \(a smaller interval than 5\)"),
])
def test_bad_input_gets_a_one_line_error(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


def test_bad_training_input(gd_quadratic):
    with pytest.raises(ValueError, match=r"k = 6 exceeds the dimension n = 5 of the state"):
        gd_spectrum(gd_quadratic, GD_LR, 6, steps=10)
    with pytest.raises(ValueError, match=r"lr must be a positive finite number, got -0.1"):
        gd_spectrum(gd_quadratic, -0.1, 2, steps=10)
    with pytest.raises(ValueError, match=r"theta must have shape \[5\], got \(4,\)"):
        gradient_flow_spectrum(gd_quadratic, 2, dt=0.1, steps=10, theta=torch.zeros(4))
    with pytest.raises(ValueError, match=r"theta has non-finite entries"):
        gd_spectrum(gd_quadratic, GD_LR, 2, steps=10, theta=torch.full((5,), float("inf")))
