"""Figures: they draw what they are given."""

import numpy as np
from matplotlib.image import imread

import landscape
from landscape.operators import MatrixOperator
from viz.plots import spectral_density


def test_spectral_density_figure(tmp_path):
    rho = landscape.density(MatrixOperator(np.diag(np.r_[np.linspace(-1, 1, 50), 8.0, 12.0])), probes=4, steps=20)
    fig = spectral_density(rho, eigenvalues=[12.0, 8.0], path=tmp_path / "density.png")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    x, y = ax.lines[0].get_data()
    grid, values = rho.curve()
    assert np.allclose(x, grid) and np.allclose(y, np.maximum(values, values.max() * 1e-10))
    assert [line.get_xdata()[0] for line in ax.lines[1:]] == [12.0, 8.0]
    image = imread(tmp_path / "density.png")
    assert image.shape[:2] == (480, 768) and image.std() > 0.05  # drawn, not blank
    assert spectral_density(rho, log=False).axes[0].get_yscale() == "linear"
