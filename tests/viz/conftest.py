import numpy as np
import pytest
import torch

from landscape.scans.directions import Directions
from landscape.scans.scan import Scan


def synthetic_scan(shape, nan=((1, 2),), trajectory=None) -> Scan:
    """A scan with known values on an asymmetric grid: loss = 1 + x + 2y + 0.5xy + 0.3z (+ 1) > 0,
    bilinear in (x, y) so a bilinear interpolation of it is exact; NaN at the ``nan`` indices."""
    axes = [np.linspace(-1.0, 2.0, shape[0])]
    if len(shape) > 1:
        axes.append(np.linspace(-0.5, 0.25, shape[1]))
    if len(shape) > 2:
        axes.append(np.linspace(-0.2, 0.6, shape[2]))
    grids = np.meshgrid(*axes, indexing="ij")
    x = grids[0]
    y = grids[1] if len(shape) > 1 else 0.0
    z = grids[2] if len(shape) > 2 else 0.0
    loss = 3.0 + x + 2 * y + 0.5 * x * y + 0.3 * z
    loss = np.array(loss, dtype=np.float64)
    for index in nan:
        loss[index[:len(shape)]] = np.nan
    values = {"loss": loss, "accuracy": np.where(np.isfinite(loss), 1 / loss, np.nan)}
    k = len(shape)
    scan = Scan(axes=axes, values=values, done=np.ones(shape, dtype=bool),
                directions=Directions(torch.eye(k, 4, dtype=torch.float64), {"kind": "given"}),
                center=torch.zeros(4, dtype=torch.float64), strategy="loop", chunk=64)
    if trajectory is not None:
        coords = np.asarray(trajectory, dtype=np.float64)
        m = len(coords)
        scan.trajectory = {"coords": coords, "residuals": np.linspace(0.1, 0.0, m),
                           "names": [f"step_{i}.pt" for i in range(m)], "loss": np.linspace(2.0, 1.0, m)}
    return scan


TRAJECTORY = [[1.8, 0.2], [1.2, 0.1], [0.7, -0.2], [0.2, -0.1], [0.0, 0.0]]


@pytest.fixture
def scan2d():
    """7 x 4, asymmetric axes (a transposition fails), one NaN point, a trajectory."""
    return synthetic_scan((7, 4), trajectory=TRAJECTORY)


def assert_drawn(path, shape=None):
    """A PNG that is an image with real variation, not a blank frame."""
    from matplotlib.image import imread

    image = imread(path)
    if shape is not None:
        assert image.shape[:2] == shape
    rgb = image[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05 and len(np.unique((rgb * 255).round(), axis=0)) > 50
    return image


def drawn(fig):
    """Draw ``fig`` on an Agg canvas (as saving it does) and return the renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def texts_of(fig):
    """Every visible text artist of a drawn figure with its box in display pixels (titles, labels, tick labels,
    legend entries, annotations)."""
    from matplotlib.text import Text

    renderer = drawn(fig)
    undrawn = set()  # tick labels beyond an axis' view keep stale positions but are not drawn (3D axes)
    for ax in fig.axes:
        for axis in (getattr(ax, name, None) for name in ("xaxis", "yaxis", "zaxis")):
            if axis is not None:
                lo, hi = sorted(axis.get_view_interval())
                undrawn |= {id(label) for tick in axis.get_major_ticks() if not lo <= tick.get_loc() <= hi
                            for label in (tick.label1, tick.label2)}
    return [(t, t.get_window_extent(renderer)) for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and id(t) not in undrawn
            and t.get_window_extent(renderer).width > 0]


def assert_inside(fig):
    """No text of the figure is cut off by its edges."""
    box = fig.bbox
    for text, extent in texts_of(fig):
        assert (extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1 and extent.y0 >= box.y0 - 1
                and extent.y1 <= box.y1 + 1), f"{text.get_text()!r} is cut off: {extent} outside {box}"


def runs_into(text, box, renderer) -> bool:
    """Whether the glyph box of ``text``, turned by its rotation (not the upright box around it, which a slanted
    3D axis label makes far larger than its letters), meets the display box ``box``."""
    width, height, _ = renderer.get_text_width_height_descent(text.get_text(), text.get_fontproperties(), False)
    centre = text.get_window_extent(renderer)
    cx, cy = (centre.x0 + centre.x1) / 2, (centre.y0 + centre.y1) / 2
    angle = np.deg2rad(text.get_rotation())
    along, across = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
    s, t = np.meshgrid(np.linspace(-0.5, 0.5, 25), np.linspace(-0.5, 0.5, 5))
    points = np.c_[cx, cy] + np.outer(s.ravel() * width, along) + np.outer(t.ravel() * height, across)
    return bool(np.any((points[:, 0] > box.x0) & (points[:, 0] < box.x1)
                       & (points[:, 1] > box.y0) & (points[:, 1] < box.y1)))
