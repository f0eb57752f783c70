"""Matplotlib figures of landscape results. Each function returns a ``Figure`` (no pyplot, no
display needed: the Agg canvas) and saves it when given ``path``.

Scans are ``landscape.Scan`` objects: ``values[name]`` has shape ``(nx[, ny[, nz]])`` with
``values[i, j]`` at ``(axes[0][i], axes[1][j])``. Points that are not finite (a NaN loss, a
point a partial scan has not reached) are masked, never drawn as zero, and the title of a scan that
is not finished says how much of it is computed (``completeness``).

- ``cuts``: 1D scans, or the cuts through the centre of a 2D or 3D scan, one panel per metric;
- ``contour``: filled contours with log-spaced levels, the trajectory on top (start and end marked);
  a 3D scan shows its slice nearest z = 0; drawn to scale (equal lengths in parameter space look
  equal) unless the plane is more than 8 times longer than wide; points not computed yet and points
  whose value is not finite are shaded and named in the legend;
- ``surface``: a 3D surface of a 2D scan (or that slice), optionally log10 and clipped at ``zmax``;
- ``spectral_density`` (the SLQ density, the eigenvalues marked) and ``path_losses`` (the loss
  along paths between two models).

Figures of training as a dynamical system are in :mod:`viz.training`; both share ``save``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import LogLocator, MaxNLocator

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


def completeness(scan: Scan) -> str:
    """``""`` for a finished scan, else ``"706 of 1,681 points computed"``."""
    done, total = int(np.count_nonzero(scan.done)), int(np.size(scan.done))
    return "" if done == total else f"{done:,} of {total:,} points computed"


def titled(title: str, scan: Scan, *notes: str) -> str:
    """``title``, then in parentheses the scan's completeness when it is not finished, and ``notes``."""
    said = [note for note in (completeness(scan), *notes) if note]
    return f"{title} ({'; '.join(said)})" if said else title


def is_plane(scan: Scan) -> bool:
    """Whether a scan has a plane to draw: two or three axes, the first two of at least 2 points each."""
    return len(scan.axes) > 1 and min(len(a) for a in scan.axes[:2]) >= 2


def flatness(values) -> str:
    """``"flat: 1 at every finite point"`` when every finite value is the same (to 1e-12 relative), else ``""``."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0 or v.max() - v.min() > 1e-12 * max(1.0, abs(float(v.max()))):
        return ""
    return f"flat: {float(v.min()):.6g} at every finite point"


def not_finite(values, done) -> str:
    """``"55 points not finite"``: the computed points (``done``) whose value is NaN or infinite, else ``""``."""
    k = int(np.count_nonzero(np.asarray(done, dtype=bool) & ~np.isfinite(np.asarray(values, dtype=np.float64))))
    return f"{k:,} point{'s' if k != 1 else ''} not finite" if k else ""


def _slice2d(scan: Scan, metric: str, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(x, y, values (nx, ny), done (nx, ny), note) of a 2D scan, or of a 3D scan's slice nearest z = 0."""
    if not is_plane(scan):
        raise ValueError(f"a {what} needs a 2D or 3D scan with at least 2 points along x and y; this one is "
                         f"{' x '.join(str(n) for n in scan.shape)} (draw it with cuts)")
    v = np.asarray(scan.values[metric], dtype=np.float64)
    done = np.asarray(scan.done, dtype=bool)
    note = ""
    if len(scan.axes) == 3:
        k = _center_index(scan.axes[2])
        v, done = v[:, :, k], done[:, :, k]
        note = f" (slice z = {scan.axes[2][k]:.3g})"
    return scan.axes[0], scan.axes[1], v, done, note


def cuts(scan: Scan, metrics: Sequence[str] | None = None, *, log: bool = False, title: str | None = None,
         path: str | Path | None = None) -> Figure:
    """One panel per metric (default: all) against the coordinate; ``log`` puts the loss on a log axis.

    A 1D scan is drawn as it is; a 2D or 3D scan as its cuts through the grid point nearest
    the centre, one line per axis. The frame spans the whole grid, computed or not; a cut with no
    finite value has no line and no legend entry, and the title says so.
    """
    metrics = list(scan.values) if metrics is None else list(metrics)
    fig = Figure(figsize=(6.4, 2.2 + 1.8 * len(metrics)), layout="constrained")
    axs = np.atleast_1d(fig.subplots(len(metrics), 1, sharex=True))
    centre = tuple(_center_index(a) for a in scan.axes)
    empty = set()
    for ax, name in zip(axs, metrics):
        v = np.asarray(scan.values[name], dtype=np.float64)
        for a, coords in enumerate(scan.axes):
            index = list(centre)
            index[a] = slice(None)
            cut = masked(v[tuple(index)])
            axis = "d1" if len(scan.axes) == 1 else AXIS_NAMES[a]
            if cut.count() == 0:
                empty.add(axis)
                continue
            label = "along d1" if len(scan.axes) == 1 else f"along {axis} (others at the centre)"
            ax.plot(coords, cut, marker="." if len(coords) <= 30 else None, label=label, color=f"C{a}")
        if log and name == "loss" and (v[np.isfinite(v)] > 0).any():
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    low, high = min(a[0] for a in scan.axes), max(a[-1] for a in scan.axes)
    if high > low:
        axs[-1].set_xlim(low, high)
    if len(scan.axes) > 1 and axs[0].get_legend_handles_labels()[0]:
        axs[0].legend(frameon=False, fontsize="small")
    axs[-1].set_xlabel("coordinate along the direction")
    heading = title or ("1D scan" if len(scan.axes) == 1 else "cuts through the centre")
    axs[0].set_title(titled(heading, scan, f"along {', '.join(sorted(empty))}: no finite value" if empty else ""),
                     wrap=True)
    return save(fig, path)


def _levels(v: np.ma.MaskedArray, n: int, log: bool) -> tuple[np.ndarray, LogNorm | None]:
    """n contour levels over the finite values: geometric when ``log`` and all are positive, else linear."""
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 1e-6
    if log and lo > 0:
        return np.geomspace(lo, hi, n), LogNorm(lo, hi)
    return np.linspace(lo, hi, n), None


def _log_ticks(lo: float, hi: float, most: int = 12) -> np.ndarray:
    """Between 3 and ``most`` ticks for a log colour bar over [lo, hi]: 1, 2 and 5 times powers of ten, or
    the powers alone when those are too many, or five geometric steps when fewer than three fall inside
    (a range within a decade)."""
    for subs in ((1, 2, 5), (1,)):
        ticks = LogLocator(subs=subs).tick_values(lo, hi)
        ticks = ticks[(ticks >= lo * (1 - 1e-9)) & (ticks <= hi * (1 + 1e-9))]
        if 3 <= len(ticks) <= most:
            return ticks
    return np.geomspace(lo, hi, 5)


def _scale(scan: Scan, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(aspect, stretch): y's display length per unit of x's that draws the plane to scale (|d2| / |d1|,
    1 for equal norms), and the factor the drawing stretches y by when the plane, to scale, would be more than
    8 times longer than wide (then 1 / stretch of its true height ratio is drawn as 8:1 at most; else 1)."""
    D = scan.directions.vectors
    n1, n2 = float(D[0].norm()), float(D[1].norm())
    aspect = n2 / n1 if n1 > 0 and n2 > 0 else 1.0
    ratio = aspect * (y[-1] - y[0]) / (x[-1] - x[0])
    stretch = 1.0
    if ratio < 1 / 8:
        stretch = 1 / (8 * ratio)
    elif ratio > 8:
        stretch = 8 / ratio
    return aspect, stretch


def _plane_figsize(ratio: float, wide: bool, legend_rows: int) -> tuple[float, float]:
    """A figure size whose plot box has height/width ``ratio``, with a title and axis labels, the colour bar
    below the box when ``wide`` (else beside it) and ``legend_rows`` rows of legend under everything."""
    width, height = 5.6, 5.6 * ratio
    if height > 5.2:
        width, height = 5.2 / ratio, 5.2
    return (max(width + (1.0 if wide else 2.2), 4.8),
            max(height + 0.9 + (0.8 if wide else 0.0) + 0.3 * legend_rows, 2.4))


def _trajectory(scan: Scan, trajectory) -> np.ndarray | None:
    if trajectory is None or trajectory is False:
        return None
    if trajectory is True:
        return None if scan.trajectory is None else np.asarray(scan.trajectory["coords"])[:, :2]
    return np.asarray(trajectory, dtype=np.float64)[:, :2]


def contour(scan: Scan, metric: str = "loss", *, log: bool = True, levels: int = 30, zmax: float | None = None,
            trajectory=True, label: str = "trajectory", title: str | None = None, to_scale: bool = True,
            path: str | Path | None = None) -> Figure:
    """Filled contours of ``metric`` over (x, y) with contour lines; levels log-spaced when ``log``
    (and the values positive); values above ``zmax`` share the top colour.

    ``to_scale``: the axes in proportion to the lengths they stand for in parameter space (|d1| per
    unit of x, |d2| per unit of y), unless the plane would then be more than 8 times longer than wide:
    then y is stretched and its label says by how much. ``to_scale=False`` fills a panel 4 high by 5 wide.
    Points not computed yet are light grey and points whose value is not finite are pink, each named in
    the legend with its count. ``trajectory``: True draws the scan's own (if it has one), or pass
    coordinates ``[m, 2]``; its start is a circle, its end a star, its legend entry ``label``, which says
    how far off the plane the run lies when the scan's trajectory is more than 1% off it.
    """
    x, y, v, done, note = _slice2d(scan, metric, "contour")
    if zmax is not None:
        v = np.minimum(v, zmax)
    shown = masked(v)
    aspect, stretch = _scale(scan, x, y) if to_scale else (None, 1.0)
    ratio = aspect * stretch * (y[-1] - y[0]) / (x[-1] - x[0]) if to_scale else 0.8
    wide = ratio < 0.75
    missing = [(where, colour, what) for where, colour, what in (
        (~done, "0.85", "not computed yet"), (done & ~np.isfinite(v), "#f2c4ce", f"{metric} not finite"))
        if where.any()]
    coords = _trajectory(scan, trajectory)
    entries = len(missing) + (3 if coords is not None and len(coords) else 0)
    columns = 3 if ratio <= 1.2 else 1  # a tall plane makes a narrow figure: its legend goes in one column
    fig = Figure(figsize=_plane_figsize(ratio, wide, -(-entries // columns)), layout="compressed")
    ax = fig.subplots()
    X, Y = np.meshgrid(x, y, indexing="ij")  # values[i, j] at (x[i], y[j])
    patches, shaded = [], np.zeros((len(x) - 1, len(y) - 1), dtype=bool)
    for where, colour, what in missing:  # the cells the filled contours leave out: a corner is missing
        cells = (where[:-1, :-1] | where[1:, :-1] | where[:-1, 1:] | where[1:, 1:]) & ~shaded
        shaded |= cells
        ax.pcolormesh(X, Y, np.ma.masked_where(~cells, np.ones_like(cells, dtype=float)), shading="flat", zorder=0,
                      cmap=ListedColormap([colour]))
        patches.append(Patch(facecolor=colour, edgecolor="0.5", lw=0.5, label=f"{what} ({int(where.sum()):,} points)"))
    flat = flatness(shown.filled(np.nan))
    if shown.count() == 0:
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    elif flat:
        ax.contourf(X, Y, shown, levels=[float(shown.min()) - 0.5, float(shown.min()) + 0.5], colors=["#3b528b"])
    else:
        lv, norm = _levels(shown, levels, log)
        filled = ax.contourf(X, Y, shown, levels=lv, norm=norm, cmap="viridis")
        ax.contour(X, Y, shown, levels=lv[::3], norm=norm, colors="white", linewidths=0.4, alpha=0.6)
        bar = fig.colorbar(filled, ax=ax, ticks=_log_ticks(lv[0], lv[-1], 7 if wide else 12) if norm is not None else None,
                           format="%.3g" if norm is not None else None, location="bottom" if wide else "right",
                           shrink=0.8 if wide else 1.0, aspect=40 if wide else 20)
        bar.set_label(metric + (" (log-spaced levels)" if norm is not None else ""))
    off = off_plane(scan) if trajectory is True else None
    if coords is not None and len(coords):
        beyond = not np.all((coords >= [x[0], y[0]]) & (coords <= [x[-1], y[-1]]))
        what = label + (" (leaves the grid)" if beyond else "")
        if off is not None and off > 0.01:
            what += f" ({off:.1%} of its distance off this plane, median)"
        ax.plot(coords[:, 0], coords[:, 1], color="tab:red", lw=1.5, marker=".", ms=4, label=what)
        ax.plot(*coords[0], "o", color="white", mec="tab:red", ms=8, label="start")
        ax.plot(*coords[-1], "*", color="tab:red", mec="white", ms=14, label="end")
    handles = ax.get_legend_handles_labels()[0] + patches
    if handles:  # under the plot, where it hides nothing
        fig.legend(handles=handles, loc="outside lower center", ncols=min(columns, len(handles)), frameon=False,
                   fontsize="small")
    ax.set_xlim(x[0], x[-1])  # the grid, not the run, sets the frame
    ax.set_ylim(y[0], y[-1])
    if to_scale:
        ax.set_box_aspect(ratio)  # equal lengths look equal: the box is in proportion to the grid's extent
    ax.plot(0, 0, "+", color="black", ms=10)
    ax.set_xlabel("x (along d1)")
    ax.set_ylabel("y (along d2)" + (f", drawn {stretch:.3g}x {'stretched' if stretch > 1 else 'squeezed'}"
                                    if stretch != 1 else ""))
    ax.set_title(titled(title or f"{metric}{note}", scan, flat), wrap=True)
    return save(fig, path)


def off_plane(scan: Scan) -> float | None:
    """The median share of its distance from the centre by which the scan's trajectory lies off the plane of the
    first two directions: for checkpoint coordinates c [k] on directions with Gram matrix G = D D^T and residual r
    off their span, the distance off the plane is sqrt(r^2 + c^T G c - b^T G_pp^-1 b) with b = G[:2] c, over the
    whole distance sqrt(c^T G c + r^2)."""
    if scan.trajectory is None or len(scan.trajectory["coords"]) == 0:
        return None
    C = np.asarray(scan.trajectory["coords"], dtype=np.float64)
    D = scan.directions.vectors.double().cpu()[: C.shape[1]]
    G = (D @ D.T).numpy()
    spanned = np.einsum("ma,ab,mb->m", C, G, C)
    b = C @ G[:, :2]
    inside = np.einsum("ma,ab,mb->m", b, np.linalg.pinv(G[:2, :2]), b)
    r = np.asarray(scan.trajectory["residuals"], dtype=np.float64)
    whole = np.sqrt(spanned + r ** 2)
    off = np.sqrt(np.clip(spanned - inside, 0, None) + r ** 2)
    moved = whole > 0
    return float(np.median(off[moved] / whole[moved])) if moved.any() else 0.0


def surface(scan: Scan, metric: str = "loss", *, log: bool = False, zmax: float | None = None,
            title: str | None = None, path: str | Path | None = None) -> Figure:
    """The 3D surface z = ``metric``(x, y) (log10 when ``log``, clipped at ``zmax``), coloured by height."""
    x, y, v, done, note = _slice2d(scan, metric, "surface")
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
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(5))  # tick labels that do not run into each other
    ax.set_xlabel("x (along d1)", labelpad=14)
    ax.set_ylabel("y (along d2)", labelpad=14)
    ax.set_zlabel(label, labelpad=12)  # clear of the tick labels, whatever their width
    ax.view_init(elev=35, azim=-60)
    ax.set_box_aspect(None, zoom=0.88)  # room for the labels inside the figure
    clip = f", clipped at {zmax:g}" if zmax is not None else ""
    ax.set_title(titled(title or f"{label}{note}{clip}", scan, not_finite(v, done), flatness(v)), wrap=True)
    return save(fig, path)


def spectral_density(rho: SpectralDensity, *, log: bool = True, sigma: float | None = None,
                     eigenvalues=None, title: str | None = None, path: str | Path | None = None) -> Figure:
    """The broadened SLQ density over eigenvalue; log density axis by default (floored at 1e-10 of
    the peak, so empty stretches stay visible); ``eigenvalues`` (e.g. the top-k) marked as lines."""
    sigma = sigma or rho.default_sigma()
    grid, values = rho.curve(sigma=sigma)
    fig = Figure(figsize=(6.4, 4.3), layout="constrained")
    ax = fig.subplots()
    if log:
        values = np.maximum(values, values.max() * 1e-10)
        ax.set_yscale("log")
    ax.plot(grid, values, color="tab:blue", lw=1.2,
            label=f"SLQ density ({rho.probes} probes, broadened by sigma = {sigma:.2g})")
    ax.fill_between(grid, values, values.min(), color="tab:blue", alpha=0.15)
    if eigenvalues is not None:
        for i, value in enumerate(np.atleast_1d(eigenvalues)):
            ax.axvline(value, color="tab:red", lw=0.8, ls="--", label="Lanczos eigenvalues" if i == 0 else None)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density" + (" (log scale)" if log else ""))
    ax.set_title(title or "Hessian spectral density")
    fig.legend(loc="outside lower center", ncols=2, frameon=False, fontsize="small")  # clear of the peaks
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
                 stem: str = "", to_scale: bool = True) -> list[Path]:
    """The figures a scan calls for, written to ``out``: ``curve.png`` (1D, or the cuts of 2D/3D),
    ``contour.png`` and ``surface.png`` (2D, or the 3D scan's centre slice; not for a plane of one point
    along x or y). Returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"{stem}curve.png"]
    cuts(scan, log=log, path=written[0])
    if is_plane(scan):
        written += [out / f"{stem}contour.png", out / f"{stem}surface.png"]
        contour(scan, zmax=zmax, to_scale=to_scale, path=written[1])
        surface(scan, log=log, zmax=zmax, path=written[2])
    return written
