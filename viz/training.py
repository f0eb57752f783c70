"""Matplotlib figures of training as a dynamical system. Each function returns a ``Figure`` (the Agg
canvas, no display needed) and saves it when given ``path``.

- ``sharpness_history``: runs over training, with their 2/lr lines (the edge of stability);
- ``lyapunov_spectrum``: the exponents and their running estimates;
- ``over_time``: runs of one quantity against time, with the distances between them;
- ``hopfield_capacity``: a Hopfield network's flipped bits against its load, with the theory;
- ``information_plane``: each layer's I(X;T), I(T;Y) over training, coloured by epoch, with the loss;
- ``kernel_regime``: training against its linearization, with the NTK spectrum;
- ``width_scaling``: the gap and the kernel's change against width, with the fitted power law.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from viz.plots import masked, save


def sharpness_history(histories, *, log: bool = True, title: str | None = None, path: str | Path | None = None) -> Figure:
    """Top Hessian eigenvalue(s) over training, one run or several: each a
    ``dynamics.edge_of_stability.SharpnessHistory`` (or anything with its ``steps [T]``, ``sharpness [T, k]``
    (column 0 is lambda_max), ``loss [T]`` and ``lr``), or a gradient-descent run
    (``dynamics.descent.GDRun``: its ``sharpness`` history, and its loss at every step, ``diverged``,
    ``steps_done``). GD's stability limit 2/lr is dashed in the run's colour; the loss goes in a second
    panel (log scale). Few estimates are drawn as points; a run that diverged says so in the legend, with
    an x at its last finite loss."""
    runs = histories if isinstance(histories, (list, tuple)) else [histories]
    fig = Figure(figsize=(6.4, 6.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    more = False  # a run with more than lambda_max
    for i, run in enumerate(runs):
        h = run.sharpness if hasattr(run, "steps_done") else run
        steps, loss = ((np.arange(len(run.loss)), np.asarray(run.loss, dtype=np.float64)) if hasattr(run, "steps_done")
                       else (np.asarray(h.steps), np.asarray(h.loss, dtype=np.float64)))
        diverged = bool(getattr(run, "diverged", False))
        color = f"C{i}"
        lam = np.asarray(h.sharpness, dtype=np.float64).reshape(len(h.steps), -1)
        more |= lam.shape[1] > 1
        name = f"lr = {h.lr:g}" if h.lr is not None else f"run {i + 1}"
        if diverged:
            name += f", diverged after step {run.steps_done}"
        marker = "o" if len(h.steps) <= 30 else None
        top.plot(h.steps, masked(lam[:, 0]), color=color, lw=1.4, marker=marker, ms=4, label=f"{name}: lambda_max")
        for j in range(1, lam.shape[1]):
            top.plot(h.steps, masked(lam[:, j]), color=color, lw=0.7, alpha=0.5, marker=marker, ms=2)
        if h.lr is not None:
            top.axhline(2 / h.lr, color=color, ls="--", lw=1, label=f"2/lr = {2 / h.lr:.4g}")
        bottom.plot(steps, masked(loss), color=color, marker="o" if len(steps) <= 30 else None, ms=3, label=name)
        finite = np.flatnonzero(np.isfinite(loss))
        if diverged and len(finite):
            bottom.plot(steps[finite[-1]], loss[finite[-1]], "x", color=color, ms=10, mew=2)
    top.set_ylabel("top Hessian eigenvalue" + (" (thin: the next ones)" if more else ""))
    top.legend(frameon=False, fontsize="small")
    top.set_title(title or "sharpness over training", wrap=True)
    bottom.set_ylabel("loss")
    if log:
        bottom.set_yscale("log")
    if any(getattr(r, "diverged", False) for r in runs):
        bottom.legend(handles=[Line2D([], [], color="0.3", marker="x", ls="none", ms=8, mew=2,
                                      label="last finite loss of a diverged run")], frameon=False, fontsize="small")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    bottom.set_xlabel("step")
    return save(fig, path)


def lyapunov_spectrum(exponents, *, running=None, times=None, moving=None, of: int | None = None,
                      title: str | None = None, path: str | Path | None = None) -> Figure:
    """A Lyapunov spectrum ``[k]`` (largest first) as a stem plot with the zero line; with
    ``running [T, k]`` (the estimate after each interval, at ``times [T]``) a convergence panel.
    ``moving [k]`` (bool): exponents that have not converged, drawn hollow and counted in the panel's
    title; ``of``: how many exponents the system has, said in that title when only k < ``of`` were
    computed. ``title`` heads the whole figure (wrapped when long)."""
    lam = np.asarray(exponents, dtype=np.float64).reshape(-1)
    panels = 2 if running is not None else 1
    fig = Figure(figsize=(6.4 * panels, 4.0), layout="constrained")
    axs = np.atleast_1d(fig.subplots(1, panels))
    index = np.arange(1, len(lam) + 1)
    axs[0].axhline(0, color="black", lw=0.8)
    axs[0].stem(index, masked(lam))
    said = []
    if of is not None and len(lam) < of:
        said.append(f"the first {len(lam)} of {of}")
    if moving is not None and np.any(moving):
        still = np.asarray(moving, dtype=bool)
        axs[0].plot(index[still], lam[still], "o", mfc="white", mec="tab:blue", mew=1.5, zorder=3,
                    label="still moving (> 10% over the last quarter)")
        axs[0].legend(frameon=False, fontsize="small")
        said.append(f"{int(still.sum())} not converged")
    axs[0].set_xlabel("index i")
    axs[0].set_ylabel("exponent lambda_i")
    axs[0].set_xticks(index if len(lam) <= 20 else index[:: max(1, len(lam) // 10)])
    axs[0].set_title("spectrum" + (f" ({'; '.join(said)})" if said else ""))
    fig.suptitle(title or "Lyapunov spectrum", wrap=True)
    if running is not None:
        R = np.asarray(running, dtype=np.float64).reshape(-1, len(lam))
        t = np.arange(1, len(R) + 1) if times is None else np.asarray(times, dtype=np.float64)
        for i in range(len(lam)):
            axs[1].plot(t, masked(R[:, i]), lw=1, label=f"lambda_{i + 1}" if len(lam) <= 8 else None)
        axs[1].axhline(0, color="black", lw=0.8)
        axs[1].set_xlabel("time")
        axs[1].set_ylabel("running estimate")
        axs[1].set_title("convergence")
        if len(lam) <= 8:
            axs[1].legend(frameon=False, fontsize="small")
    for ax in axs:
        ax.grid(alpha=0.3)
    return save(fig, path)


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
        axs[0].plot(t, masked(values), ls=styles[i % 4], lw=1.5, label=label)
    axs[0].set_ylabel(ylabel)
    if log:
        axs[0].set_yscale("log")
    axs[0].legend(frameon=False, fontsize="small")
    axs[0].set_title(title or f"{ylabel} over time")
    if gaps:
        for label, values in gaps.items():
            v = np.asarray(values, dtype=np.float64)
            axs[1].plot(t, masked(np.where(v > 0, v, np.nan)), lw=1.2, label=label)
        axs[1].set_yscale("log")
        axs[1].set_ylabel("distance")
        axs[1].legend(frameon=False, fontsize="small")
    for ax in axs:
        ax.grid(alpha=0.3)
    axs[-1].set_xlabel("time (GD step k at t = k lr)")
    return save(fig, path)


def hopfield_capacity(capacities: Mapping[str, object], *, theory: tuple | None = None, critical: float | None = None,
                      title: str | None = None, path: str | Path | None = None) -> Figure:
    """Storage capacity: ``{label: result}`` with ``N``, ``trials``, ``alphas``, ``patterns``, ``flipped_mean``,
    ``flipped_std`` and ``retrieved`` arrays (``dynamics.systems.hopfield.Capacity``); ``theory``:
    ``(alphas, flipped)`` drawn as a line, ``critical``: the critical load, a dashed vertical line.

    Top: the fraction of bits flipped at the fixed point, on a symmetric log axis that is linear below
    the resolution, one bit of all the bits counted at the largest load (1 / (N P trials)): a load where
    no bit flipped sits at 0, not at an arbitrary floor. Below: the share of patterns retrieved exactly."""
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    resolution = min(1 / (c.N * max(int(np.max(c.patterns)), 1) * c.trials) for c in capacities.values())
    for label, c in capacities.items():
        a, m, sd = np.asarray(c.alphas), np.asarray(c.flipped_mean), np.asarray(c.flipped_std)
        line, = top.plot(a, m, "o-", ms=4, label=label)
        top.fill_between(a, np.maximum(m - sd, 0), m + sd, color=line.get_color(), alpha=0.15, lw=0)
        bottom.plot(a, c.retrieved, "o-", ms=4, color=line.get_color())
    if theory is not None:
        top.plot(theory[0], theory[1], "k-", lw=1, label="AGS theory (N -> infinity)")
    for ax in (top, bottom):
        if critical is not None:
            ax.axvline(critical, color="gray", ls="--", lw=1)
        ax.grid(alpha=0.3)
    if critical is not None:
        top.text(critical, 0.5, f" alpha_c = {critical:.3f}", transform=top.get_xaxis_transform(), color="gray")
    linthresh = 10.0 ** np.floor(np.log10(resolution))
    top.set_yscale("symlog", linthresh=linthresh, linscale=0.5)
    top.set_ylim(0, 1)
    top.axhspan(0, linthresh, color="0.92", zorder=0, lw=0)
    top.set_ylabel("fraction of bits flipped\n(linear in the grey band)")
    top.legend(frameon=False, fontsize="small", loc="upper left")
    bottom.set_ylabel("retrieved exactly")
    bottom.set_xlabel("load alpha = P / N")
    top.set_title(title or "Hopfield network: storage capacity", wrap=True)
    return save(fig, path)


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
    colour bar), each layer a colour named in the legend, its first point ringed and its last boxed (no
    names on the plot, where layers that end together would print over each other); H(Y), the most
    I(T;Y) can be, dashed; the estimator and its settings title the legend. Right, with ``loss``: the
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
        ax.plot(x[ok][-1:], y[ok][-1:], "s", ms=9, mfc="none", mec=color, mew=1.2, zorder=3, label=f"_{name} end")
    if points is not None:
        fig.colorbar(points, ax=ax, label="epoch", pad=0.01)
    ax.axhline(plane.H_Y, color="gray", ls="--", lw=1, zorder=0, label=f"H(Y) = {plane.H_Y:.3g} bits")
    handles = ax.get_legend_handles_labels()[0] + [
        Line2D([], [], marker="o", ms=8, mfc="none", mec="0.3", ls="none", label=f"epoch {epochs[0]:g}"),
        Line2D([], [], marker="s", ms=7, mfc="none", mec="0.3", ls="none", label=f"epoch {epochs[-1]:g}")]
    ax.legend(handles=handles, title=_estimator_note(plane.method, plane.settings), loc="best", ncols=2,
              fontsize="small", title_fontsize="small", framealpha=0.8)
    highest = max([plane.H_Y, *I_TY[np.isfinite(I_TY)]])
    ax.set_ylim(top=highest * 1.05 if highest > 0 else 0.1)
    ax.set_xlabel("I(X;T) (bits)")
    ax.set_ylabel("I(T;Y) (bits)")
    ax.grid(alpha=0.3)
    ax.set_title(title or "information plane")
    if loss_ax is None:
        return save(fig, path)
    loss_ax.plot(epochs, masked(plane.loss), "o-", ms=3, color="black", lw=1)
    if np.any(np.asarray(plane.loss, dtype=np.float64) > 0):
        loss_ax.set_yscale("log")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss")
    loss_ax.grid(alpha=0.3)
    loss_ax.set_title("loss")
    return save(fig, path)


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
        line, = axs[0].plot(t, masked(run.loss), lw=1.5, label=label)
        axs[0].plot(t, masked(run.linear_loss), ls="--", lw=1.2, color=line.get_color())
        gap = np.asarray(run.gap, dtype=np.float64)
        axs[1].plot(t[1:], masked(np.where(gap[1:] > 0, gap[1:], np.nan)), lw=1.5, color=line.get_color(),
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
    return save(fig, path)


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
    ax.set_xticks(w, [f"{v:g}" for v in w])  # the widths themselves, not crowded 3x10^1 4x10^1 labels
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yscale("log")
    ax.set_xlabel("width")
    ax.set_ylabel("relative change")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize="small")
    ax.set_title(title or "leaving the kernel regime as width shrinks")
    return save(fig, path)
