"""Figures: they draw what they are given, mask what is not finite, and are not blank."""

import numpy as np
import pytest

import landscape
from landscape.curvature.operators import MatrixOperator
from tests.viz.conftest import TRAJECTORY, assert_drawn, synthetic_scan
from viz import plots


def test_spectral_density_figure(tmp_path):
    rho = landscape.density(MatrixOperator(np.diag(np.r_[np.linspace(-1, 1, 50), 8.0, 12.0])), probes=4, steps=20)
    fig = plots.spectral_density(rho, eigenvalues=[12.0, 8.0], path=tmp_path / "density.png")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    x, y = ax.lines[0].get_data()
    grid, values = rho.curve()
    assert np.allclose(x, grid) and np.allclose(y, np.maximum(values, values.max() * 1e-10))
    assert [line.get_xdata()[0] for line in ax.lines[1:]] == [12.0, 8.0]
    assert_drawn(tmp_path / "density.png", (480, 768))
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
    filled = ax.collections[0]
    v = scan.values["loss"] if len(shape) == 2 else scan.values["loss"][:, :, 0]  # z = -0.2 is nearest 0
    finite = v[np.isfinite(v)]
    assert filled.levels[0] == pytest.approx(finite.min()) and filled.levels[-1] == pytest.approx(finite.max())
    ratios = filled.levels[1:] / filled.levels[:-1]
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
    assert np.allclose(np.diff(linear.collections[0].levels), np.diff(linear.collections[0].levels)[0])
    assert len(linear.lines) == 1  # only the centre mark


def test_contour_clips_at_zmax_and_says_when_nothing_is_finite():
    scan = synthetic_scan((7, 4))
    ax = plots.contour(scan, zmax=3.5).axes[0]
    assert ax.collections[0].levels[-1] == pytest.approx(3.5)
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
    with pytest.raises(ValueError, match="needs a 2D or 3D scan; this one is 1D"):
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
    assert ax.lines[0].get_label() == "trajectory (leaves the grid)"
