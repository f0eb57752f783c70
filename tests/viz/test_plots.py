"""Figures: they draw what they are given, mask what is not finite, and are not blank."""

import numpy as np
import pytest

import landscape
from landscape.curvature.operators import MatrixOperator
from tests.viz.conftest import TRAJECTORY, assert_drawn, assert_inside, drawn, runs_into, synthetic_scan
from viz import plots


def filled(ax):
    """The filled contour set of a contour plot (the shading of missing points comes before it)."""
    return next(c for c in ax.collections if hasattr(c, "levels"))


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
            for t in legend.get_texts()]


def test_spectral_density_figure(tmp_path):
    rho = landscape.density(MatrixOperator(np.diag(np.r_[np.linspace(-1, 1, 50), 8.0, 12.0])), probes=4, steps=20)
    fig = plots.spectral_density(rho, eigenvalues=[12.0, 8.0], path=tmp_path / "density.png")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    x, y = ax.lines[0].get_data()
    grid, values = rho.curve()
    assert np.allclose(x, grid) and np.allclose(y, np.maximum(values, values.max() * 1e-10))
    assert [line.get_xdata()[0] for line in ax.lines[1:]] == [12.0, 8.0]
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [
        f"SLQ density (4 probes, broadened by sigma = {rho.default_sigma():.2g})", "Lanczos eigenvalues"]
    renderer = drawn(fig)
    assert legend.get_window_extent(renderer).y1 <= ax.get_window_extent(renderer).y0  # below the plot, not on a peak
    assert_drawn(tmp_path / "density.png", (516, 768))
    assert plots.spectral_density(rho, log=False).axes[0].get_yscale() == "linear"


def test_height_clips_then_takes_log10():
    v = np.array([0.5, 2.0, 100.0, np.nan, -1.0])
    np.testing.assert_array_equal(plots.height(v), [0.5, 2.0, 100.0, np.nan, -1.0])
    np.testing.assert_allclose(plots.height(v, zmax=10.0), [0.5, 2.0, 10.0, np.nan, -1.0])
    np.testing.assert_allclose(plots.height(v, log=True, zmax=10.0), np.log10([0.5, 2.0, 10.0, np.nan, 0.5]))
    with pytest.raises(ValueError, match="log scale needs some positive values"):
        plots.height([-1.0, 0.0], log=True)


@pytest.mark.parametrize("shape", [(9,), (7, 4), (5, 4, 3)])
def test_curve_draws_the_cuts_through_the_centre(shape, tmp_path):
    scan = synthetic_scan(shape, nan=((2, 2, 1), (1, 1, 1)))
    centre = tuple(int(np.argmin(np.abs(a))) for a in scan.axes)
    fig = plots.cuts(scan, log=True, path=tmp_path / "curve.png")
    loss_ax, accuracy_ax = fig.axes
    assert loss_ax.get_ylabel() == "loss" and loss_ax.get_yscale() == "log" and accuracy_ax.get_ylabel() == "accuracy"
    assert len(loss_ax.lines) == len(shape)
    for a, line in enumerate(loss_ax.lines):
        index = list(centre)
        index[a] = slice(None)
        expected = scan.values["loss"][tuple(index)]
        np.testing.assert_array_equal(line.get_xdata(), scan.axes[a])
        y = line.get_ydata()
        assert isinstance(y, np.ma.MaskedArray)
        np.testing.assert_array_equal(y.mask, ~np.isfinite(expected))  # NaN masked, not drawn as zero
        np.testing.assert_array_equal(y.compressed(), expected[np.isfinite(expected)])
    assert_drawn(tmp_path / "curve.png")


@pytest.mark.parametrize("shape", [(7, 4), (7, 4, 3)])
def test_contour_has_log_spaced_levels_masks_nan_and_draws_the_trajectory(shape, tmp_path):
    scan = synthetic_scan(shape, nan=((1, 2, 1),), trajectory=TRAJECTORY)
    fig = plots.contour(scan, levels=12, path=tmp_path / "contour.png")
    ax = fig.axes[0]
    levels = filled(ax).levels
    v = scan.values["loss"] if len(shape) == 2 else scan.values["loss"][:, :, 0]  # z = -0.2 is nearest 0
    finite = v[np.isfinite(v)]
    assert levels[0] == pytest.approx(finite.min()) and levels[-1] == pytest.approx(finite.max())
    ratios = levels[1:] / levels[:-1]
    assert np.allclose(ratios, ratios[0])  # geometric: log-spaced
    if len(shape) == 3:
        assert "slice z = -0.2" in ax.get_title()
    path, start, end = ax.lines[:3]
    np.testing.assert_array_equal(np.c_[path.get_data()], np.array(TRAJECTORY))
    assert (start.get_xdata()[0], start.get_ydata()[0]) == tuple(TRAJECTORY[0])
    assert (end.get_xdata()[0], end.get_ydata()[0]) == tuple(TRAJECTORY[-1])
    assert ax.get_xlabel().startswith("x") and ax.get_ylabel().startswith("y")
    assert_drawn(tmp_path / "contour.png")
    linear = plots.contour(scan, log=False, trajectory=False, levels=5).axes[0]
    assert np.allclose(np.diff(filled(linear).levels), np.diff(filled(linear).levels)[0])
    assert len(linear.lines) == 1  # only the centre mark
    assert_inside(fig)


def test_contour_clips_at_zmax_and_says_when_nothing_is_finite():
    scan = synthetic_scan((7, 4))
    ax = plots.contour(scan, zmax=3.5).axes[0]
    assert filled(ax).levels[-1] == pytest.approx(3.5)
    scan.values["loss"][:] = np.nan
    assert plots.contour(scan).axes[0].texts[0].get_text() == "no finite values"


def test_surface_does_not_draw_nan_as_zero():
    scan = synthetic_scan((7, 4), nan=((1, 2), (5, 0)))
    lo, hi = plots.surface(scan).axes[0].get_zlim()
    finite = scan.values["loss"][np.isfinite(scan.values["loss"])]
    assert finite.min() > 1.0 and lo > 1.0 - 0.1 and lo <= finite.min() and hi >= finite.max()


@pytest.mark.parametrize("shape", [(7, 4), (7, 4, 3)])
def test_surface_masks_nan_and_takes_log(shape, tmp_path):
    scan = synthetic_scan(shape, nan=((1, 2, 1),))
    fig = plots.surface(scan, log=True, zmax=4.0, path=tmp_path / "surface.png")
    ax = fig.axes[0]
    v = scan.values["loss"] if len(shape) == 2 else scan.values["loss"][:, :, 0]
    h = np.log10(np.minimum(v, 4.0))
    lo, hi = ax.get_zlim()
    assert lo <= np.nanmin(h) and hi >= np.nanmax(h) and lo > np.nanmin(h) - 0.1  # NaN was not drawn as 0
    assert ax.get_zlabel() == "log10 loss" and "clipped at 4" in ax.get_title()
    assert_drawn(tmp_path / "surface.png")


@pytest.mark.parametrize("draw", [plots.contour, plots.surface])
def test_contour_and_surface_refuse_a_1d_scan(draw):
    with pytest.raises(ValueError, match="needs a 2D or 3D scan with at least 2 points along x and y; this one is 9"):
        draw(synthetic_scan((9,)))


def test_paths_between_minima_mark_the_endpoints(tmp_path):
    t = np.linspace(0, 1, 11)
    line = 0.1 + np.sin(np.pi * t)
    line[5] = np.nan
    fig = plots.path_losses({"line": (t, line), "bezier": (t, 0.1 + 0.2 * np.sin(np.pi * t))}, path=tmp_path / "paths.png")
    ax = fig.axes[0]
    assert ax.lines[0].get_ydata().mask[5]
    np.testing.assert_array_equal(ax.lines[1].get_xdata(), [0.0, 1.0])
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["line", "bezier"]
    assert_drawn(tmp_path / "paths.png")


@pytest.mark.parametrize("shape, names", [((9,), ["curve.png"]),
                                          ((7, 4), ["curve.png", "contour.png", "surface.png"]),
                                          ((5, 4, 3), ["curve.png", "contour.png", "surface.png"])])
def test_scan_figures_writes_what_the_scan_calls_for(shape, names, tmp_path):
    written = plots.scan_figures(synthetic_scan(shape, trajectory=TRAJECTORY[:2] if len(shape) == 2 else None),
                                 tmp_path, log=True)
    assert [f.name for f in written] == names
    for f in written:
        assert_drawn(f)


def test_contour_frames_the_grid_when_the_run_leaves_it():
    scan = synthetic_scan((7, 4), trajectory=[[5.0, 0.1], [1.5, 0.1], [0.0, 0.0]])
    ax = plots.contour(scan).axes[0]
    assert ax.get_xlim() == (-1.0, 2.0) and ax.get_ylim() == (-0.5, 0.25)
    assert ax.lines[0].get_label().startswith("trajectory (leaves the grid)")


def box_ratio(ax) -> float:
    """Height over width of the plot box as drawn, in pixels."""
    box = ax.get_window_extent(drawn(ax.figure))
    return box.height / box.width


def test_a_plane_is_drawn_to_scale_unless_asked_or_too_thin():
    import torch

    scan = synthetic_scan((7, 4))  # x over 3, y over 0.75, unit directions: a plane 4 times wider than tall
    ax = plots.contour(scan).axes[0]
    assert box_ratio(ax) == pytest.approx(0.25, rel=0.02) and ax.get_ylabel() == "y (along d2)"
    scan.directions.vectors[1] *= 2  # d2 twice as long: y's units are twice as far apart in parameter space
    assert box_ratio(plots.contour(scan).axes[0]) == pytest.approx(0.5, rel=0.02)
    assert box_ratio(plots.contour(scan, to_scale=False).axes[0]) == pytest.approx(0.8, rel=0.05)
    thin = synthetic_scan((7, 4))
    thin.axes[1] = np.linspace(-0.01, 0.01, 4)  # 150 times wider than tall: drawn 8:1, and the label says so
    thin.directions = type(scan.directions)(torch.eye(2, 4, dtype=torch.float64), {"kind": "given"})
    ax = plots.contour(thin).axes[0]
    assert box_ratio(ax) == pytest.approx(1 / 8, rel=0.03)
    assert ax.get_ylabel() == "y (along d2), drawn 18.8x stretched"
    for ratio in (0.25, 1.0, 4.0):  # wide, square and tall planes keep every label inside the figure
        square = synthetic_scan((41, 41), nan=((3, 3), (40, 40)), trajectory=TRAJECTORY)
        square.axes[1] = np.linspace(-ratio, ratio, 41)
        fig = plots.contour(square)
        assert box_ratio(fig.axes[0]) == pytest.approx(ratio * 2 / 3, rel=0.02)
        assert_inside(fig)


def test_unfinished_and_not_finite_points_are_shaded_and_named():
    scan = synthetic_scan((7, 4), nan=((1, 2), (2, 2)))
    scan.done[5:] = False
    scan.values["loss"][5:] = np.nan
    fig = plots.contour(scan)
    assert legend_texts(fig) == ["not computed yet (8 points)", "loss not finite (2 points)"]
    assert fig.axes[0].get_title() == "loss (20 of 28 points computed)"
    shades = [c for c in fig.axes[0].collections if not hasattr(c, "levels")]
    grey, pink = [~np.ma.getmaskarray(c.get_array()).reshape(6, 3) for c in shades]
    finite = np.isfinite(scan.values["loss"])
    whole = finite[:-1, :-1] & finite[1:, :-1] & finite[:-1, 1:] & finite[1:, 1:]  # the cells contours fill
    np.testing.assert_array_equal(grey | pink, ~whole)  # no white gap between the contours and the shades
    assert not (grey & pink).any() and grey[4:].all() and not grey[:4].any()
    assert plots.completeness(scan) == "20 of 28 points computed" and plots.titled("t", scan, "x") == "t (20 of 28 points computed; x)"
    scan.done[:] = True
    assert plots.completeness(scan) == "" and plots.titled("t", scan) == "t"


def test_a_log_colour_bar_has_at_least_three_labelled_ticks():
    scan = synthetic_scan((7, 4), nan=())
    scan.values["loss"] = 6.4e-3 + 1e-4 * scan.values["loss"]  # within one decade: no 1-2-5 tick inside but one
    fig = plots.contour(scan)
    bar = fig.axes[1]
    drawn(fig)
    labels = [t.get_text() for t in (bar.get_xticklabels() + bar.get_yticklabels()) if t.get_text()]
    assert len(labels) >= 3 and len(set(labels)) == len(labels)


def test_a_flat_scan_says_so():
    scan = synthetic_scan((7, 4), nan=())
    scan.values["loss"][:] = 0.25
    fig = plots.contour(scan)
    assert fig.axes[0].get_title() == "loss (flat: 0.25 at every finite point)" and len(fig.axes) == 1


def test_cuts_leave_out_a_cut_with_nothing_to_draw_and_keep_the_whole_frame():
    scan = synthetic_scan((7, 5), nan=())
    scan.done[3:] = False  # the centre row x = 0 (index 2) is done, the y cut through it is not
    for name in scan.values:
        scan.values[name][3:] = np.nan
        scan.values[name][:, 2] = np.where(np.arange(7) < 3, scan.values[name][:, 2], np.nan)
    centre_x = int(np.argmin(np.abs(scan.axes[0])))
    scan.values["loss"][centre_x, :] = np.nan
    scan.values["accuracy"][centre_x, :] = np.nan
    fig = plots.cuts(scan)
    loss_ax = fig.axes[0]
    assert [line.get_label() for line in loss_ax.lines] == ["along x (others at the centre)"]
    assert legend_texts(fig) == ["along x (others at the centre)"]  # no entry for a line that is not drawn
    assert loss_ax.get_title() == "cuts through the centre (15 of 35 points computed; along y: no finite value)"
    assert loss_ax.get_xlim() == (-1.0, 2.0)


def test_the_trajectory_says_how_far_off_the_plane_it_lies():
    scan = synthetic_scan((7, 4), trajectory=TRAJECTORY)
    scan.trajectory["residuals"] = np.full(len(TRAJECTORY), 100.0)  # far off the plane
    coords = np.asarray(TRAJECTORY)
    expected = np.median(100 / np.sqrt((coords ** 2).sum(1) + 100 ** 2))  # unit orthogonal directions
    label = plots.contour(scan).axes[0].lines[0].get_label()
    assert label == f"trajectory ({expected:.1%} of its distance off this plane, median)"
    scan.trajectory["residuals"][:] = 0.0
    assert plots.contour(scan).axes[0].lines[0].get_label() == "trajectory"


def test_a_plane_of_one_point_is_not_drawn_as_contours(tmp_path):
    scan = synthetic_scan((7, 1), nan=())
    assert not plots.is_plane(scan)
    with pytest.raises(ValueError, match="at least 2 points along x and y; this one is 7 x 1"):
        plots.contour(scan)
    assert [f.name for f in plots.scan_figures(scan, tmp_path)] == ["curve.png"]


def test_surface_labels_clear_of_the_ticks_and_inside_the_figure():
    scan = synthetic_scan((7, 4))
    scan.values["loss"] *= 1.234e-3  # tick labels as wide as a trained model's losses: 0.002 ... 0.007
    fig = plots.surface(scan)
    ax = fig.axes[0]
    labelled = [(ax.zaxis.label, ax.get_zticklabels()), (ax.yaxis.label, ax.get_yticklabels()),
                (ax.xaxis.label, ax.get_xticklabels())]  # asked for before drawing, which places them
    renderer = drawn(fig)
    for label, ticks in labelled:
        for tick in ticks:
            if tick.get_visible() and tick.get_text():
                assert not runs_into(label, tick.get_window_extent(renderer), renderer), \
                    f"{label.get_text()!r} runs into {tick.get_text()!r}"
    assert_inside(fig)
