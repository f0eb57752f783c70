"""Matplotlib figures of landscape results. Each function returns a ``Figure`` (no pyplot, no
display needed: the Agg canvas) and saves it when given ``path``.

Scans are ``landscape.Scan`` objects: ``values[name]`` has shape ``(nx[, ny[, nz]])`` with
``values[i, j]`` at ``(axes[0][i], axes[1][j])``. Points that are not finite (a NaN loss, a
point a partial scan has not reached) are masked: left blank, never drawn as zero.

- ``cuts``: 1D scans, or the cuts through the centre of a 2D or 3D scan, one panel per metric;
- ``contour``: filled contours with log-spaced levels, the trajectory on top (start and end marked);
  a 3D scan shows its slice nearest z = 0;
- ``surface``: a 3D surface of a 2D scan (or that slice), optionally log10 and clipped at ``zmax``;
- ``spectral_density`` (the SLQ density, the eigenvalues marked) and ``path_losses`` (the loss
  along paths between two models).

Figures of training as a dynamical system are in :mod:`viz.training`; both share ``save``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator

from landscape.linalg.density import SpectralDensity
from landscape.scans.scan import Scan

AXIS_NAMES = ("x", "y", "z")


def save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def masked(values) -> np.ma.MaskedArray:
    return np.ma.masked_invalid(np.asarray(values, dtype=np.float64))


def _center_index(axis: np.ndarray) -> int:
    """The grid index nearest coordinate 0 (the centre model)."""
    return int(np.argmin(np.abs(axis)))


def height(values, log: bool = False, zmax: float | None = None) -> np.ndarray:
    """The value drawn as height: clipped at ``zmax`` (in the values' units), then log10 when ``log``.

    Non-finite values come back as NaN; under ``log``, values at or below zero are floored at
    the smallest positive one (a log axis has no place for them; they are not NaN points).
    """
    v = np.array(values, dtype=np.float64)
    v[~np.isfinite(v)] = np.nan
    if zmax is not None:
        v = np.minimum(v, zmax)
    if log:
        positive = v[v > 0]
        if positive.size == 0:
            raise ValueError("a log scale needs some positive values; these have none")
        with np.errstate(invalid="ignore"):
            v = np.log10(np.maximum(v, positive.min()))
    return v


def height_title(log: bool, zmax: float | None, metric: str = "loss") -> str:
    """What ``height`` shows: ``"loss"``, ``"log10 loss"``, ``"loss clipped at 5"``, ``"log10 loss clipped at 5"``."""
    return ("log10 " if log else "") + metric + (f" clipped at {zmax:g}" if zmax is not None else "")


def _slice2d(scan: Scan, metric: str, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(x, y, values (nx, ny), note) of a 2D scan, or of a 3D scan's slice nearest z = 0."""
    if len(scan.axes) == 1:
        raise ValueError(f"a {what} needs a 2D or 3D scan; this one is 1D (draw it with curve)")
    v = np.asarray(scan.values[metric], dtype=np.float64)
    note = ""
    if len(scan.axes) == 3:
        k = _center_index(scan.axes[2])
        v = v[:, :, k]
        note = f" (slice z = {scan.axes[2][k]:.3g})"
    return scan.axes[0], scan.axes[1], v, note


def cuts(scan: Scan, metrics: Sequence[str] | None = None, *, log: bool = False, title: str | None = None,
          path: str | Path | None = None) -> Figure:
    """One panel per metric (default: all) against the coordinate; ``log`` puts the loss on a log axis.

    A 1D scan is drawn as it is; a 2D or 3D scan as its cuts through the grid point nearest
    the centre, one line per axis.
    """
    metrics = list(scan.values) if metrics is None else list(metrics)
    fig = Figure(figsize=(6.4, 2.2 + 1.8 * len(metrics)), layout="constrained")
    axs = np.atleast_1d(fig.subplots(len(metrics), 1, sharex=True))
    centre = tuple(_center_index(a) for a in scan.axes)
    for ax, name in zip(axs, metrics):
        v = np.asarray(scan.values[name], dtype=np.float64)
        for a, coords in enumerate(scan.axes):
            index = list(centre)
            index[a] = slice(None)
            label = "along d1" if len(scan.axes) == 1 else f"along {AXIS_NAMES[a]} (others at the centre)"
            ax.plot(coords, masked(v[tuple(index)]), marker="." if len(coords) <= 30 else None, label=label)
        if log and name == "loss":
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    if len(scan.axes) > 1:
        axs[0].legend(frameon=False, fontsize="small")
    axs[-1].set_xlabel("coordinate along the direction")
    axs[0].set_title(title or ("1D scan" if len(scan.axes) == 1 else "cuts through the centre"))
    return save(fig, path)


def _levels(v: np.ma.MaskedArray, n: int, log: bool) -> tuple[np.ndarray, LogNorm | None]:
    """n contour levels over the finite values: geometric when ``log`` and all are positive, else linear."""
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 1e-6
    if log and lo > 0:
        return np.geomspace(lo, hi, n), LogNorm(lo, hi)
    return np.linspace(lo, hi, n), None


def _trajectory(scan: Scan, trajectory) -> np.ndarray | None:
    if trajectory is None or trajectory is False:
        return None
    if trajectory is True:
        return None if scan.trajectory is None else np.asarray(scan.trajectory["coords"])[:, :2]
    return np.asarray(trajectory, dtype=np.float64)[:, :2]


def contour(scan: Scan, metric: str = "loss", *, log: bool = True, levels: int = 30, zmax: float | None = None,
            trajectory=True, label: str = "trajectory", title: str | None = None,
            path: str | Path | None = None) -> Figure:
    """Filled contours of ``metric`` over (x, y) with contour lines; levels log-spaced when ``log``
    (and the values positive); values above ``zmax`` share the top colour.

    ``trajectory``: True draws the scan's own (if it has one), or pass coordinates ``[m, 2]``;
    its start is a circle, its end a star, its legend entry ``label``. NaN points are left blank.
    """
    x, y, v, note = _slice2d(scan, metric, "contour")
    if zmax is not None:
        v = np.minimum(v, zmax)
    shown = masked(v)
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.subplots()
    if shown.count() == 0:
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    else:
        lv, norm = _levels(shown, levels, log)
        X, Y = np.meshgrid(x, y, indexing="ij")  # values[i, j] at (x[i], y[j])
        filled = ax.contourf(X, Y, shown, levels=lv, norm=norm, cmap="viridis")
        ax.contour(X, Y, shown, levels=lv[::3], norm=norm, colors="white", linewidths=0.4, alpha=0.6)
        bar = fig.colorbar(filled, ax=ax, ticks=LogLocator(subs=(1, 2, 5)) if norm is not None else None,
                           format="%.3g" if norm is not None else None)
        bar.set_label(metric + (" (log-spaced levels)" if norm is not None else ""))
    coords = _trajectory(scan, trajectory)
    if coords is not None and len(coords):
        beyond = not np.all((coords >= [x[0], y[0]]) & (coords <= [x[-1], y[-1]]))
        ax.plot(coords[:, 0], coords[:, 1], color="tab:red", lw=1.5, marker=".", ms=4,
                label=label + (" (leaves the grid)" if beyond else ""))
        ax.plot(*coords[0], "o", color="white", mec="tab:red", ms=8, label="start")
        ax.plot(*coords[-1], "*", color="tab:red", mec="white", ms=14, label="end")
        ax.legend(loc="best", frameon=True, fontsize="small")
        ax.set_xlim(x[0], x[-1])  # the grid, not the run, sets the frame
        ax.set_ylim(y[0], y[-1])
    ax.plot(0, 0, "+", color="black", ms=10)
    ax.set_xlabel("x (along d1)")
    ax.set_ylabel("y (along d2)")
    ax.set_title(title or f"{metric}{note}")
    return save(fig, path)


def surface(scan: Scan, metric: str = "loss", *, log: bool = False, zmax: float | None = None,
            title: str | None = None, path: str | Path | None = None) -> Figure:
    """The 3D surface z = ``metric``(x, y) (log10 when ``log``, clipped at ``zmax``), coloured by height."""
    x, y, v, note = _slice2d(scan, metric, "surface")
    z = height(v, log, zmax)
    fig = Figure(figsize=(7.0, 5.6), layout="constrained")
    ax = fig.add_subplot(projection="3d")
    X, Y = np.meshgrid(x, y, indexing="ij")
    shown = masked(z)
    label = ("log10 " if log else "") + metric
    if shown.count():
        drawn = ax.plot_surface(X, Y, shown, cmap="viridis", rstride=1, cstride=1, linewidth=0,
                                antialiased=False, vmin=shown.min(), vmax=shown.max())
        fig.colorbar(drawn, ax=ax, shrink=0.6, pad=0.1).set_label(label)
    ax.set_xlabel("x (along d1)")
    ax.set_ylabel("y (along d2)")
    ax.set_zlabel(label)
    ax.view_init(elev=35, azim=-60)
    clip = f", clipped at {zmax:g}" if zmax is not None else ""
    ax.set_title(title or f"{label}{note}{clip}")
    return save(fig, path)


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
    return save(fig, path)


def path_losses(curves: Mapping[str, tuple], *, ylabel: str = "loss", log: bool = False, title: str | None = None,
          path: str | Path | None = None) -> Figure:
    """Loss along paths between two minima: ``{label: (t [m], values [m])}``, t = 0 at the first
    model and 1 at the second; the endpoints are marked."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for label, (t, v) in curves.items():
        t, v = np.asarray(t, dtype=np.float64), np.asarray(v, dtype=np.float64)
        line, = ax.plot(t, masked(v), lw=1.5, label=label)
        ends = np.isin(t, (0.0, 1.0)) & np.isfinite(v)
        ax.plot(t[ends], v[ends], "o", color=line.get_color())
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("t (0: model A, 1: model B)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    ax.set_title(title or f"{ylabel} along paths between minima")
    return save(fig, path)


def scan_figures(scan: Scan, out: str | Path, *, log: bool = False, zmax: float | None = None,
                 stem: str = "") -> list[Path]:
    """The figures a scan calls for, written to ``out``: ``curve.png`` (1D, or the cuts of 2D/3D),
    ``contour.png`` and ``surface.png`` (2D, or the 3D scan's centre slice). Returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"{stem}curve.png"]
    cuts(scan, log=log, path=written[0])
    if len(scan.axes) > 1:
        written += [out / f"{stem}contour.png", out / f"{stem}surface.png"]
        contour(scan, zmax=zmax, path=written[1])
        surface(scan, log=log, zmax=zmax, path=written[2])
    return written
