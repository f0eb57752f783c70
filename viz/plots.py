"""Matplotlib figures of landscape results. Each function returns a ``Figure`` (no pyplot, no
display needed: the Agg canvas) and saves it when given ``path``.

Scans are ``landscape.Scan`` objects: ``values[name]`` has shape ``(nx[, ny[, nz]])`` with
``values[i, j]`` at ``(axes[0][i], axes[1][j])``. Points that are not finite (a NaN loss, a
point a partial scan has not reached) are masked: left blank, never drawn as zero.

- ``curve``: 1D scans, or the cuts through the centre of a 2D or 3D scan, one panel per metric;
- ``contour``: filled contours with log-spaced levels, the trajectory on top (start and end marked);
  a 3D scan shows its slice nearest z = 0;
- ``surface``: a 3D surface of a 2D scan (or that slice), optionally log10 and clipped at ``zmax``;
- ``spectral_density``, ``sharpness`` (runs over training, with their 2/lr lines), ``lyapunov``, ``paths``,
  ``over_time`` (runs of one quantity against time, with the distances between them), ``capacity``
  (a Hopfield network's flipped bits against its load, with the theory), ``information_plane``
  (each layer's I(X;T), I(T;Y) over training, coloured by epoch, with the loss), ``kernel_regime``
  (training against its linearization, with the NTK spectrum) and ``width_scaling`` (the gap and
  the kernel's change against width, with the fitted power law).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator

from landscape.linalg.density import SpectralDensity
from landscape.scans.scan import Scan

AXIS_NAMES = ("x", "y", "z")


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def _masked(values) -> np.ma.MaskedArray:
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
            ax.plot(coords, _masked(v[tuple(index)]), marker="." if len(coords) <= 30 else None, label=label)
        if log and name == "loss":
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    if len(scan.axes) > 1:
        axs[0].legend(frameon=False, fontsize="small")
    axs[-1].set_xlabel("coordinate along the direction")
    axs[0].set_title(title or ("1D scan" if len(scan.axes) == 1 else "cuts through the centre"))
    return _save(fig, path)


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
    masked = _masked(v)
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.subplots()
    if masked.count() == 0:
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    else:
        lv, norm = _levels(masked, levels, log)
        X, Y = np.meshgrid(x, y, indexing="ij")  # values[i, j] at (x[i], y[j])
        filled = ax.contourf(X, Y, masked, levels=lv, norm=norm, cmap="viridis")
        ax.contour(X, Y, masked, levels=lv[::3], norm=norm, colors="white", linewidths=0.4, alpha=0.6)
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
    return _save(fig, path)


def surface(scan: Scan, metric: str = "loss", *, log: bool = False, zmax: float | None = None,
            title: str | None = None, path: str | Path | None = None) -> Figure:
    """The 3D surface z = ``metric``(x, y) (log10 when ``log``, clipped at ``zmax``), coloured by height."""
    x, y, v, note = _slice2d(scan, metric, "surface")
    z = height(v, log, zmax)
    fig = Figure(figsize=(7.0, 5.6), layout="constrained")
    ax = fig.add_subplot(projection="3d")
    X, Y = np.meshgrid(x, y, indexing="ij")
    masked = _masked(z)
    label = ("log10 " if log else "") + metric
    if masked.count():
        drawn = ax.plot_surface(X, Y, masked, cmap="viridis", rstride=1, cstride=1, linewidth=0,
                                antialiased=False, vmin=masked.min(), vmax=masked.max())
        fig.colorbar(drawn, ax=ax, shrink=0.6, pad=0.1).set_label(label)
    ax.set_xlabel("x (along d1)")
    ax.set_ylabel("y (along d2)")
    ax.set_zlabel(label)
    ax.view_init(elev=35, azim=-60)
    clip = f", clipped at {zmax:g}" if zmax is not None else ""
    ax.set_title(title or f"{label}{note}{clip}")
    return _save(fig, path)


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
    return _save(fig, path)


def sharpness_history(histories, *, log: bool = True, title: str | None = None, path: str | Path | None = None) -> Figure:
    """Top Hessian eigenvalue(s) over training, one run or several: each has ``steps [T]``,
    ``sharpness [T, k]`` (column 0 is lambda_max), ``loss [T]`` and ``lr`` (or None) — a
    ``dynamics.edge_of_stability.SharpnessHistory`` or anything with those attributes. GD's stability
    limit 2/lr is dashed in the run's colour; the loss goes in a second panel (log scale)."""
    runs = histories if isinstance(histories, (list, tuple)) else [histories]
    fig = Figure(figsize=(6.4, 6.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    for i, run in enumerate(runs):
        color = f"C{i}"
        lam = np.asarray(run.sharpness, dtype=np.float64).reshape(len(run.steps), -1)
        name = f"lr = {run.lr:g}" if run.lr is not None else f"run {i + 1}"
        top.plot(run.steps, _masked(lam[:, 0]), color=color, lw=1.4, label=f"{name}: lambda_max")
        for j in range(1, lam.shape[1]):
            top.plot(run.steps, _masked(lam[:, j]), color=color, lw=0.7, alpha=0.5)
        if run.lr is not None:
            top.axhline(2 / run.lr, color=color, ls="--", lw=1, label=f"2/lr = {2 / run.lr:.4g}")
        bottom.plot(run.steps, _masked(run.loss), color=color, label=name)
    top.set_ylabel("top Hessian eigenvalue" + (" (thin: the next ones)" if any(
        np.asarray(r.sharpness).reshape(len(r.steps), -1).shape[1] > 1 for r in runs) else ""))
    top.legend(frameon=False, fontsize="small")
    top.set_title(title or "sharpness over training")
    bottom.set_ylabel("loss")
    if log:
        bottom.set_yscale("log")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    bottom.set_xlabel("step")
    return _save(fig, path)


def lyapunov_spectrum(exponents, *, running=None, times=None, title: str | None = None,
             path: str | Path | None = None) -> Figure:
    """A Lyapunov spectrum ``[k]`` (largest first) as a stem plot with the zero line; with
    ``running [T, k]`` (the estimate after each interval, at ``times [T]``) a convergence panel."""
    lam = np.asarray(exponents, dtype=np.float64).reshape(-1)
    panels = 2 if running is not None else 1
    fig = Figure(figsize=(6.4 * panels, 4.0), layout="constrained")
    axs = np.atleast_1d(fig.subplots(1, panels))
    index = np.arange(1, len(lam) + 1)
    axs[0].axhline(0, color="black", lw=0.8)
    axs[0].stem(index, _masked(lam))
    axs[0].set_xlabel("index i")
    axs[0].set_ylabel("exponent lambda_i")
    axs[0].set_xticks(index if len(lam) <= 20 else index[:: max(1, len(lam) // 10)])
    axs[0].set_title(title or "Lyapunov spectrum")
    if running is not None:
        R = np.asarray(running, dtype=np.float64).reshape(-1, len(lam))
        t = np.arange(1, len(R) + 1) if times is None else np.asarray(times, dtype=np.float64)
        for i in range(len(lam)):
            axs[1].plot(t, _masked(R[:, i]), lw=1, label=f"lambda_{i + 1}" if len(lam) <= 8 else None)
        axs[1].axhline(0, color="black", lw=0.8)
        axs[1].set_xlabel("time")
        axs[1].set_ylabel("running estimate")
        axs[1].set_title("convergence")
        if len(lam) <= 8:
            axs[1].legend(frameon=False, fontsize="small")
    for ax in axs:
        ax.grid(alpha=0.3)
    return _save(fig, path)


def path_losses(curves: Mapping[str, tuple], *, ylabel: str = "loss", log: bool = False, title: str | None = None,
          path: str | Path | None = None) -> Figure:
    """Loss along paths between two minima: ``{label: (t [m], values [m])}``, t = 0 at the first
    model and 1 at the second; the endpoints are marked."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for label, (t, v) in curves.items():
        t, v = np.asarray(t, dtype=np.float64), np.asarray(v, dtype=np.float64)
        line, = ax.plot(t, _masked(v), lw=1.5, label=label)
        ends = np.isin(t, (0.0, 1.0)) & np.isfinite(v)
        ax.plot(t[ends], v[ends], "o", color=line.get_color())
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("t (0: model A, 1: model B)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    ax.set_title(title or f"{ylabel} along paths between minima")
    return _save(fig, path)


def over_time(times, series: Mapping[str, Sequence], *, gaps: Mapping[str, Sequence] | None = None,
              ylabel: str = "loss", log: bool = True, title: str | None = None,
              path: str | Path | None = None) -> Figure:
    """Several runs of one quantity at the same ``times [T]`` (``{label: values [T]}``, e.g. the loss of
    gradient descent and of two flows), and, in a second panel, ``gaps`` between them (log scale)."""
    t = np.asarray(times, dtype=np.float64)
    fig = Figure(figsize=(6.4, 6.2 if gaps else 4.0), layout="constrained")
    axs = np.atleast_1d(fig.subplots(2 if gaps else 1, 1, sharex=True))
    styles = ("-", "--", ":", "-.")
    for i, (label, values) in enumerate(series.items()):
        axs[0].plot(t, _masked(values), ls=styles[i % 4], lw=1.5, label=label)
    axs[0].set_ylabel(ylabel)
    if log:
        axs[0].set_yscale("log")
    axs[0].legend(frameon=False, fontsize="small")
    axs[0].set_title(title or f"{ylabel} over time")
    if gaps:
        for label, values in gaps.items():
            v = np.asarray(values, dtype=np.float64)
            axs[1].plot(t, _masked(np.where(v > 0, v, np.nan)), lw=1.2, label=label)
        axs[1].set_yscale("log")
        axs[1].set_ylabel("distance")
        axs[1].legend(frameon=False, fontsize="small")
    for ax in axs:
        ax.grid(alpha=0.3)
    axs[-1].set_xlabel("time (GD step k at t = k lr)")
    return _save(fig, path)


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


def hopfield_capacity(capacities: Mapping[str, object], *, theory: tuple | None = None, critical: float | None = None,
             title: str | None = None, path: str | Path | None = None) -> Figure:
    """Storage capacity: ``{label: result}`` with ``alphas``, ``flipped_mean``, ``flipped_std`` and
    ``retrieved`` arrays (``dynamics.hopfield.Capacity``); ``theory``: ``(alphas, flipped)`` drawn as a
    line, ``critical``: the critical load, a dashed vertical line. Flipped bits on a log axis (zeros at
    its floor), the share of patterns retrieved exactly below."""
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    floor = 1e-5
    for label, c in capacities.items():
        a, m = np.asarray(c.alphas), np.asarray(c.flipped_mean)
        line, = top.plot(a, np.maximum(m, floor), "o-", ms=4, label=label)
        top.fill_between(a, np.maximum(m - np.asarray(c.flipped_std), floor), m + np.asarray(c.flipped_std),
                         color=line.get_color(), alpha=0.15, lw=0)
        bottom.plot(a, c.retrieved, "o-", ms=4, color=line.get_color())
    if theory is not None:
        top.plot(theory[0], np.maximum(theory[1], floor), "k-", lw=1, label="AGS theory (N -> infinity)")
    for ax in (top, bottom):
        if critical is not None:
            ax.axvline(critical, color="gray", ls="--", lw=1)
        ax.grid(alpha=0.3)
    if critical is not None:
        top.text(critical, 0.5, f" alpha_c = {critical:.3f}", transform=top.get_xaxis_transform(), color="gray")
    top.set_yscale("log")
    top.set_ylim(floor / 2, 1)
    top.set_ylabel("flipped bits at the fixed point")
    top.legend(frameon=False, fontsize="small", loc="lower right")
    bottom.set_ylabel("retrieved exactly")
    bottom.set_xlabel("load alpha = P / N")
    top.set_title(title or "Hopfield network: storage capacity")
    return _save(fig, path)


def _estimator_note(method: str, settings: Mapping) -> str:
    """"binning, 30 bins over (-1, 1)" / "KDE, noise variance 0.1": what the bits rest on."""
    if method == "binning":
        lo_hi = settings.get("range_")
        where = "the observed range" if lo_hi is None else f"({lo_hi[0]:g}, {lo_hi[1]:g})"
        return f"binning, {settings.get('bins')} bins over {where}"
    if method == "kde":
        return f"KDE, noise variance {settings.get('noise_variance'):g}"
    return str(method)


def information_plane(plane, *, loss: bool = True, title: str | None = None,
                      path: str | Path | None = None) -> Figure:
    """The information plane (Shwartz-Ziv & Tishby 2017) of one training run: ``plane`` has ``epochs [E]``,
    ``layers [L]``, ``I_XT [E, L]`` and ``I_TY [E, L]`` (bits), ``loss [E]``, ``H_Y``, ``method`` and
    ``settings`` (``dynamics.information.InformationPlane``).

    Left: one trajectory per layer, x = I(X;T), y = I(T;Y), the points coloured by epoch (one shared
    colour bar), each layer named at its first point (ringed) and its last; H(Y), the most I(T;Y)
    can be, dashed; the estimator and its settings title the legend. Right, with ``loss``: the
    training loss against the epoch (log scale). Points that are not finite are left out, never
    drawn as zero."""
    epochs = np.asarray(plane.epochs, dtype=np.float64)
    I_XT = np.asarray(plane.I_XT, dtype=np.float64).reshape(len(epochs), -1)
    I_TY = np.asarray(plane.I_TY, dtype=np.float64).reshape(len(epochs), -1)
    fig = Figure(figsize=(10.4 if loss else 7.2, 4.6), layout="constrained")
    ax, loss_ax = fig.subplots(1, 2, width_ratios=(2.2, 1)) if loss else (fig.subplots(), None)
    norm = Normalize(epochs.min(), max(epochs.max(), epochs.min() + 1))
    points = None
    for j, name in enumerate(plane.layers):
        x, y = I_XT[:, j], I_TY[:, j]
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.any():
            continue
        color = f"C{j % 10}"
        ax.plot(x[ok], y[ok], "-", color=color, lw=1.0, alpha=0.7, zorder=1, label=str(name))
        points = ax.scatter(x[ok], y[ok], c=epochs[ok], cmap="viridis", norm=norm, s=22, zorder=2,
                            edgecolors="none", label=f"_{name} points")
        ax.plot(x[ok][:1], y[ok][:1], "o", ms=10, mfc="none", mec=color, mew=1.2, zorder=3, label=f"_{name} start")
        for at, offset in ((-1, (0, 6)), (0, (7, -3))):
            ax.annotate(str(name), (x[ok][at], y[ok][at]), xytext=offset, textcoords="offset points", color=color,
                        fontsize="small", fontweight="bold", ha="center" if at else "left", va="bottom" if at else "top")
    if points is not None:
        fig.colorbar(points, ax=ax, label="epoch", pad=0.01)
    ax.axhline(plane.H_Y, color="gray", ls="--", lw=1, zorder=0, label=f"H(Y) = {plane.H_Y:.3g} bits")
    handles = ax.get_legend_handles_labels()[0] + [Line2D([], [], marker="o", ms=8, mfc="none", mec="0.3", ls="none",
                                                          label="epoch 0")]
    ax.legend(handles=handles, title=_estimator_note(plane.method, plane.settings), loc="best", ncols=2,
              fontsize="small", title_fontsize="small", framealpha=0.8)
    highest = max([plane.H_Y, *I_TY[np.isfinite(I_TY)]])
    ax.set_ylim(top=highest * 1.1 if highest > 0 else 0.1)  # room for the names above the last points
    ax.set_xmargin(0.08)  # room for the names beside the points at either end
    ax.set_xlabel("I(X;T) (bits)")
    ax.set_ylabel("I(T;Y) (bits)")
    ax.grid(alpha=0.3)
    ax.set_title(title or "information plane")
    if loss_ax is None:
        return _save(fig, path)
    loss_ax.plot(epochs, _masked(plane.loss), "o-", ms=3, color="black", lw=1)
    if np.any(np.asarray(plane.loss, dtype=np.float64) > 0):
        loss_ax.set_yscale("log")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss")
    loss_ax.grid(alpha=0.3)
    loss_ax.set_title("loss")
    return _save(fig, path)


def kernel_regime(runs: Mapping[str, object], *, eigenvalues=None, title: str | None = None,
                  path: str | Path | None = None) -> Figure:
    """Real training against its linearization: ``{label: run}`` with ``dynamics.linearized.KernelRegime``'s
    ``times``, ``loss``, ``linear_loss`` and ``gap``. Left: the loss of each run (solid) and of its
    linearization (dashed); middle: the relative output gap ||f - f_lin|| / ||f_0 - y|| (log);
    right, with ``eigenvalues`` (the NTK's, any order): its spectrum, largest first (log)."""
    panels = 3 if eigenvalues is not None else 2
    fig = Figure(figsize=(4.2 * panels, 3.8), layout="constrained")
    axs = fig.subplots(1, panels)
    for label, run in runs.items():
        t = np.asarray(run.times, dtype=np.float64)
        line, = axs[0].plot(t, _masked(run.loss), lw=1.5, label=label)
        axs[0].plot(t, _masked(run.linear_loss), ls="--", lw=1.2, color=line.get_color())
        gap = np.asarray(run.gap, dtype=np.float64)
        axs[1].plot(t[1:], _masked(np.where(gap[1:] > 0, gap[1:], np.nan)), lw=1.5, color=line.get_color(),
                    label=label)
    axs[0].plot([], [], "k--", lw=1.2, label="linearized")
    axs[0].set_yscale("log")
    axs[0].set_ylabel("training loss")
    axs[0].legend(frameon=False, fontsize="small")
    axs[1].set_yscale("log")
    axs[1].set_ylabel("||f - f_lin|| / ||f_0 - y||")
    for ax in axs[:2]:
        ax.set_xlabel("time (GD step k at t = k lr)")
        ax.grid(alpha=0.3)
    if eigenvalues is not None:
        lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
        shown = lam > lam[0] * 1e-12
        axs[2].plot(np.arange(1, shown.sum() + 1), lam[shown], ".", ms=3)
        axs[2].set_xscale("log")
        axs[2].set_yscale("log")
        axs[2].set_xlabel("index")
        axs[2].set_ylabel("NTK eigenvalue")
        axs[2].grid(alpha=0.3)
    fig.suptitle(title or "training against its linearization (the kernel regime)")
    return _save(fig, path)


def width_scaling(sweep, *, title: str | None = None, path: str | Path | None = None) -> Figure:
    """How far training leaves the kernel regime against width (``dynamics.linearized.WidthSweep``):
    the largest relative output gap and the kernel's relative change, each seed a small point, the
    seed means joined, and the fitted power law of the gap dashed with its rate. Log-log."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    w = np.asarray(sweep.widths, dtype=np.float64)
    for values, label, marker in ((sweep.max_gap, "max_t ||f - f_lin|| / ||f_0 - y||", "o"),
                                  (sweep.kernel_change, "||Theta_T - Theta_0||_F / ||Theta_0||_F", "s")):
        v = np.asarray(values, dtype=np.float64)
        line, = ax.plot(w, v.mean(1), marker + "-", ms=5, label=label)
        ax.plot(np.repeat(w, v.shape[1]), v.reshape(-1), marker, ms=2.5, alpha=0.5, color=line.get_color())
    dense = np.geomspace(w.min(), w.max(), 50)
    ax.plot(dense, sweep.prefactor * dense ** -sweep.rate, "k--", lw=1,
            label=f"fit: gap ~ width^-{sweep.rate:.2f} (kernel: width^-{sweep.kernel_rate:.2f})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width")
    ax.set_ylabel("relative change")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize="small")
    ax.set_title(title or "leaving the kernel regime as width shrinks")
    return _save(fig, path)
