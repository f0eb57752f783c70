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
