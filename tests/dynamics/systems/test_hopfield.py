"""Hopfield networks against the AGS capacity theory, the energy theorem, closed forms and hand examples."""

import math

import numpy as np
import pytest

from dynamics.systems.hopfield import ags_critical_load, ags_flipped, capacity, energy, modern_retrieve, retrieve, store


def random_patterns(P: int, N: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array([-1.0, 1.0]), size=(P, N))


def corrupt(X: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Each row with round(fraction N) bits, chosen at random, flipped."""
    rng = np.random.default_rng(seed)
    Y = X.copy()
    for row in Y:
        row[rng.choice(X.shape[1], round(fraction * X.shape[1]), replace=False)] *= -1
    return Y


def test_ags_theory_reproduces_the_published_critical_load():
    # Amit, Gutfreund & Sompolinsky (1987): alpha_c = 0.138 with overlap m = 0.967, i.e. (1 - m)/2 ~ 1.6% flipped
    alpha_c, flipped_c = ags_critical_load()
    assert alpha_c == pytest.approx(0.138, abs=5e-4)
    assert flipped_c == pytest.approx((1 - 0.967) / 2, abs=5e-4)
    # the retrieval root meets the unstable one at alpha_c, a square-root fold: 1% below it, 30% fewer flips
    assert ags_flipped(alpha_c * (1 - 1e-8)) == pytest.approx(flipped_c, rel=1e-3)
    assert ags_flipped(0.99 * alpha_c) == pytest.approx(0.70 * flipped_c, rel=0.01)
    assert math.isnan(ags_flipped(1.01 * alpha_c))
    assert ags_flipped(0.10) == pytest.approx(1e-3, rel=0.05)  # "about 0.1 percent" at alpha = 0.10
    assert ags_flipped(0.05) < 1e-5 and ags_flipped(0.0) == 0.0


def test_capacity_at_n_1000_follows_ags():
    """The issue's thresholds, from AGS at T = 0: at alpha = 0.05 the retrieval state is the pattern
    itself to 4e-6 flipped per bit; at 0.10 it sits ~0.1% away; above alpha_c = 0.138 it is gone and
    the dynamics run far from the pattern.

    At alpha = 0.05 AGS expects 0.19 flipped bits among the 50 x 1000 (so none with probability
    ~0.83): seed 0 flips none; over seeds 0-9 three trials flip exactly one bit, as expected.
    At 0.10 seeds 0-9 give 0.07-0.14%, at 0.16 8-15%, far from the thresholds.
    """
    cap = capacity(1000, [0.05, 0.10, 0.16], trials=1, seed=0)
    assert cap.patterns.tolist() == [50, 100, 160]
    assert cap.converged.tolist() == [1.0, 1.0, 1.0]
    assert cap.flipped_max[0] == 0.0 and cap.retrieved[0] == 1.0
    assert cap.flipped_mean[1] < 0.005
    assert 0.5 < cap.flipped_mean[1] / ags_flipped(0.10) < 2.0  # measured 0.091% against 0.100%
    assert cap.flipped_mean[2] > 0.05
    d = cap.to_dict()
    assert d["theory"][2] is None and d["flipped_mean"] == cap.flipped_mean.tolist()
    # each load's trials are seeded by (seed, P, trial): asking for one load alone gives the same numbers
    assert capacity(1000, [0.10], seed=0).flipped_mean[0] == cap.flipped_mean[1]


def replay_async(W: np.ndarray, S0: np.ndarray, orders: np.ndarray) -> tuple[np.ndarray, float]:
    """Asynchronous updates one unit at a time along the recorded orders, written out plainly; returns
    the final states and the largest rise of E = -1/2 s^T W s over any single update of any run."""
    S = S0.copy()
    E = -0.5 * np.sum((S @ W) * S, axis=1)
    worst_rise = -np.inf
    for order in orders:
        for i in order:
            h = S @ W[i]
            S[:, i] = np.where(h > 0, 1.0, np.where(h < 0, -1.0, S[:, i]))
            E_new = -0.5 * np.sum((S @ W) * S, axis=1)
            worst_rise = max(worst_rise, float(np.max(E_new - E)))
            E = E_new
    return S, worst_rise


def test_energy_never_increases_along_asynchronous_dynamics():
    N, P, R = 200, 40, 16
    W = store(random_patterns(P, N, seed=1))
    S0 = random_patterns(R, N, seed=2)  # random starts
    out = retrieve(W, S0, mode="async", seed=3, track_energy=True)
    assert out.converged.all() and out.sweeps.max() > 2
    final, worst_rise = replay_async(W, S0, out.orders)
    assert worst_rise <= 1e-12  # after every single-unit update
    np.testing.assert_array_equal(final, out.states)  # a run that stopped early stays put: a fixed point
    assert np.all(np.diff(out.energies, axis=0) <= 1e-12)
    assert out.energies.shape == (out.sweeps.max() + 1, R)
    np.testing.assert_allclose(out.energies[-1], energy(W, out.states), rtol=0, atol=1e-12)
    assert np.all(out.energies[-1] < out.energies[0])


def test_low_load_stored_patterns_are_fixed_points_and_corrupted_ones_are_retrieved():
    N, P = 1000, 10  # alpha = 0.01
    X = random_patterns(P, N, seed=4)
    W = store(X)
    for mode in ("async", "sync"):
        fixed = retrieve(W, X, mode=mode)
        np.testing.assert_array_equal(fixed.states, X)
        assert fixed.converged.all() and fixed.sweeps.tolist() == [1] * P
    noisy = corrupt(X, 0.10, seed=5)
    out = retrieve(W, noisy, mode="async", seed=6)
    np.testing.assert_array_equal(out.states, X)
    assert out.converged.all() and not out.cycle.any()
    # one state [N] works too
    np.testing.assert_array_equal(retrieve(W, noisy[0]).states, X[:1])


def test_synchronous_dynamics_end_in_a_two_cycle_where_asynchronous_converges():
    W = np.array([[0.0, 1.0], [1.0, 0.0]])
    start = np.array([[1.0, -1.0]])
    sync = retrieve(W, start, mode="sync", track_energy=True)
    # s(1) = sign(W s(0)) = (-1, 1), s(2) = (1, -1) = s(0) != s(1): a 2-cycle, closed at step 2
    assert sync.cycle.tolist() == [True] and sync.converged.tolist() == [False]
    assert sync.sweeps.tolist() == [2] and sync.states.tolist() == [[1, -1]]
    assert sync.energies[:, 0].tolist() == [1.0, 1.0, 1.0]  # stuck at E = -s1 s2 = 1, never descending
    assert sync.to_dict()["cycle"] == [True] and sync.to_dict()["orders"] is None
    for seed in range(4):
        asy = retrieve(W, start, mode="async", seed=seed, track_energy=True)
        # whichever unit goes first copies the other: (1, 1) or (-1, -1), both at E = -1
        assert asy.converged.tolist() == [True] and asy.states[0, 0] == asy.states[0, 1]
        assert asy.energies[-1, 0] == -1.0


def test_hebbian_weights_equal_the_outer_product_sum():
    P, N = 7, 30
    X = random_patterns(P, N, seed=7)
    W = store(X)
    outer = sum(np.outer(x, x) for x in X) / N
    reference = X.T @ X / N - (P / N) * np.eye(N)
    np.testing.assert_allclose(W, outer - np.diag(np.diag(outer)), rtol=0, atol=1e-15)
    np.testing.assert_allclose(W, reference, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(W, W.T)
    assert np.all(np.diag(W) == 0) and W.dtype == np.float64


def integer_dynamics(X: np.ndarray, s: np.ndarray, orders=None, max_sweeps: int = 100) -> np.ndarray:
    """The reference: fields from the integer Hebbian sums J = X^T X - P I in Python ints, where a tie is 0."""
    N = X.shape[1]
    J = [[0 if i == j else int(sum(int(x[i]) * int(x[j]) for x in X)) for j in range(N)] for i in range(N)]
    s = [int(v) for v in s]

    def step(i, state):
        h = sum(J[i][j] * state[j] for j in range(N))
        return state[i] if h == 0 else (1 if h > 0 else -1)

    previous = None
    for sweep in range(max_sweeps):
        if orders is None:  # synchronous: fixed point or 2-cycle
            new = [step(i, s) for i in range(N)]
            if new == s or new == previous:
                return np.array(new, dtype=float)
            previous, s = s, new
            continue
        changed = False
        for i in orders[sweep]:
            new = step(i, s)
            changed |= new != s[i]
            s[i] = new
        if not changed:
            break
    return np.array(s, dtype=float)


def test_a_zero_field_keeps_the_state_exactly():
    rng = np.random.default_rng(0)
    mismatches_before_the_fix = 0
    for _ in range(120):  # trial 105 has a field of exactly 0 that float sums of 1/N computed as -2.8e-17
        X = rng.choice(np.array([-1.0, 1.0]), size=(4, 22))
        W = store(X)
        mismatches_before_the_fix += int(np.any((W @ X[0] != 0) & ((X.T @ X - 4 * np.eye(22)) @ X[0] == 0)))
        sync = retrieve(W, X[:1], mode="sync")
        np.testing.assert_array_equal(sync.states[0], integer_dynamics(X, X[0]))
        run = retrieve(W, X[:1], mode="async", seed=3)
        np.testing.assert_array_equal(run.states[0], integer_dynamics(X, X[0], orders=run.orders))
    assert mismatches_before_the_fix > 0  # the case is in the sample


def test_modern_hopfield_retrieves_in_one_step_beyond_classical_capacity():
    N, P, beta = 128, 100, 1.0  # alpha = P/N = 0.78, far above the classical 0.138
    X = random_patterns(P, N, seed=8)
    queries = corrupt(X, 0.20, seed=9)
    out = modern_retrieve(X, queries, beta)
    err = np.abs(out - X).max(axis=1)
    assert err.max() < 1e-6
    # the softmax weight off the true pattern is <= (P - 1) exp(-beta margin), each coordinate off by <= 2
    dots = queries @ X.T
    own = np.diag(dots)
    margin = own - np.where(np.eye(P, dtype=bool), -np.inf, dots).max(axis=1)
    assert np.all(err <= 2 * (P - 1) * np.exp(-beta * margin))
    # the classical network at the same load does not retrieve them
    classical = retrieve(store(X), queries, mode="async", seed=10)
    assert np.mean(classical.states != X) > 0.1
    # beta -> 0: uniform softmax, the mean of the patterns
    np.testing.assert_allclose(modern_retrieve(X, queries, 0.0), np.broadcast_to(X.mean(0), (P, N)), rtol=0, atol=1e-15)
    np.testing.assert_allclose(modern_retrieve(X, queries[0], 1e-12), X.mean(0), rtol=0, atol=1e-9)
    # more steps from a retrieved pattern stay there
    np.testing.assert_allclose(modern_retrieve(X, queries, beta, steps=3), X, rtol=0, atol=1e-6)


def test_bad_input_is_refused_with_a_clear_message():
    X = random_patterns(3, 10, seed=11)
    with pytest.raises(ValueError, match="patterns must be a non-empty array of -1 and"):
        store(np.where(X > 0, 1.0, 0.0))
    with pytest.raises(ValueError, match=r"patterns must be \[P, N\]"):
        store(X[0])
    W = store(X)
    with pytest.raises(ValueError, match=r"S0 must be \[R, 10\]"):
        retrieve(W, X[:, :5])
    with pytest.raises(ValueError, match="S0 must be a non-empty array of -1 and"):
        retrieve(W, 0.5 * X)
    with pytest.raises(ValueError, match="W must be a square"):
        retrieve(W[:5], X)
    with pytest.raises(ValueError, match="mode must be 'async' or 'sync'"):
        retrieve(W, X, mode="parallel")
    with pytest.raises(ValueError, match="max_sweeps must be a positive integer"):
        retrieve(W, X, max_sweeps=0)
    with pytest.raises(ValueError, match=r"S must be \[R, 10\]"):
        energy(W, X[:, :4])
    with pytest.raises(ValueError, match=r"alpha = 0.0004 gives P = round\(alpha \* N\) = 0 patterns"):
        capacity(1000, [0.05, 0.0004])
    with pytest.raises(ValueError, match="trials must be a positive integer"):
        capacity(100, [0.1], trials=0)
    with pytest.raises(ValueError, match=r"queries must be \[Q, 10\]"):
        modern_retrieve(X, X[:, :3], 1.0)
    with pytest.raises(ValueError, match="beta must be finite and >= 0"):
        modern_retrieve(X, X, -1.0)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        ags_flipped(-0.1)
