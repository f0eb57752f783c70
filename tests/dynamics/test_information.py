"""Information-plane estimators against closed forms: Gaussian channels, a binary-input Gaussian channel
by quadrature, the exact entropy of a 1D Gaussian mixture; their bounds; and the training driver."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.spatial.distance import cdist
from scipy.special import logsumexp
from sklearn.datasets import load_digits
from torch import nn

import dynamics.information as information
from dynamics.information import binning_information, kde_information, layer_information, track

LN2 = math.log(2)


def gaussian_channel_information(d: int, ratio: float) -> float:
    """I(X; X + N(0, sigma^2 I)) in bits for X ~ N(0, s^2 I_d), ratio = s^2 / sigma^2."""
    return d / 2 * math.log2(1 + ratio)


def kl_bound_limit(d: int, ratio: float) -> float:
    """The pairwise-KL bound on the same channel as m -> inf, bits: -E_x log E_x' exp(-|x - x'|^2 / 2 sigma^2)
    = d/2 [log(1 + r) + r / (1 + r)] nats (Gaussian integrals), i.e. the truth + d/2 r/(1 + r) nats."""
    return d / 2 * (math.log(1 + ratio) + ratio / (1 + ratio)) / LN2


def binary_gaussian_channel_information(mu: float) -> float:
    """I(T;Y) in bits for Y = +-1 equiprobable, T = mu Y + N(0, 1): H(T) by quadrature minus H(N(0, 1))."""
    def integrand(t):
        p = 0.5 * (stats.norm.pdf(t, -mu) + stats.norm.pdf(t, mu))
        return -p * math.log2(p)
    H_T = integrate.quad(integrand, -mu - 12, mu + 12, limit=200)[0]
    return H_T - 0.5 * math.log2(2 * math.pi * math.e)


def mixture_information(x: np.ndarray, noise_variance: float) -> float:
    """Exact I(X; X + N(0, sigma^2)) in bits for X uniform over the 1D points x: the mixture's entropy on a
    fine grid (trapezoid) minus the noise's."""
    sigma = math.sqrt(noise_variance)
    t = np.linspace(x.min() - 10 * sigma, x.max() + 10 * sigma, 40001)
    log_p = logsumexp(-(t[:, None] - x[None, :]) ** 2 / (2 * noise_variance), axis=1) - math.log(len(x)) \
        - 0.5 * math.log(2 * math.pi * noise_variance)
    h = -np.trapezoid(np.exp(log_p) * log_p, t)
    return (h - 0.5 * math.log(2 * math.pi * math.e * noise_variance)) / LN2


def label_entropy(y: np.ndarray) -> float:
    p = np.unique(y, return_counts=True)[1] / len(y)
    return float(-(p * np.log2(p)).sum())


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("ratio", [0.25, 1.0, 4.0, 16.0])
def test_kde_bound_is_above_the_gaussian_channel_information(d, ratio):
    # The KDE's model exactly: the noiseless X are the mixture's centres, noise_variance = sigma^2.
    m, sigma2 = 2000, 0.5
    X = np.random.default_rng(d * 100 + int(ratio * 4)).normal(0, math.sqrt(ratio * sigma2), (m, d))
    info = kde_information(X, np.zeros(m, dtype=int), noise_variance=sigma2)
    true = gaussian_channel_information(d, ratio)
    assert true < info.I_XT <= true + d / (2 * LN2)  # above, by less than d/2 nats
    assert info.I_XT == pytest.approx(kl_bound_limit(d, ratio), abs=0.1)
    assert info.I_TY == 0.0 and info.H_Y == 0.0 and info.settings["noise_variance"] == sigma2


@pytest.mark.parametrize("ratio", [0.25, 1.0, 16.0])
def test_kde_bound_is_above_the_exact_information_of_its_own_mixture(ratio):
    x = np.random.default_rng(7).normal(0, math.sqrt(ratio), 500)
    exact = mixture_information(x, 1.0)
    bound = kde_information(x[:, None], np.zeros(len(x), dtype=int), noise_variance=1.0).I_XT
    assert exact < bound < exact + 1 / (2 * LN2)


@pytest.mark.parametrize("mu", [0.5, 1.0])
def test_kde_on_class_means_bounds_the_binary_gaussian_channel(mu):
    # T constant within each class: H_upper(T|y) is the exact component entropy, so I_TY = I_XT >= the truth.
    y = np.random.default_rng(1).integers(0, 2, 1000)
    info = kde_information(((2 * y - 1) * mu)[:, None], y, noise_variance=1.0)
    true = binary_gaussian_channel_information(mu)
    assert info.I_TY == pytest.approx(info.I_XT, abs=1e-12)
    assert true < info.I_TY <= info.H_Y == pytest.approx(label_entropy(y))


def test_kde_chunks_agree_with_saxe_et_al_dense_formula(monkeypatch):
    # Saxe et al.'s form in nats: H_upper = d/2 + d/2 log(2 pi sigma^2) - mean_i [lse_j(-D_ij / 2 sigma^2) - log m].
    rng = np.random.default_rng(3)
    T, y, var = rng.normal(size=(97, 5)), rng.integers(0, 4, 97), 0.7

    def h_upper(A):
        lse = logsumexp(-cdist(A, A, "sqeuclidean") / (2 * var), axis=1) - math.log(len(A))
        return A.shape[1] / 2 * (1 + math.log(2 * math.pi * var)) - lse.mean()

    H_T, H_given_X = h_upper(T), T.shape[1] / 2 * math.log(2 * math.pi * math.e * var)
    H_given_Y = sum(np.mean(y == c) * h_upper(T[y == c]) for c in np.unique(y))
    monkeypatch.setattr(information, "_KDE_ROWS_BUDGET", 3 * 97)  # chunks of 3 rows
    info = kde_information(T, y, noise_variance=var)
    assert info.I_XT == pytest.approx((H_T - H_given_X) / LN2, rel=1e-12)
    assert info.I_TY == pytest.approx((H_T - H_given_Y) / LN2, rel=1e-12)


@pytest.mark.parametrize("mu", [0.5, 1.0])
def test_binning_converges_on_the_binary_gaussian_channel(mu):
    true = binary_gaussian_channel_information(mu)
    settings = [(500, 4), (10_000, 16), (200_000, 64)]  # samples and bins grow together
    errors = np.empty((4, len(settings)))
    for seed in range(4):
        rng = np.random.default_rng(seed)
        for j, (m, bins) in enumerate(settings):
            y = rng.integers(0, 2, m)
            T = ((2 * y - 1) * mu + rng.normal(size=m))[:, None]
            errors[seed, j] = abs(binning_information(T, y, bins=bins).I_TY - true)
    mean_error = errors.mean(0)
    assert np.all(np.diff(mean_error) < 0), mean_error
    assert np.all(errors[:, -1] < 0.01) and mean_error[-1] < mean_error[0] / 5


def test_binning_gives_H_Y_when_the_classes_are_separated():
    for m in (100, 1000, 10_000):
        y = np.random.default_rng(m).integers(0, 2, m)
        T = (y + 0.01 * np.random.default_rng(m + 1).normal(size=m))[:, None]
        for bins in (2, 10, 100):
            info = binning_information(T, y, bins=bins)
            assert info.I_TY == pytest.approx(info.H_Y, abs=1e-12) and info.H_Y == pytest.approx(label_entropy(y))
        assert abs(info.H_Y - 1) < 2 / math.sqrt(m)  # -> H(Y) = 1 bit


def test_binning_I_XT_is_the_entropy_of_the_bins_until_the_examples_run_out():
    T = np.random.default_rng(0).random((20_000, 1))
    for bins in (4, 16, 64):  # m >> bins: T_binned is uniform over the bins
        assert binning_information(T, np.zeros(len(T)), bins=bins, range_=(0, 1)).I_XT == \
            pytest.approx(math.log2(bins), abs=0.01)
    few = T[:1000]  # bins >> m: every example its own symbol
    assert binning_information(few, np.zeros(1000), bins=10**9, range_=(0, 1)).I_XT == pytest.approx(math.log2(1000))
    assert binning_information(np.full((5, 3), 2.0), np.arange(5), bins=7).I_XT == 0.0  # constant T: one symbol


@pytest.mark.parametrize("seed", range(6))
def test_estimates_respect_the_information_bounds(seed):
    rng = np.random.default_rng(seed)
    m, d, k = int(rng.integers(2, 300)), int(rng.integers(1, 6)), int(rng.integers(1, 11))
    T, y = rng.normal(size=(m, d)), rng.integers(0, k, m)
    if seed % 2:
        T = np.round(T)  # few distinct values, so bins and kernels are shared
    H_Y = label_entropy(y)
    for bins in (1, 2, 5, 30, 1000):
        info = binning_information(T, y, bins=bins)
        assert -1e-12 <= info.I_TY <= min(H_Y, info.I_XT) + 1e-12 and info.I_XT <= math.log2(m) + 1e-12
    for var in (1e-3, 0.1, 10.0):
        info = kde_information(T, y, noise_variance=var)
        assert info.I_TY <= H_Y + 1e-12 and 0 <= info.I_XT <= math.log2(m) + 1e-12


def test_layer_information_records_the_settings_it_used():
    rng = np.random.default_rng(0)
    acts = {"a": rng.uniform(-0.5, 0.8, (50, 3)), "b": torch.tanh(torch.randn(50, 4, dtype=torch.float64))}
    y = rng.integers(0, 3, 50)
    out = layer_information(acts, y, bins=10)
    assert list(out) == ["a", "b"] and out["a"].method == "binning"
    assert out["a"].settings == {"bins": 10, "range": [acts["a"].min(), acts["a"].max()], "range_observed": True}
    assert out["b"].I_TY == binning_information(acts["b"].numpy(), y, bins=10).I_TY
    fixed = layer_information(acts, y, range_=(-1, 1))["a"].settings
    assert fixed == {"bins": 30, "range": [-1.0, 1.0], "range_observed": False}
    kde = layer_information(acts, y, method="kde")["b"]
    assert kde.settings["noise_variance"] == 0.1 and "not a bound" in kde.settings["I_TY"]
    json.dumps(kde.to_dict())


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    X = torch.tensor(data.data[:300] / 16.0, dtype=torch.float32)
    return X, torch.tensor(data.target[:300])


def tiny_tanh_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 12), nn.Tanh(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 10))


def test_track_records_the_tanh_layers_of_a_digits_mlp(digits):
    X, y = digits
    model = tiny_tanh_mlp()
    plane = track(model, X, y, torch.optim.Adam(model.parameters(), lr=0.02), epochs=25, every=10, bins=30,
                  range_=(-1, 1))
    np.testing.assert_array_equal(plane.epochs, [0, 10, 20, 25])
    assert plane.layers == ["1", "3"] and plane.I_XT.shape == plane.I_TY.shape == (4, 2) and plane.loss.shape == (4,)
    assert plane.settings == {"bins": 30, "range_": (-1, 1), "batch_size": None, "seed": 0, "every": 10}
    assert plane.ranges is None and plane.H_Y == pytest.approx(label_entropy(y.numpy()))
    assert np.all(plane.I_TY <= plane.H_Y + 1e-12) and np.all(plane.I_XT <= math.log2(300) + 1e-12)
    assert plane.loss[-1] < 0.5 * plane.loss[0]
    assert all(not module._forward_hooks for module in model.modules())
    with torch.no_grad():  # the hooks saw what the sliced network computes now
        for col, depth in enumerate((2, 4)):
            T = model[:depth](X).double().numpy()
            assert plane.I_XT[-1, col] == binning_information(T, y, range_=(-1, 1)).I_XT
            assert plane.I_TY[-1, col] == binning_information(T, y, range_=(-1, 1)).I_TY
    json.dumps(plane.to_dict())


def test_track_with_kde_minibatches_and_named_layers(digits):
    X, y = digits
    model = tiny_tanh_mlp()
    plane = track(model, X, y, torch.optim.SGD(model.parameters(), lr=0.1), epochs=3, batch_size=64, seed=1,
                  method="kde", layers=["3", "4"], noise_variance=0.05)
    assert plane.layers == ["3", "4"] and plane.I_XT.shape == (4, 2) and plane.ranges is None
    assert plane.settings == {"noise_variance": 0.05, "batch_size": 64, "seed": 1, "every": 1}
    assert np.all(plane.I_TY <= plane.H_Y + 1e-12)
    model = tiny_tanh_mlp()
    observed = track(model, X, y, torch.optim.SGD(model.parameters(), lr=0.1), epochs=1)
    assert observed.ranges.shape == (2, 2, 2) and np.all(observed.ranges[..., 0] < observed.ranges[..., 1])


def test_track_records_nan_where_the_activations_are_not_finite(digits):
    X, y = digits
    model = nn.Sequential(nn.Linear(64, 4), nn.ReLU(), nn.Linear(4, 10))
    with torch.no_grad():
        model[0].weight[0, 0] = math.nan
    plane = track(model, X, y, torch.optim.SGD(model.parameters(), lr=0.1), epochs=2, every=2)
    assert plane.layers == ["1"] and np.isnan(plane.I_XT).all() and np.isnan(plane.I_TY).all()
    assert plane.to_dict()["I_XT"] == [[None], [None]] and np.isnan(plane.ranges).all()
    json.dumps(plane.to_dict(), allow_nan=False)


def test_bad_input_is_refused_with_a_clear_message(digits):
    T, y = np.zeros((10, 2)), np.zeros(10)
    with pytest.raises(ValueError, match=r"labels for the 10 rows of T, got shape \(9,\)"):
        binning_information(T, y[:9])
    with pytest.raises(ValueError, match=r"y must be \[m\] labels"):
        kde_information(T, np.zeros(11))
    with pytest.raises(ValueError, match="must be \\[m, d\\]"):
        binning_information(np.zeros(10), y)
    with pytest.raises(ValueError, match="bins must be a positive integer, got 0"):
        binning_information(T, y, bins=0)
    with pytest.raises(ValueError, match="lo < hi"):
        binning_information(T, y, range_=(1, 1))
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="noise_variance must be a positive finite number"):
            kde_information(T, y, noise_variance=bad)
    with pytest.raises(ValueError, match="non-finite"):
        kde_information(np.full((10, 2), np.nan), y)
    with pytest.raises(ValueError, match="method must be 'binning' or 'kde'"):
        layer_information({"a": T}, y, method="knn")
    with pytest.raises(ValueError, match=r"unknown settings \['noise_variance'\]"):
        layer_information({"a": T}, y, noise_variance=0.1)
    X, labels = digits
    model = tiny_tanh_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="X has 300 examples but y has 299"):
        track(model, X, labels[:299], opt, epochs=1)
    with pytest.raises(ValueError, match="unknown: \\['9'\\]"):
        track(model, X, labels, opt, epochs=1, layers=["9"])
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        track(model, X, labels, opt, epochs=1, every=0)
    with pytest.raises(ValueError, match="no nn.Tanh or nn.ReLU"):
        track(nn.Linear(64, 10), X, labels, opt, epochs=1)
    shared = nn.Tanh()  # one module for two layers: its outputs cannot be told apart
    with pytest.raises(ValueError, match="module '1' ran 2 times in one forward pass"):
        track(nn.Sequential(nn.Linear(64, 8), shared, nn.Linear(8, 10), shared), X, labels, opt, epochs=1)
    with pytest.raises(ValueError, match="module 'unused' ran 0 times"):
        track(Unused(), X, labels, opt, epochs=0, layers=["unused"])
    with pytest.raises(ValueError, match="range_ must be finite"):
        track(model, X, labels, opt, epochs=1, range_=(0, math.inf))


class Unused(nn.Module):
    """A linear model with a tanh that never runs."""

    def __init__(self):
        super().__init__()
        self.linear, self.unused = nn.Linear(64, 10), nn.Tanh()

    def forward(self, x):
        return self.linear(x)
