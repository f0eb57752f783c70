"""Offscreen VTK rendering: a real picture on a machine without a display or a GPU."""

import numpy as np
import pytest

from tests.viz.conftest import assert_drawn, synthetic_scan
from viz.render import caption_of, render


@pytest.mark.parametrize("camera", ["iso", "top"])
def test_render_draws_the_surface_the_scalar_bar_and_the_trajectory(scan2d, tmp_path, monkeypatch, camera):
    monkeypatch.delenv("DISPLAY", raising=False)
    path = render(scan2d, tmp_path / "render.png", log=True, camera=camera, size=(640, 480))
    image = assert_drawn(path, (480, 640))
    rgb = image[..., :3]
    tube = (rgb[..., 0] > 0.6) & (rgb[..., 1] < 0.25) & (rgb[..., 2] < 0.25)
    assert tube.sum() > 200  # the red trajectory is visible
    without = assert_drawn(render(scan2d, tmp_path / "plain.png", trajectory=False, size=(640, 480)))
    rgb = without[..., :3]
    assert ((rgb[..., 0] > 0.6) & (rgb[..., 1] < 0.25) & (rgb[..., 2] < 0.25)).sum() < tube.sum() / 10


def test_render_refuses_what_it_cannot_draw(tmp_path):
    with pytest.raises(ValueError, match="render draws a 2D scan's surface; this scan has 3 axes"):
        render(synthetic_scan((3, 3, 3)), tmp_path / "r.png")
    with pytest.raises(ValueError, match="camera must be one of iso, top, side"):
        render(synthetic_scan((3, 3)), tmp_path / "r.png", camera="front")
    empty = synthetic_scan((3, 3))
    empty.values["loss"][:] = np.nan
    with pytest.raises(ValueError, match="no finite loss"):
        render(empty, tmp_path / "r.png")


def test_render_of_a_trajectory_free_scan_with_a_nan_hole(tmp_path):
    scan = synthetic_scan((21, 15), nan=((10, 7), (10, 8), (11, 7), (11, 8)))
    assert_drawn(render(scan, tmp_path / "hole.png", zmax=4.0, camera="side", size=(400, 300)), (300, 400))


def test_render_leaves_out_the_part_of_a_run_beyond_the_grid(tmp_path):
    scan = synthetic_scan((7, 4), trajectory=[[5.0, 0.1], [3.0, 0.1], [1.5, 0.1], [0.5, -0.2], [0.0, 0.0]])
    image = assert_drawn(render(scan, tmp_path / "r.png", size=(640, 480)), (480, 640))
    rgb = image[..., :3]
    assert ((rgb[..., 0] > 0.6) & (rgb[..., 1] < 0.25) & (rgb[..., 2] < 0.25)).sum() > 100  # the inside part


def test_the_caption_says_what_is_missing_and_a_flat_surface_is_drawn_mid_scale(tmp_path):
    scan = synthetic_scan((21, 15), nan=((10, 7), (10, 8)))
    scan.done[20] = False
    scan.values["loss"][20] = np.nan
    assert caption_of(scan) == "loss surface, 21 x 15 points (300 of 315 points computed; 2 points not finite)"
    flat = synthetic_scan((21, 15), nan=())
    flat.values["loss"][:] = 1.0
    assert caption_of(flat, "bowl") == "bowl (flat: 1 at every finite point)"
    run = synthetic_scan((7, 4), trajectory=[[0.5, 0.1], [0.0, 0.0]])  # residuals 0.1 and 0: the first point off
    off = 0.1 / np.sqrt(0.5 ** 2 + 0.1 ** 2 + 0.1 ** 2)  # the end, at the centre, has no distance to share
    assert caption_of(run) == f"loss surface, 7 x 4 points (1 point not finite; the run: {off:.1%} of its " \
                              "distance off this plane, median)"
    assert caption_of(run, trajectory=False) == "loss surface, 7 x 4 points (1 point not finite)"
    rgb = assert_drawn(render(flat, tmp_path / "flat.png", size=(640, 480)), (480, 640))[..., :3]
    teal = np.abs(rgb - [0.128, 0.567, 0.551]).max(axis=-1) < 0.12  # viridis(0.5), lit or in shade
    assert teal.sum() > 5000  # the one value sits mid-scale, not at the bottom colour of a degenerate range
