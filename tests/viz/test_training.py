"""Figures of training dynamics: the drawn artists read back (lines, labels, scales)."""

import numpy as np
import pytest

from tests.viz.conftest import assert_drawn, assert_inside, texts_of
from viz import training


def test_sharpness_runs_with_their_two_over_lr_lines(tmp_path):
    from types import SimpleNamespace

    steps = np.arange(0, 100, 10)
    lam = np.c_[np.linspace(5, 21, 10), np.linspace(2, 8, 10)]
    lam[3, 0] = np.nan
    runs = [SimpleNamespace(steps=steps, sharpness=lam, loss=np.geomspace(2, 0.01, 10), lr=0.1),
            SimpleNamespace(steps=steps, sharpness=lam[:, 0] * 0.7, loss=np.geomspace(2, 0.05, 10), lr=0.15)]
    fig = training.sharpness_history(runs, path=tmp_path / "sharpness.png")
    top, bottom = fig.axes
    np.testing.assert_array_equal(top.lines[0].get_ydata().mask, np.isnan(lam[:, 0]))
    np.testing.assert_array_equal(top.lines[1].get_ydata(), lam[:, 1])
    limits = [line.get_ydata()[0] for line in top.lines if line.get_linestyle() == "--"]
    assert limits == pytest.approx([20.0, 2 / 0.15])
    assert bottom.get_yscale() == "log" and len(bottom.lines) == 2
    assert_drawn(tmp_path / "sharpness.png")
    one = training.sharpness_history(runs[1], log=False).axes
    assert len(one[0].lines) == 2 and one[1].get_yscale() == "linear"


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_a_diverged_gradient_descent_run_is_drawn_up_to_where_it_stopped(tmp_path):
    from types import SimpleNamespace

    from dynamics.descent import GDRun

    loss = np.r_[np.geomspace(2.0, 0.5, 6), [40.0, np.inf], np.full(5, np.nan)]  # finite up to step 6
    history = SimpleNamespace(steps=np.array([0, 3, 6]), sharpness=np.array([[3.0], [9.0], [30.0]]),
                              loss=loss[[0, 3, 6]], lr=0.25)
    run = GDRun(lr=0.25, loss=loss, grad_norm=np.ones(13), theta=None, steps_done=7, diverged=True,
                sharpness=history, seconds=0.0)
    fig = training.sharpness_history([run], path=tmp_path / "eos.png")
    top, bottom = fig.axes
    assert legend_texts(top) == ["lr = 0.25, diverged after step 7: lambda_max", "2/lr = 8"]
    assert top.lines[0].get_marker() == "o"  # three estimates are drawn as points, not an empty panel
    np.testing.assert_array_equal(top.lines[0].get_ydata(), [3.0, 9.0, 30.0])
    curve = bottom.lines[0].get_ydata()
    np.testing.assert_array_equal(curve.compressed(), loss[:7])  # the loss at every step, not three
    cross = bottom.lines[1]
    assert cross.get_marker() == "x" and cross.get_xydata().tolist() == [[6.0, 40.0]]
    assert legend_texts(bottom) == ["last finite loss of a diverged run"]
    assert_drawn(tmp_path / "eos.png")


def test_a_long_lyapunov_title_heads_the_figure_inside_it():
    title = "Lyapunov spectrum of lorenz (sigma 10, rho 28, beta 2.667), 3 of 3 exponents, QR every 0.5"
    fig = training.lyapunov_spectrum([0.9, 0.0, -14.6], running=np.ones((5, 3)), title=title)
    assert fig.get_suptitle() == title
    assert_inside(fig)  # wrapped, not cut off at the figure's edges
    assert title.split()[0] in [t.get_text().split()[0] for t, _ in texts_of(fig)]


def test_hopfield_capacity_draws_no_flipped_bits_at_zero_on_a_symmetric_log_axis():
    from types import SimpleNamespace

    c = SimpleNamespace(N=100, trials=5, alphas=np.array([0.05, 0.1, 0.2]), patterns=np.array([5, 10, 20]),
                        flipped_mean=np.array([0.0, 0.002, 0.3]), flipped_std=np.array([0.0, 0.001, 0.05]),
                        retrieved=np.array([1.0, 0.6, 0.0]))
    fig = training.hopfield_capacity({"N = 100": c}, critical=0.138)
    top, bottom = fig.axes
    assert top.get_yscale() == "symlog" and top.get_ylim() == (0, 1)
    assert top.get_yaxis().get_transform().linthresh == 1e-4  # one bit of N P trials = 1e-4 at P = 20
    np.testing.assert_array_equal(top.lines[0].get_ydata(), [0.0, 0.002, 0.3])  # zero drawn at zero
    assert top.get_ylabel().startswith("fraction of bits flipped")
    assert bottom.get_ylabel() == "retrieved exactly"
    assert_inside(fig)


def test_a_truncated_lyapunov_spectrum_still_moving_says_so():
    fig = training.lyapunov_spectrum([0.4, 0.17, 0.1, 0.08], running=np.ones((5, 4)),
                                     moving=[True, False, True, True], of=650)
    stem = fig.axes[0]
    assert stem.get_title() == "spectrum (the first 4 of 650; 3 not converged)"
    hollow = [line for line in stem.lines if line.get_label().startswith("still moving")][0]
    np.testing.assert_array_equal(hollow.get_xdata(), [1, 3, 4]) and hollow.get_markerfacecolor() == "white"
    assert legend_texts(stem) == ["still moving (> 10% over the last quarter)"]
    whole = training.lyapunov_spectrum([0.9, 0.0, -14.6], moving=[False] * 3, of=3).axes[0]
    assert whole.get_title() == "spectrum" and whole.get_legend() is None


def test_lyapunov_spectrum_and_convergence(tmp_path):
    exponents = np.array([0.9056, 0.0, -14.5723])
    running = exponents + np.outer(1 / np.arange(1, 51), [1.0, -0.5, 2.0])
    running[0, 1] = np.nan
    fig = training.lyapunov_spectrum(exponents, running=running, times=np.arange(1, 51) * 0.5, path=tmp_path / "lyapunov.png")
    stem, convergence = fig.axes
    markers = stem.containers[0].markerline
    np.testing.assert_array_equal(markers.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(markers.get_ydata(), exponents)
    np.testing.assert_array_equal(convergence.lines[0].get_xdata(), np.arange(1, 51) * 0.5)
    assert convergence.lines[1].get_ydata().mask[0]
    assert_drawn(tmp_path / "lyapunov.png")


def test_over_time_draws_each_run_and_the_gaps(tmp_path):
    t = np.linspace(0, 1, 11)
    gd = np.exp(-t)
    gd[4] = np.nan
    fig = training.over_time(t, {"GD": gd, "flow": np.exp(-1.01 * t)}, gaps={"GD to flow": np.abs(0.01 * t)},
                          path=tmp_path / "flow.png")
    top, bottom = fig.axes
    assert top.get_yscale() == "log" and top.lines[0].get_ydata().mask[4]
    np.testing.assert_array_equal(top.lines[1].get_ydata(), np.exp(-1.01 * t))
    gap = bottom.lines[0].get_ydata()
    assert gap.mask[0] and np.allclose(gap[1:], 0.01 * t[1:])  # a zero distance has no place on a log axis
    assert_drawn(tmp_path / "flow.png")


def test_information_plane_draws_each_layer_at_its_bits_skips_nan_and_marks_h_y(tmp_path):
    from dynamics.information import InformationPlane

    epochs = np.array([0, 5, 10, 15])
    I_XT = np.array([[2.0, 0.5], [6.0, np.nan], [7.5, 3.0], [7.0, 2.5]])
    I_TY = np.array([[0.4, 0.1], [2.0, 1.0], [3.1, 1.5], [3.2, 1.7]])
    loss = np.array([2.3, np.nan, 0.5, 0.2])
    plane = InformationPlane(epochs, ["T1", "T2"], I_XT, I_TY, loss, H_Y=3.3, method="binning",
                             settings={"bins": 30, "range_": (-1.0, 1.0)}, ranges=None, seconds=0.0)
    fig = training.information_plane(plane, title="two layers", path=tmp_path / "plane.png")
    ax, loss_ax, colorbar = fig.axes
    assert ax.get_xlabel() == "I(X;T) (bits)" and ax.get_ylabel() == "I(T;Y) (bits)" and ax.get_title() == "two layers"
    lines = {line.get_label(): line for line in ax.lines}
    for j, name in enumerate(["T1", "T2"]):
        finite = np.isfinite(I_XT[:, j])  # T2 at epoch 5 is NaN: left out, not drawn at zero
        x, y = lines[name].get_data()
        np.testing.assert_array_equal(x, I_XT[finite, j])
        np.testing.assert_array_equal(y, I_TY[finite, j])
        points = [c for c in ax.collections if c.get_label() == f"_{name} points"][0]
        np.testing.assert_array_equal(points.get_offsets(), np.c_[I_XT[finite, j], I_TY[finite, j]])
        np.testing.assert_array_equal(points.get_array(), epochs[finite])  # coloured by epoch
        assert lines[f"_{name} start"].get_xydata().tolist() == [[I_XT[0, j], I_TY[0, j]]]
    assert len(lines["T2"].get_xdata()) == 3 and 0.0 not in lines["T2"].get_xdata()
    h_y = lines["H(Y) = 3.3 bits"]
    assert list(h_y.get_ydata()) == [3.3, 3.3] and h_y.get_linestyle() == "--"
    assert colorbar.get_ylabel() == "epoch" and colorbar.get_ylim() == (0, 15)
    assert ax.get_legend().get_title().get_text() == "binning, 30 bins over (-1, 1)"
    assert len(ax.texts) == 0  # no names printed over the points, where layers ending together would overprint
    assert lines["_T2 start"].get_marker() == "o" and lines["_T2 end"].get_marker() == "s"
    assert lines["_T2 end"].get_xydata().tolist() == [[I_XT[3, 1], I_TY[3, 1]]]  # its last finite point
    assert legend_texts(ax)[-2:] == ["epoch 0", "epoch 15"]  # what the ring and the box mean
    drawn = loss_ax.lines[0].get_ydata()
    assert loss_ax.get_yscale() == "log" and drawn.mask[1] and list(drawn[[0, 2, 3]]) == [2.3, 0.5, 0.2]
    assert_drawn(tmp_path / "plane.png")

    kde = InformationPlane(epochs, ["T1", "T2"], I_XT, I_TY, loss, H_Y=3.3, method="kde",
                           settings={"noise_variance": 0.1}, ranges=None, seconds=0.0)
    fig = training.information_plane(kde, loss=False)
    assert len(fig.axes) == 2  # the plane and its colour bar
    assert fig.axes[0].get_legend().get_title().get_text() == "KDE, noise variance 0.1"


def _regime(times, loss, linear, gap):
    from types import SimpleNamespace

    return SimpleNamespace(times=np.array(times), loss=np.array(loss), linear_loss=np.array(linear),
                           gap=np.array(gap))


def test_kernel_regime_draws_loss_linearization_gap_and_spectrum(tmp_path):
    runs = {"narrow": _regime([0, 1, 2, 3], [1.0, 0.5, 0.3, 0.2], [1.0, 0.45, 0.25, np.nan], [0, 0.01, 0.02, 0.04]),
            "wide": _regime([0, 2, 4, 6], [1.0, 0.4, 0.2, 0.1], [1.0, 0.41, 0.2, 0.1], [0, 1e-3, 2e-3, 2e-3])}
    lam = np.array([1e-15, 0.1, 2.0, 30.0])
    fig = training.kernel_regime(runs, eigenvalues=lam, path=tmp_path / "regime.png")
    left, middle, right = fig.axes
    lines = [line for line in left.get_lines() if len(line.get_xdata())]
    assert len(lines) == 4
    np.testing.assert_array_equal(lines[0].get_ydata(), runs["narrow"].loss)
    dashed = np.ma.masked_invalid(lines[1].get_ydata())
    assert lines[1].get_linestyle() == "--" and dashed.mask[3] and dashed[1] == 0.45  # NaN left out
    gaps = middle.get_lines()
    np.testing.assert_array_equal(gaps[0].get_xdata(), [1, 2, 3])  # the zero gap at t = 0 is not drawn on a log axis
    np.testing.assert_array_equal(gaps[1].get_ydata(), [1e-3, 2e-3, 2e-3])
    spectrum = right.get_lines()[0]
    np.testing.assert_array_equal(spectrum.get_ydata(), [30.0, 2.0, 0.1])  # descending, the zero left out
    assert right.get_yscale() == "log" and middle.get_yscale() == "log"
    assert_drawn(tmp_path / "regime.png")


def test_width_scaling_draws_seeds_means_and_the_fit(tmp_path):
    from types import SimpleNamespace

    from dynamics.linearized import power_law

    widths = np.array([16, 64, 256])
    gap = np.array([[0.1, 0.12], [0.03, 0.028], [0.008, 0.009]])
    change = np.array([[0.3, 0.32], [0.1, 0.1], [0.03, 0.02]])
    rate, prefactor = power_law(widths, gap.mean(1))
    kernel_rate, _ = power_law(widths, change.mean(1))
    sweep = SimpleNamespace(widths=widths, max_gap=gap, kernel_change=change, rate=rate, prefactor=prefactor,
                            kernel_rate=kernel_rate)
    fig = training.width_scaling(sweep, path=tmp_path / "widths.png")
    ax = fig.axes[0]
    means, seeds, kmeans, kseeds, fit = ax.get_lines()
    np.testing.assert_allclose(means.get_ydata(), gap.mean(1))
    np.testing.assert_allclose(sorted(seeds.get_ydata()), sorted(gap.reshape(-1)))
    np.testing.assert_allclose(kmeans.get_ydata(), change.mean(1))
    x = fit.get_xdata()
    np.testing.assert_allclose(fit.get_ydata(), prefactor * x ** -rate)
    assert f"width^-{rate:.2f}" in fit.get_label()
    assert ax.get_xscale() == ax.get_yscale() == "log"
    drawn_labels = [t.get_text() for t in ax.get_xticklabels(minor=True) + ax.get_xticklabels() if t.get_text()]
    assert drawn_labels == [f"{w:g}" for w in sweep.widths]  # each width named once, nothing else
    assert_drawn(tmp_path / "widths.png")
