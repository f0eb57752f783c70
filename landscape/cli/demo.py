"""``landscape demo``: the whole tour on the built-in digits-mlp (spectrum, landscape, figures, ParaView files)."""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from landscape import problems
from landscape.cli.common import output_folder, parse_device, report
from landscape.cli.common import draw
from landscape.cli.common import checkpoints, load_trajectory, place
from landscape.cli.common import negative_mass
from landscape.curvature.operators import hessian
from landscape.curvature.spectrum import density, eigenvalues
from landscape.linalg.trace import hutchpp
from landscape.scans import directions as dirs
from landscape.scans.scan import load as load_scan
from landscape.scans.scan import scan


def add_parser(subparsers) -> None:
    sub = subparsers.add_parser(
        "demo", help="the whole tour on the built-in digits-mlp: spectrum, landscape, figures, ParaView files",
        description="Train the built-in digits-mlp keeping checkpoints, check its HVPs, find the top of its "
                    "Hessian spectrum, its trace and spectral density, scan the loss on a filter-normalized "
                    "random plane and on the PCA plane of the training run (the trajectory placed on both), and "
                    "write PNGs (density, contours with the trajectory, surfaces, VTK renderings) and VTK files "
                    "(.vti, .vts, .vtp, a .pvd time series) to DIR. Under a minute on a CPU.")
    sub.add_argument("--out", default="landscape-demo", metavar="DIR",
                     help="where the files go (default: landscape-demo)")
    sub.add_argument("--points", type=int, default=51, metavar="N",
                     help="grid points per axis of the 2D scans (default 51; made odd)")
    sub.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu)")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.points < 3:
        raise ValueError(f"--points must be at least 3, got {args.points}")
    out = output_folder(args.out)
    began = time.perf_counter()
    print("landscape demo: train the built-in digits-mlp keeping checkpoints, look at its Hessian spectrum and "
          "its loss landscape, and write the figures and ParaView files.\n", flush=True)
    folder = out / "checkpoints"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("step_*.pt"):
        old.unlink()  # a previous run's checkpoints would join this trajectory

    def keep(step: int, model: torch.nn.Module) -> None:
        if step % 20 == 0:
            torch.save(model.state_dict(), folder / f"step_{step:03d}.pt")

    problem = problems.load("digits-mlp", callback=keep)
    obj = problem.objective(device=parse_device(args.device))
    report(problem, obj)
    files = checkpoints(str(folder))
    print(f"{'checkpoints':<12} {len(files)} (every 20 Adam steps) in {folder}", flush=True)
    H = hessian(obj)
    top = eigenvalues(H, k=3)
    print(f"{'top of H':<12} {', '.join(f'{v:.6g}' for v in top.eigenvalues)} (Lanczos: {top.n_matvecs} HVPs, "
          f"residuals <= {top.residuals.max():.0e}, {'converged' if top.converged else 'NOT converged'})")
    trace = hutchpp(H, n_matvecs=60, seed=0)
    print(f"{'trace':<12} {trace.estimate:.6g} +- {trace.stderr:.2g} (Hutch++, {trace.n_matvecs} HVPs)")
    rho = density(H, probes=8, steps=40, seed=0, progress=True)
    from viz import plots, scenes, vtkio

    written = [out / "density.png"]
    plots.spectral_density(rho, eigenvalues=top.eigenvalues, path=written[0], title="digits-mlp: Hessian spectral density")
    print(f"{'density':<12} {negative_mass(rho)} (SLQ, {rho.n_matvecs} HVPs)", flush=True)

    trajectory = load_trajectory(files, problem, obj)
    n = args.points + (args.points % 2 == 0)  # odd: the model itself at the centre
    planes = {"random": dirs.random(obj, k=2, norm="filter", seed=0),
              "pca": dirs.pca(obj, trajectory[1], k=2, center=obj.theta0)}
    for name, d in planes.items():
        if name == "random":
            grid = [f"-1:1:{n}"] * 2
            what = "filter-normalized random plane (Li et al.)"
        else:  # the plane the run moved in, wide enough to hold the whole trajectory
            reach = np.abs(dirs.project(d, trajectory[1], center=obj.theta0).coords).max(axis=0) * 1.2
            grid = [f"{-r:.4g}:{r:.4g}:{n}" for r in reach]
            share = ", ".join(f"{v:.0%}" for v in d.explained_variance)
            what = f"PCA plane of the trajectory (explained variance {share})"
        path = out / name / "scan.h5"
        if path.exists():
            path.unlink()
        result = scan(obj, d, grid, metrics=problem.metrics, store=path, meta={"problem": problem.name})
        found = result.minimum()
        print(f"{name + ' plane':<12} {what}: {n} x {n} points in {result.seconds:.1f} s; centre loss "
              f"{result.center_values['loss']:.4g}, lowest {found[1]:.4g} at ({found[0][0]:.3g}, {found[0][1]:.3g})",
              flush=True)
        place(path, d, result, trajectory)
        written += draw(load_scan(path), out / name, png=True, vtk=True, log=True, zmax=None,
                        title=f"digits-mlp, {what.split(' (')[0]}", announce=False)

    # the random plane's landscape around checkpoints of the run, as a time series for ParaView
    steps = [int(f.stem.split("_")[1]) for f in files]
    picks = sorted({round(i * (len(files) - 1) / 4) for i in range(5)})
    m = max(3, n // 2) | 1
    entries, around = [], []
    for i in picks:
        center = trajectory[1][i]
        d = dirs.random(obj, k=2, norm="filter", seed=0, center=center)
        around.append(scan(obj, d, [f"-1:1:{m}"] * 2, progress=False))
        entries.append((steps[i], vtkio.write_vts(around[-1], out / "series" / f"step_{steps[i]:03d}.vts", log=True)))
    written += [f for _, f in entries] + [vtkio.write_pvd(out / "series.pvd", entries)]
    written.append(scenes.series_script(out / "view_series.py", "series.pvd", around, [t for t, _ in entries],
                                        log=True))
    print(f"{'series':<12} the landscape ({m} x {m}, filter-normalized at each) around the checkpoints at steps "
          f"{', '.join(str(steps[i]) for i in picks)}: {out / 'series.pvd'}")
    print(f"\n{'done':<12} {time.perf_counter() - began:.0f} s; {len(written)} files in {out}:")
    for f in written:
        print(f"  {f}")
    print(f"{'next':<12} open {out / 'pca' / 'render.png'}; in ParaView, `pvpython {out / 'pca' / 'view.py'}` "
          f"or `pvpython {out / 'view_series.py'}` (the time slider); `pvbatch ... --screenshot` writes a PNG")
    return 0
