"""Matplotlib figures of landscape results. Each function returns a ``Figure`` (no pyplot, no
display needed) and saves it when given ``path``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from landscape.linalg.density import SpectralDensity


def spectral_density(rho: SpectralDensity, *, log: bool = True, sigma: float | None = None,
                     eigenvalues=None, title: str | None = None, path: str | Path | None = None) -> Figure:
    """The broadened SLQ density over eigenvalue; log density axis by default (floored at 1e-10 of
    the peak, so empty stretches stay visible); ``eigenvalues`` (e.g. the top-k) marked as lines."""
    grid, values = rho.curve(sigma=sigma)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    if log:
        values = np.maximum(values, values.max() * 1e-10)
        ax.set_yscale("log")
    ax.plot(grid, values, color="tab:blue", lw=1.2, label=f"SLQ density ({rho.probes} probes)")
    ax.fill_between(grid, values, values.min(), color="tab:blue", alpha=0.15)
    if eigenvalues is not None:
        for i, value in enumerate(np.atleast_1d(eigenvalues)):
            ax.axvline(value, color="tab:red", lw=0.8, ls="--", label="Lanczos eigenvalues" if i == 0 else None)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density" + (" (log scale)" if log else ""))
    ax.set_title(title or "Hessian spectral density")
    ax.legend(loc="upper right", frameon=False)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
