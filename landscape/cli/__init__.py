"""The ``landscape`` command: ``info``, ``spectrum``, ``scan``, ``render``, ``eos``, ``flow``, ``lyapunov``,
``connect``, ``hopfield``, ``infoplane`` and ``demo``.

Bad input (an unknown problem, a missing file, a checkpoint that does not fit) is
reported in one line on stderr with exit code 2.

``scan`` and ``spectrum`` also run under ``torchrun`` (``torchrun --nproc_per_node N -m landscape
scan ...``), found from the environment it sets (WORLD_SIZE > 1): ``spectrum`` on the data-parallel
objective, ``scan`` on a grid split over the processes (``landscape.core.distributed``). Rank 0 prints
and writes the JSON and figures; the other ranks print only their errors.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from landscape import problems
from landscape.core import data_parallel, distributed
from landscape.core.data_parallel import DataParallelObjective
from landscape.core.objective import Objective
from landscape.core.results import fingerprint
from landscape.curvature.operators import hessian
from landscape.curvature.spectrum import density, eigenvalues
from landscape.linalg.trace import hutchpp
from landscape.scans import directions as dirs
from landscape.scans import store as scan_store
from landscape.scans.grid import parse_grid
from landscape.scans.points import STRATEGIES
from landscape.scans.scan import Scan, scan
from landscape.scans.scan import load as load_scan

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _device(spec: str | None) -> torch.device | None:
    if spec is None:
        return None
    try:
        device = torch.device(spec)
    except RuntimeError as error:
        raise ValueError(f"--device {spec!r} is not a device name like cpu, cuda or cuda:1") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: CUDA is not available on this machine")
    return device


def _problem_kwargs(pairs: list[str] | None) -> dict:
    """``["loss=mse", "examples=256"]`` -> ``{"loss": "mse", "examples": 256}`` (ints, floats, else strings)."""
    kwargs = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--problem-arg {pair!r} is not KEY=VALUE, e.g. loss=mse")
        kwargs[key] = _number(value)
    return kwargs


def _number(text: str):
    """``"256"`` -> 256, ``"0.1"`` -> 0.1, anything else stays a string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _problem(args, untrained: bool = False) -> problems.Problem:
    """The problem of ``--problem`` with ``--problem-arg``s; a built-in is left untrained when a checkpoint
    replaces its weights anyway, or when ``untrained`` (a command that trains it itself)."""
    checkpoint = getattr(args, "checkpoint", None)
    kwargs = _problem_kwargs(getattr(args, "problem_arg", None))
    builder = problems.BUILTIN.get(args.problem)
    if (checkpoint or untrained) and builder and "steps" in inspect.signature(builder).parameters:
        kwargs.setdefault("steps", 0)  # no training to overwrite
    try:
        problem = problems.load(args.problem, **kwargs)
    except TypeError as error:  # a keyword the built-in does not take
        raise ValueError(f"--problem-arg: {error}") from error
    if checkpoint:
        problems.load_checkpoint(problem.model, checkpoint)
    return problem


def report(problem: problems.Problem, obj: Objective) -> None:
    """Print what the problem is and where it stands: size, loss, gradient norm, metrics, HVP check."""
    def line(key: str, value: str) -> None:
        print(f"{key:<12} {value}", flush=True)

    line("problem", f"{problem.name}: {problem.description}" if problem.description else problem.name)
    line("parameters", f"{obj.space.n:,} in {len(obj.space.names)} tensors, "
                       f"{str(obj.dtype).removeprefix('torch.')} on {obj.device}")
    loss, grad = obj.loss_and_grad()
    line("loss", f"{loss.item():.6g}")
    line("grad norm", f"{grad.norm().item():.4g}")
    if problem.metrics:
        train = obj.evaluate(metrics=problem.metrics)
        test = None
        if problem.test_data is not None:
            test = Objective(problem.model, problem.loss_fn, problem.test_data, params=list(obj.space.names),
                             device=obj.device, dtype=obj.dtype).evaluate(metrics=problem.metrics)
        for name in problem.metrics:
            line(name, f"{train[name]:.4f} (train)" + (f"  {test[name]:.4f} (test)" if test else ""))
    check = obj.check_hvp()
    verdict = "ok" if check.ok else "WRONG: an autodiff rule in this model disagrees with finite differences"
    line("HVP check", f"relative error {check.rel_error:.1e} against central differences "
                      f"({check.dtype}, {len(check.rel_errors)} random unit vectors, {check.mode} mode): {verdict}")


def _objective(args, problem: problems.Problem, data_parallel: bool = False) -> Objective:
    """The problem's objective; ``data_parallel`` under torchrun: each rank's shard of the data, and only that
    moved to its device."""
    kwargs = {"params": args.params, "device": _device(args.device),
              "dtype": DTYPES[args.dtype] if args.dtype else None}
    if data_parallel and args.world.active:
        return DataParallelObjective(problem.model, problem.loss_fn, problem.data, world=args.world,
                                                 batch_size=problem.batch_size, **kwargs)
    return problem.objective(**kwargs)


def _headline(problem: problems.Problem, obj: Objective, note: str = "") -> None:
    """The first line of a command's report: the problem, its size, precision and device (and ``note``)."""
    print(f"problem      {problem.name}, {obj.space.n:,} parameters, {str(obj.dtype).removeprefix('torch.')} "
          f"on {obj.device}" + (f"; {note}" if note else ""), flush=True)


def _info(args) -> int:
    problem = _problem(args)
    report(problem, _objective(args, problem))
    return 0


def _spectrum(args) -> int:
    if args.k < 1:
        raise ValueError(f"--k must be at least 1, got {args.k}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    problem = _problem(args)
    obj = _objective(args, problem, data_parallel=True)  # its memory budget is one all ranks agree on
    world = args.world
    H = hessian(obj)
    _headline(problem, obj, f"data-parallel over {world.size} processes ({world.backend})" if world.active else "")
    top = eigenvalues(H, k=args.k, which=args.which, tol=args.tol, progress=True)
    if top.converged:
        verdict = "converged"
    elif top.n_matvecs >= top.settings["max_steps"]:
        verdict = "NOT converged: the step budget ran out"
    else:
        verdict = ("NOT converged: the measured residuals stay above tol, the precision of the products "
                   "(try --dtype float64 or a larger --tol)")
    print(f"eigenvalues  {args.which} {args.k}: {top.n_matvecs} HVPs, {top.seconds:.2f} s, {verdict} at tol {args.tol:g}")
    for i, (value, residual) in enumerate(zip(top.eigenvalues, top.residuals), 1):
        print(f"  {i:>3}  {value: .8e}   residual {residual:.1e}")
    summary = {"problem": problem.name, "parameters": obj.space.n, "dtype": str(obj.dtype).removeprefix("torch."),
               "eigenvalues": top.to_dict(), **({"processes": world.size} if world.active else {})}
    if args.trace:
        trace = hutchpp(H, n_matvecs=args.trace_budget)
        print(f"trace        {trace.estimate:.6g} +- {trace.stderr:.2g} (Hutch++, {trace.n_matvecs} HVPs)")
        summary["trace"] = trace.to_dict()
    if args.density or args.plot:
        rho = density(H, probes=args.probes, steps=args.steps, progress=True)
        print(f"density      {args.probes} probes x {args.steps} steps, {rho.n_matvecs} HVPs, {_negative_mass(rho)}")
        summary["density"] = rho.to_dict()
        if args.plot and world.main:
            from viz.plots import spectral_density

            spectral_density(rho, log=args.scale == "log", eigenvalues=top.eigenvalues,
                             title=f"{problem.name}: Hessian spectral density", path=out / "density.png")
            print(f"wrote        {out / 'density.png'}")
    if world.main:
        (out / "spectrum.json").write_text(json.dumps(summary, indent=2))
        print(f"wrote        {out / 'spectrum.json'}")
    return 0


def _negative_mass(rho) -> str:
    """The share of the spectrum below -1e-3 of the largest |eigenvalue|. Not below zero: a trained
    network's Hessian has many eigenvalues within 1e-6 of zero, whose signs SLQ cannot resolve
    (on digits-mlp the share below 0 moves from 15% to 41% with the probe count)."""
    threshold = -1e-3 * float(np.abs(rho.nodes[np.isfinite(rho.nodes)]).max())
    return f"{100 * rho.mass_below(threshold):.2f}% of the spectrum below {threshold:.3g} (-1e-3 of the largest |eigenvalue|)"


def _checkpoints(folder: str) -> list[Path]:
    """The checkpoints ``*.pt``/``*.pth`` in ``folder``, in natural order (step2 before step10)."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"--trajectory {folder} is not a directory")
    files = sorted((f for f in path.iterdir() if f.suffix in (".pt", ".pth")),
                   key=lambda f: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", f.name)])
    if not files:
        raise ValueError(f"--trajectory {folder} holds no checkpoints (*.pt or *.pth files)")
    return files


def _trajectory(files: list[Path], problem: problems.Problem, obj: Objective) -> tuple[list[str], torch.Tensor, list]:
    """The checkpoints as flat parameter vectors ``[m, n]`` of ``obj``'s space, and each one's own
    loss (its parameters and its buffers, such as BatchNorm's running statistics)."""
    model = copy.deepcopy(problem.model)
    rows, losses = [], []
    for f in files:
        problems.load_checkpoint(model, f)
        rows.append(obj.space.flatten(dict(model.named_parameters())).detach().to(obj.device, obj.dtype))
        own = Objective(model, problem.loss_fn, problem.data, batch_size=problem.batch_size, device=obj.device,
                        dtype=obj.dtype)  # a snapshot of this checkpoint, buffers included
        losses.append(own.loss().item())
    return [f.name for f in files], torch.stack(rows), losses


def _scan_directions(args, obj: Objective, k: int, trajectory, stored: dict | None) -> dirs.Directions:
    if args.directions == "random":
        return dirs.random(obj, k=k, norm=args.norm, seed=args.seed, include_1d=args.include_1d)
    if args.directions == "pca":
        if trajectory is None:
            raise ValueError("--directions pca needs --trajectory DIR (the checkpoints of a training run)")
        return dirs.pca(obj, trajectory[1], k=k, center=obj.theta0)
    wanted = {"kind": "hessian", "k": k, "which": "largest", "tol": args.tol, "seed": args.seed,
              "center": fingerprint(obj.theta0)}
    recipe = stored and stored["key"]["recipe"]
    if recipe and all(recipe.get(key) == value for key, value in wanted.items()):
        print("directions   the stored Hessian eigenvectors (same recipe; not recomputed)", flush=True)
        return dirs.Directions(torch.from_numpy(stored["directions"]).to(obj.device, obj.dtype), recipe)
    found = dirs.hessian(data_parallel.data_parallel(obj, args.world) if args.world.active else obj, k=k, tol=args.tol,
                         seed=args.seed)
    print(f"directions   top {k} Hessian eigenvectors, eigenvalues "
          f"{', '.join(f'{v:.6g}' for v in found.recipe['eigenvalues'])}", flush=True)
    return found


def _scan(args) -> int:
    axes = parse_grid(args.grid)  # bad grids and scales fail before any work
    _check_scale(args.log, args.zmax)
    if args.chunk is not None and args.chunk < 1:
        raise ValueError(f"--chunk must be at least 1, got {args.chunk}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "scan.h5"
    world = args.world
    if (path.exists() or scan_store.parts(path)) and not args.resume:
        what = f"{path} exists" if path.exists() else f"{path}'s per-rank files ({scan_store.parts(path)[0].name}, ...) exist"
        raise ValueError(f"{what}: pass --resume to continue that scan, or choose another --out")
    stored = scan_store.read(path) if path.exists() else None
    saved = scan_store.progress(path)[1]  # with the per-rank files of an interrupted distributed scan
    if args.resume and saved is None:
        print(f"resume       nothing to resume in {out}: starting the scan", flush=True)
    files = _checkpoints(args.trajectory) if args.trajectory else None
    if files and not args.checkpoint:
        args.checkpoint = str(files[-1])  # the centre: the end of the run, buffers included
    problem = _problem(args)
    obj = _objective(args, problem)
    trajectory = _trajectory(files, problem, obj) if files else None
    _headline(problem, obj, f"point-parallel over {world.size} processes ({world.backend})" if world.active else "")
    d = _scan_directions(args, obj, len(axes), trajectory, stored)
    if saved is not None:
        print(f"resuming     {path}: {int(saved.sum())} of {saved.size} points done", flush=True)
    meta = {"problem": problem.name, "checkpoint": args.checkpoint, "trajectory": args.trajectory}
    try:
        result = scan(obj, d, args.grid, metrics=problem.metrics, store=path, strategy=args.strategy,
                      chunk=args.chunk, meta=meta, world=world)
    except KeyboardInterrupt:
        try:
            done = scan_store.progress(path)[1]
            count = f"{int(done.sum())} of {done.size} points are"
        except ValueError:  # another rank's file still open
            count = "the points done are"
        print(f"landscape scan: interrupted; {count} saved in {path}" + (" and its per-rank files" if world.active
                                                                          else "")
              + ": the same command with --resume continues", file=sys.stderr)
        return 130
    if not world.main:
        return 0  # rank 0 reports and writes
    summary = {"problem": problem.name, "parameters": obj.space.n, "dtype": str(obj.dtype).removeprefix("torch."),
               "device": str(obj.device), **({"processes": world.size} if world.active else {}), **result.to_dict()}
    shape = " x ".join(str(len(a)) for a in result.axes)
    rate = f", {summary['points_per_second']:.1f} points/s" if result.points_computed else ""
    print(f"scan         {shape} points along {args.directions} directions: {result.points_computed} computed in "
          f"{result.seconds:.2f} s{rate} ({result.strategy})")
    print("centre       " + ", ".join(f"{k} {v:.6g}" for k, v in result.center_values.items()))
    found = summary["minimum"]
    print("minimum      " + ("none finite" if found is None else
                             f"loss {found['loss']:.6g} at ({', '.join(f'{c:.4g}' for c in found['coords'])})"))
    non_finite = summary["non_finite"]
    if non_finite:
        print(f"non-finite   {non_finite} points have a NaN or infinite loss (recorded as such)")
    if trajectory is not None:
        summary["trajectory"] = _place(path, d, result, trajectory)
    (out / "scan.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote        {path} and {out / 'scan.json'}")
    if args.plot:
        _draw(load_scan(path), out, png=True, vtk=False, log=args.log, zmax=args.zmax)
    return 0


def _place(path: Path, d: dirs.Directions, result: Scan, trajectory) -> dict:
    """Project the checkpoints onto the scan's plane and store them (with their own loss) in the scan file;
    say how far off the plane they are and whether the grid holds them."""
    names, T, losses = trajectory
    placed = dirs.project(d, T, center=result.center)
    scan_store.add_trajectory(path, placed.coords, placed.residuals, names, losses)
    off = placed.relative[placed.residuals > 0] if (placed.residuals > 0).any() else np.zeros(1)
    print(f"trajectory   {len(names)} checkpoints projected; off-plane distance median {np.median(off):.1%}, "
          f"up to {off.max():.1%} of their distance from the centre", flush=True)
    low, high = placed.coords.min(axis=0), placed.coords.max(axis=0)
    outside = [f"{'xyz'[a]} from {low[a]:.3g} to {high[a]:.3g}" for a, axis in enumerate(result.axes)
               if low[a] < axis[0] or high[a] > axis[-1]]
    if outside:
        print(f"             the run reaches beyond the grid ({', '.join(outside)}): figures show the part "
              f"inside; widen --grid to see all of it", flush=True)
    return {"names": names, "loss": losses, **placed.to_dict()}


def _check_scale(log: bool, zmax: float | None) -> None:
    if zmax is not None and not math.isfinite(zmax):
        raise ValueError(f"--zmax must be a finite number, got {zmax}")
    if log and zmax is not None and zmax <= 0:
        raise ValueError(f"--zmax {zmax:g} with --log: the clip must be positive to take a log")


def _draw(result: Scan, out: Path, *, png: bool, vtk: bool, log: bool, zmax: float | None,
          title: str | None = None, announce: bool = True) -> list[Path]:
    """Write a scan's figures (curve, contour, surface, and a VTK rendering of a 2D one) and its VTK
    files to ``out``; print each file (``announce``). A rendering VTK cannot make here is skipped with a note."""
    _check_scale(log, zmax)
    loss = result.values["loss"]
    if not np.isfinite(loss).any():
        raise ValueError("nothing to draw: " + ("no computed point has a finite loss" if result.done.any()
                                                 else "no point of this scan is computed yet"))
    if zmax is not None and zmax <= np.nanmin(np.where(np.isfinite(loss), loss, np.nan)):
        raise ValueError(f"--zmax {zmax:g} is at or below the lowest loss, {np.nanmin(loss[np.isfinite(loss)]):.4g}: "
                         f"everything would be one flat sheet")
    if log and not (loss[np.isfinite(loss)] > 0).any():
        raise ValueError("--log needs a positive loss somewhere; this scan has none")
    written = []
    if png:
        from viz import plots, render

        written += plots.scan_figures(result, out, log=log, zmax=zmax)
        if len(result.axes) == 2:
            try:
                written.append(render.render(result, out / "render.png", log=log, zmax=zmax, title=title))
            except RuntimeError as error:
                print(f"render       skipped: {error}", flush=True)
    if vtk:
        from viz import vtkio

        written += vtkio.export(result, out, log=log, zmax=zmax)
    for f in written if announce else []:
        print(f"wrote        {f}", flush=True)
    return written


def _render(args) -> int:
    run = Path(args.run_dir)
    path = run / "scan.h5" if run.is_dir() else run
    if not path.is_file():
        raise FileNotFoundError(f"{args.run_dir} holds no scan.h5 (a folder written by landscape scan)")
    result = load_scan(path)
    shape = " x ".join(str(n) for n in result.shape)
    done = int(result.done.sum())
    print(f"scan         {path}: {shape}, {done} of {result.done.size} points computed"
          + ("" if done == result.done.size else " (the rest are drawn as gaps)"), flush=True)
    png, vtk = (args.png, args.vtk) if args.png or args.vtk else (True, True)
    _draw(result, Path(args.out) if args.out else path.parent, png=png, vtk=vtk, log=args.log, zmax=args.zmax)
    return 0


def _demo(args) -> int:
    if args.points < 3:
        raise ValueError(f"--points must be at least 3, got {args.points}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
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
    obj = problem.objective(device=_device(args.device))
    report(problem, obj)
    files = _checkpoints(str(folder))
    print(f"{'checkpoints':<12} {len(files)} (every 20 Adam steps) in {folder}", flush=True)
    H = hessian(obj)
    top = eigenvalues(H, k=3)
    print(f"{'top of H':<12} {', '.join(f'{v:.6g}' for v in top.eigenvalues)} (Lanczos: {top.n_matvecs} HVPs, "
          f"residuals <= {top.residuals.max():.0e}, {'converged' if top.converged else 'NOT converged'})")
    trace = hutchpp(H, n_matvecs=60, seed=0)
    print(f"{'trace':<12} {trace.estimate:.6g} +- {trace.stderr:.2g} (Hutch++, {trace.n_matvecs} HVPs)")
    rho = density(H, probes=8, steps=40, seed=0, progress=True)
    from viz import plots, vtkio

    written = [out / "density.png"]
    plots.spectral_density(rho, eigenvalues=top.eigenvalues, path=written[0], title="digits-mlp: Hessian spectral density")
    print(f"{'density':<12} {_negative_mass(rho)} (SLQ, {rho.n_matvecs} HVPs)", flush=True)

    trajectory = _trajectory(files, problem, obj)
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
        _place(path, d, result, trajectory)
        written += _draw(load_scan(path), out / name, png=True, vtk=True, log=True, zmax=None,
                         title=f"digits-mlp, {what.split(' (')[0]}", announce=False)

    # the random plane's landscape around checkpoints of the run, as a time series for ParaView
    steps = [int(f.stem.split("_")[1]) for f in files]
    picks = sorted({round(i * (len(files) - 1) / 4) for i in range(5)})
    m = max(3, n // 2) | 1
    entries = []
    for i in picks:
        center = trajectory[1][i]
        d = dirs.random(obj, k=2, norm="filter", seed=0, center=center)
        around = scan(obj, d, [f"-1:1:{m}"] * 2, progress=False)
        entries.append((steps[i], vtkio.write_vts(around, out / "series" / f"step_{steps[i]:03d}.vts", log=True)))
    written += [f for _, f in entries] + [vtkio.write_pvd(out / "series.pvd", entries)]
    print(f"{'series':<12} the landscape ({m} x {m}, filter-normalized at each) around the checkpoints at steps "
          f"{', '.join(str(steps[i]) for i in picks)}: {out / 'series.pvd'}")
    print(f"\n{'done':<12} {time.perf_counter() - began:.0f} s; {len(written)} files in {out}:")
    for f in written:
        print(f"  {f}")
    print(f"{'next':<12} open {out / 'pca' / 'render.png'}; in ParaView, `pvpython {out / 'pca' / 'view.py'}` "
          f"or File > Open {out / 'series.pvd'}")
    return 0


def _eos(args) -> int:
    from dynamics.descent import gradient_descent
    from dynamics.edge_of_stability import SharpnessTracker

    if not args.lr or any(not lr > 0 for lr in args.lr):
        raise ValueError(f"--lr must be positive, got {args.lr}")
    if args.steps < 1 or args.every < 1 or args.k < 1:
        raise ValueError("--steps, --every and --k must be at least 1")
    pairs = list(args.problem_arg or [])
    if args.problem == "digits-mlp" and not any(p.startswith("loss=") for p in pairs):
        pairs.append("loss=mse")  # Cohen et al.'s square loss, where sharpness settles at 2/lr
    args.problem_arg = pairs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    problem = _problem(args, untrained=True)
    obj = _objective(args, problem)
    _headline(problem, obj, f"full-batch gradient descent from {'--checkpoint' if args.checkpoint else 'its start'}"
                            + (f" ({', '.join(pairs)})" if pairs else ""))
    runs = []
    for lr in args.lr:
        tracker = SharpnessTracker(obj, lr=lr, every=args.every, k=args.k, tol=args.tol, seed=args.seed)
        run = gradient_descent(obj, lr, args.steps, tracker=tracker)
        h = run.sharpness
        edge = h.sharpness[-1, 0] / h.two_over_lr
        print(f"lr {lr:<9g} 2/lr {h.two_over_lr:.4g}: sharpness {h.sharpness[0, 0]:.4g} at step 0, "
              f"{h.sharpness[-1, 0]:.4g} at step {h.steps[-1]} ({edge:.2f} x 2/lr); loss {run.loss[0]:.4g} -> "
              f"{run.loss[run.steps_done]:.4g}" + (f"; DIVERGED after step {run.steps_done}" if run.diverged else "")
              + f"; {h.n_matvecs.mean():.1f} HVPs per estimate", flush=True)
        runs.append(run)
    from viz.training import sharpness_history

    sharpness_history([r.sharpness for r in runs], title=f"{problem.name}: full-batch GD, sharpness and 2/lr",
              path=out / "eos.png")
    summary = {"problem": problem.name, "problem_args": _problem_kwargs(pairs), "parameters": obj.space.n,
               "runs": [r.to_dict() for r in runs]}
    (out / "eos.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote        {out / 'eos.png'} and {out / 'eos.json'}")
    return 0


def _lyapunov(args) -> int:
    from dynamics import lyapunov
    from dynamics.systems import SYSTEMS

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = {"steps": args.steps, "transient": args.transient, "seed": args.seed}
    if args.interval is not None:
        common["interval"] = args.interval
    if args.system:
        system = SYSTEMS[args.system]()
        what = f"{args.system} {system}"
        if system.kind == "map":
            result = lyapunov.map_spectrum(system, k=args.k, **common)
        else:
            result = lyapunov.flow_spectrum(system, k=args.k, dt=args.dt, **common)
        unit = "per step" if system.kind == "map" else "per unit time"
    else:
        problem = _problem(args)
        obj = _objective(args, problem)
        if args.k is None:
            raise ValueError("--k (how many exponents) is needed for a problem")
        if args.flow:
            result = lyapunov.gradient_flow_spectrum(obj, args.k, dt=args.dt, **common)
            what, unit = f"gradient flow on {problem.name}", "per unit time"
        else:
            if args.lr is None:
                raise ValueError("--lr is needed for the gradient-descent map (or --flow for gradient flow)")
            result = lyapunov.gd_spectrum(obj, args.lr, args.k, **common)
            what, unit = f"gradient descent (lr {args.lr:g}) on {problem.name}", "per step"
    print(f"system       {what}", flush=True)
    print(f"exponents    {unit}, {result.n_steps} steps ({result.n_matvecs} tangent products) in "
          f"{result.seconds:.1f} s:")
    for i, value in enumerate(result.exponents, 1):
        print(f"  {i:>3}  {value: .6f}")
    print(f"sum          {result.exponents.sum():.6f}")
    print(f"Kaplan-Yorke {result.kaplan_yorke:.4f}")
    from viz.training import lyapunov_spectrum

    lyapunov_spectrum(result.exponents, running=result.running, times=result.times, title=f"Lyapunov spectrum: {what}",
         path=out / "lyapunov.png")
    (out / "lyapunov.json").write_text(json.dumps({"system": what, **result.to_dict()}, indent=2))
    print(f"wrote        {out / 'lyapunov.png'} and {out / 'lyapunov.json'}")
    return 0


def _flow(args) -> int:
    from dynamics.flow import compare_gd

    if not (args.lr and args.lr > 0) or args.steps < 1 or args.every < 1:
        raise ValueError("--lr must be positive, --steps and --every at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    problem = _problem(args, untrained=True)
    obj = _objective(args, problem)
    _headline(problem, obj, f"from {'--checkpoint' if args.checkpoint else 'its start'}")
    result = compare_gd(obj, args.lr, args.steps, every=args.every, method=args.method, rtol=args.rtol,
                        atol=args.atol)
    end = -1
    print(f"time         0 to {result.times[end]:g} ({args.steps} GD steps of lr {args.lr:g}); {args.method}, "
          f"{result.flow.n_gradients + result.modified.n_gradients} gradients and {result.modified.n_matvecs} HVPs for the flows")
    print(f"loss at end  gradient descent {result.gd_loss[end]:.6g}, gradient flow {result.flow.loss[end]:.6g}, "
          f"modified flow {result.modified.loss[end]:.6g}")
    print(f"distance     GD to gradient flow {result.to_flow[end]:.4g}, GD to the modified flow "
          f"{result.to_modified[end]:.4g} (of order lr and lr^2)")
    for run, name in ((result.flow, "gradient flow"), (result.modified, "modified flow")):
        if run.message:
            print(f"note         {name}: {run.message}")
    from viz.training import over_time

    over_time(result.times, {"gradient descent": result.gd_loss, "gradient flow": result.flow.loss,
                             "modified flow (L + lr/4 |grad L|^2)": result.modified.loss},
              gaps={"GD to gradient flow": result.to_flow, "GD to modified flow": result.to_modified},
              title=f"{problem.name}: gradient descent (lr {args.lr:g}) against the flows", path=out / "flow.png")
    (out / "flow.json").write_text(json.dumps({"problem": problem.name, **result.to_dict()}, indent=2))
    print(f"wrote        {out / 'flow.png'} and {out / 'flow.json'}")
    return 0


def _range(text: str | None) -> tuple[float, float] | None:
    """``"-0.5:1.5"`` -> (-0.5, 1.5): where the lines are evaluated, 0 and 1 inside."""
    if text is None:
        return None
    parts = text.split(":")
    try:
        start, stop = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--range {text!r} is not START:STOP, e.g. -0.5:1.5") from None
    if not (math.isfinite(start) and math.isfinite(stop) and start <= 0 and stop >= 1):
        raise ValueError(f"--range {text}: START must be at most 0 and STOP at least 1 (the ends of the path)")
    return start, stop


def _endpoints(args, problem: problems.Problem) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The models of --a and --b, each a copy of the problem's model with its checkpoint loaded."""
    models = []
    for flag, file in (("--a", args.a), ("--b", args.b)):
        model = copy.deepcopy(problem.model)
        try:
            problems.load_checkpoint(model, file)
        except (ValueError, FileNotFoundError) as error:
            raise ValueError(f"{flag}: {error}") from None
        bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise ValueError(f"{flag}: checkpoint {file} has non-finite values in {bad[0]}")
        models.append(model.eval())
    return models[0], models[1]


def _path_points(obj: Objective, path, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A path's points at ``t`` as (x, y) in the plane of its ends and bends (units of ||b - a||; a line
    lies on y = 0), and each point's distance off that plane."""
    if path.bends == 0:
        return np.c_[t, np.zeros_like(t)], np.zeros_like(t)
    placed = dirs.project(dirs.plane(obj, path.points[0], path.points[1:-1], path.points[-1]), path(t))
    return placed.coords, placed.residuals


def _connect(args) -> int:
    from landscape.paths import curves

    span = _range(args.range)
    for name in ("points", "bends", "epochs", "batch_size", "plane"):
        value = getattr(args, name)
        if value is not None and value < (2 if name in ("points", "plane") else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be at least {2 if name in ('points', 'plane') else 1}, "
                             f"got {value}")
    if args.plane and not args.curve:
        raise ValueError("--plane draws the plane through a curve: give --curve too")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise ValueError(f"--lr must be a positive number, got {args.lr}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    problem = _problem(args, untrained=True)
    model_a, model_b = _endpoints(args, problem)
    problem.model = model_a
    obj = _objective(args, problem)
    _headline(problem, obj)
    recompute = {"auto": None, "interpolate": False, "recompute": True}[args.bn]
    summary = {"problem": problem.name, "problem_args": _problem_kwargs(args.problem_arg), "a": args.a, "b": args.b,
               "parameters": obj.space.n, "dtype": str(obj.dtype).removeprefix("torch."), "paths": {}}
    drawn = {}

    def report(label: str, path, result) -> None:
        """Print a path's barriers, keep it for the figure, write its .vtp and the summary so far."""
        inside = (result.t >= 0) & (result.t <= 1)
        ranges = "".join(f"; {name} {np.nanmin(v[inside]):.4f} to {np.nanmax(v[inside]):.4f}"
                         for name, v in result.values.items() if name != "loss")
        print(f"{label:<12} barrier {result.barrier_linear:.4g} (linear, Entezari) at t = {result.t_barrier:.3g}, "
              f"{result.barrier_mean:.4g} (mean, Frankle) at t = {result.t_barrier_mean:.3g}; max loss "
              f"{result.max_loss:.4g}{ranges}; length {result.length:.4g}; BatchNorm {result.statistics}; "
              f"{len(result.t)} points in {result.seconds:.2f} s", flush=True)
        drawn[label] = (result.t, result.values["loss"])
        coords, off = _path_points(obj, path, result.t)
        loss = result.values["loss"]
        valid = np.isfinite(loss)
        file = out / f"{label.replace(' ', '_').replace(',', '')}.vtp"
        from viz.vtkio import write_polyline

        write_polyline(file, np.c_[coords, np.where(valid, loss, 0.0)],
                       {"t": result.t, **result.values, "valid": valid.astype(np.uint8), "off_plane": off})
        summary["paths"][label] = {**result.to_dict(), "vtp": str(file)}
        (out / "connect.json").write_text(json.dumps(summary, indent=2))

    line = curves.curve(obj, model_a, model_b, kind="line")
    if args.curve:
        curves.curve(obj, model_a, model_b, kind=args.curve, bends=args.bends)  # refused now, not after the line
    t = None if span is None else np.linspace(span[0], span[1], args.points or 25)
    result = curves.evaluate_curve(obj, line, args.points or 25, t=t, metrics=problem.metrics,
                                         recompute_bn=recompute)
    print(f"ends         loss {result.values['loss'][result.t == 0][0]:.6g} (a), "
          f"{result.values['loss'][result.t == 1][0]:.6g} (b), BatchNorm statistics {result.statistics}; "
          f"||b - a|| = {result.length:.6g}", flush=True)
    report("line", line, result)
    target = model_b
    if args.align:
        from landscape.paths.align import weight_matching

        alignment = weight_matching(model_a, model_b, seed=args.seed)
        target = alignment.apply(model_b)
        gap = _output_gap(obj, model_b, target)
        print(f"align        weight matching: {alignment.iterations} sweeps in {alignment.seconds:.2f} s, "
              f"{alignment.moved():.0%} of the hidden units moved; outputs unchanged to {gap:.1e} (relative)",
              flush=True)
        summary["alignment"] = {**alignment.to_dict(), "seed": args.seed, "output_difference": gap}
        aligned = curves.curve(obj, model_a, target, kind="line")
        report("aligned line", aligned, curves.evaluate_curve(obj, aligned, args.points or 25, t=t,
                                                                    metrics=problem.metrics, recompute_bn=recompute))
    if args.curve:
        path = curves.curve(obj, model_a, target, kind=args.curve, bends=args.bends)
        path = curves.train_curve(obj, path, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                        seed=args.seed)
        training = path.training
        print(f"{args.curve:<12} {args.bends} bend(s) trained for {training['epochs']} epochs ({training['steps']} "
              f"steps of batch {args.batch_size}, t ~ U(0, 1) each) in {training['seconds']:.1f} s; mean batch loss "
              f"{training['loss'][0]:.4g} -> {training['loss'][-1]:.4g}", flush=True)
        path.save(out / "curve.pt")
        summary["curve"] = {"kind": args.curve, "bends": args.bends, "file": str(out / "curve.pt"), **training}
        result = curves.evaluate_curve(obj, path, args.points or 61, metrics=problem.metrics,
                                             recompute_bn=recompute)
        report(args.curve + (", aligned" if args.align else ""), path, result)
        if args.plane:
            summary["plane"] = _curve_plane(args, problem, obj, path, result, out / "plane")
    from viz.plots import path_losses

    path_losses(drawn, log=args.log, title=f"{problem.name}: loss along paths from a to b", path=out / "paths.png")
    (out / "connect.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote        {out / 'paths.png'}, {out / 'connect.json'}, the paths as .vtp"
          + (f", {out / 'curve.pt'}" if args.curve else ""))
    return 0


def _output_gap(obj: Objective, model: torch.nn.Module, aligned: torch.nn.Module) -> float:
    """max |f_aligned - f| / max |f| on the first batch: ~1e-7 when the alignment kept the function."""
    from landscape.core.data import inputs

    X, _, _ = next(obj.batches())
    args, kwargs = inputs(X)
    with torch.no_grad():
        before = copy.deepcopy(model).to(obj.device, obj.dtype)(*args, **kwargs)
        after = copy.deepcopy(aligned).to(obj.device, obj.dtype)(*args, **kwargs)
    gap = float((after - before).abs().max() / before.abs().max().clamp_min(1e-30))
    if gap > 1e-4:
        raise ValueError(f"the aligned model computes another function (outputs differ by {gap:.1e}, relative): "
                         f"align handles chains of Linear/Conv/BatchNorm layers run in the order they are defined")
    return gap


def _curve_plane(args, problem: problems.Problem, obj: Objective, path, result, out: Path) -> dict:
    """Scan the plane through the curve's ends and bends, with the curve drawn on it."""
    inside = (result.t >= 0) & (result.t <= 1)
    d = dirs.plane(obj, path.points[0], path.points[1:-1], path.points[-1])
    placed = dirs.project(d, path(result.t[inside]))
    coords, off = placed.coords, placed.residuals
    low, high = coords.min(axis=0), coords.max(axis=0)
    margin = 0.2 * max(1.0, float(high[1] - low[1]))
    grid = [(min(low[0], 0.0) - margin, max(high[0], 1.0) + margin, args.plane),
            (min(low[1], 0.0) - margin, max(high[1], 0.0) + margin, args.plane)]
    out.mkdir(parents=True, exist_ok=True)
    file = out / "scan.h5"
    if file.exists():
        file.unlink()  # a fresh plane for a fresh curve
    if result.statistics in ("recomputed", "interpolated"):
        print("plane        BatchNorm uses model a's running statistics at every point of the plane "
              "(scans do not recompute them)", flush=True)
    scanned = scan(obj, d, grid, metrics=problem.metrics, store=file, meta={"problem": problem.name, "curve": "curve.pt"})
    names = [f"t={s:.3f}" for s in result.t[inside]]
    scan_store.add_trajectory(file, coords, off, names, result.values["loss"][inside])
    found = scanned.minimum()
    print(f"plane        {args.plane} x {args.plane} scan of the plane through a, the bend(s) and b in "
          f"{scanned.seconds:.1f} s; the curve is {off.max() / path.length():.1%} of its length off it at most",
          flush=True)
    drawn = load_scan(file)
    _draw(drawn, out, png=True, vtk=True, log=args.log, zmax=None, announce=False)
    from viz.plots import contour

    contour(drawn, label=f"{path.kind} curve", path=out / "contour.png",
            title=f"{problem.name}: loss in the plane of the curve (a at (0, 0), b at (1, 0))")
    return {"dir": str(out), "grid": [list(g) for g in grid], "minimum": found and {"coords": found[0], "loss": found[1]},
            "off_plane": float(off.max())}


def _hopfield(args) -> int:
    from dynamics.systems import hopfield

    if args.n < 2 or args.trials < 1:
        raise ValueError("--n must be at least 2 and --trials at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = hopfield.capacity(args.n, args.alpha, trials=args.trials, seed=args.seed, mode=args.mode)
    alpha_c, at_c = hopfield.ags_critical_load()
    print(f"network      N = {args.n}, Hebbian weights, {args.mode} retrieval from each stored pattern, "
          f"{args.trials} trial(s), in {result.seconds:.1f} s")
    print(f"{'alpha':>8} {'P':>6} {'flipped':>9} {'(std)':>9} {'AGS':>9} {'retrieved':>9} {'sweeps':>6}")
    for i, alpha in enumerate(result.alphas):
        theory = "-" if not math.isfinite(result.theory[i]) else f"{result.theory[i]:.3%}"
        print(f"{alpha:>8.4g} {result.patterns[i]:>6} {result.flipped_mean[i]:>9.3%} {result.flipped_std[i]:>9.3%} "
              f"{theory:>9} {result.retrieved[i]:>9.1%} {result.sweeps[i]:>6.1f}")
    print(f"theory       AGS: critical load {alpha_c:.4f} with {at_c:.2%} flipped; above it no retrieval state")
    from viz.training import hopfield_capacity

    dense = np.linspace(0.01, alpha_c, 60)
    hopfield_capacity({f"N = {args.n}, {args.mode}": result}, theory=(dense, [hopfield.ags_flipped(a) for a in dense]),
             critical=alpha_c, path=out / "hopfield.png")
    (out / "hopfield.json").write_text(json.dumps({**result.to_dict(), "alpha_c": alpha_c, "flipped_at_c": at_c},
                                                  indent=2))
    print(f"wrote        {out / 'hopfield.png'} and {out / 'hopfield.json'}")
    return 0


def _ints(text: str, flag: str = "--widths", least: int = 1) -> list[int]:
    """``"10,7,5,4,3"`` -> [10, 7, 5, 4, 3], each at least ``least``."""
    try:
        values = [int(w) for w in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} {text!r} is not a comma-separated list of integers, e.g. 10,7,5,4,3") from None
    if min(values) < least:
        what = "every hidden layer needs at least 1 unit" if flag == "--widths" else f"each must be at least {least}"
        raise ValueError(f"{flag} {text}: {what}")
    return values


def _bin_range(text: str | None) -> tuple[float, float] | None:
    """``"-1:1"`` -> (-1.0, 1.0), the binning range, finite with lo < hi."""
    if text is None:
        return None
    try:
        lo, hi = (float(p) for p in text.split(":"))
    except ValueError:
        raise ValueError(f"--range {text!r} is not LO:HI, e.g. -1:1") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"--range {text}: LO and HI must be finite with LO < HI")
    return lo, hi


def _infoplane(args) -> int:
    from dynamics.information import mlp, track

    widths = _ints(args.widths)
    bin_range = _bin_range(args.range)
    train, _ = problems.digits(images=False)
    available = len(train[1])
    for name, value, low in (("--epochs", args.epochs, 0), ("--every", args.every, 1),
                             ("--batch-size", args.batch_size, 0), ("--examples", args.examples, 2)):
        if value is not None and value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if args.examples is not None and args.examples > available:
        raise ValueError(f"--examples must be at most {available} (the digits' training split), got {args.examples}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a positive number, got {args.lr}")
    if args.method == "binning":
        if args.noise_variance is not None:
            raise ValueError("--noise-variance is a setting of --method kde, not of binning")
        bins = 30 if args.bins is None else args.bins
        if bins < 1:
            raise ValueError(f"--bins must be at least 1, got {bins}")
        if bin_range is None and args.activation == "tanh":
            bin_range = (-1.0, 1.0)
        settings = {"bins": bins, "range_": bin_range}
        estimator = f"binning, {bins} bins over " + \
            ("the observed range (each layer, each epoch)" if bin_range is None else f"({bin_range[0]:g}, {bin_range[1]:g})")
    else:
        if args.bins is not None or args.range is not None:
            raise ValueError("--bins and --range are settings of --method binning, not of kde")
        variance = 0.1 if args.noise_variance is None else args.noise_variance
        if not (math.isfinite(variance) and variance > 0):
            raise ValueError(f"--noise-variance must be a positive number, got {variance}")
        settings = {"noise_variance": variance}
        estimator = f"KDE (pairwise-KL upper bound), noise variance {variance:g}"
    X, y = train if args.examples is None else (train[0][:args.examples], train[1][:args.examples])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = mlp(widths, args.activation, seed=args.seed)
    optimizer = (torch.optim.SGD if args.optimizer == "sgd" else torch.optim.Adam)(model.parameters(), lr=args.lr)
    batch_size = args.batch_size or None
    plane = track(model, X, y, optimizer, epochs=args.epochs, every=args.every, method=args.method,
                  batch_size=batch_size, seed=args.seed, **settings)
    architecture = "-".join(str(w) for w in [X.shape[1], *widths, 10])
    print(f"network      {architecture} {args.activation}, {args.optimizer} lr {args.lr:g}, "
          f"{'full batch' if batch_size is None else f'batches of {batch_size}'}, {len(y)} digits, "
          f"{args.epochs} epochs in {plane.seconds:.1f} s")
    print(f"estimator    {estimator}; H(Y) = {plane.H_Y:.3f} bits, I(X;T) <= log2 m = {math.log2(len(y)):.3f} bits")
    print(f"{'layer':<6} {'width':>5} {'I(X;T) start':>12} {'peak':>7} {'(epoch)':>7} {'end':>7} "
          f"{'I(T;Y) start':>12} {'end':>7}")
    last = len(plane.epochs) - 1
    for j, (name, width) in enumerate(zip(plane.layers, widths)):
        column = plane.I_XT[:, j]
        peak = int(np.nanargmax(column)) if np.isfinite(column).any() else 0
        print(f"{name:<6} {width:>5} {plane.I_XT[0, j]:>12.3f} {column[peak]:>7.3f} {plane.epochs[peak]:>7} "
              f"{plane.I_XT[last, j]:>7.3f} {plane.I_TY[0, j]:>12.3f} {plane.I_TY[last, j]:>7.3f}")
    print(f"loss         {plane.loss[0]:.4f} at epoch 0, {plane.loss[last]:.4f} at epoch {plane.epochs[last]}")
    from viz.training import information_plane

    information_plane(plane, title=f"digits, {architecture} {args.activation}: information plane",
                      path=out / "infoplane.png")
    arguments = {key: value for key, value in vars(args).items() if key != "run"}
    model_spec = {"architecture": architecture, "inputs": int(X.shape[1]), "widths": widths, "classes": 10,
                  "activation": args.activation, "layers": plane.layers, "examples": len(y),
                  "optimizer": args.optimizer, "lr": args.lr, "batch_size": batch_size, "seed": args.seed}
    (out / "infoplane.json").write_text(json.dumps({**plane.to_dict(), "model": model_spec, "arguments": arguments},
                                                   indent=2))
    print(f"wrote        {out / 'infoplane.png'} and {out / 'infoplane.json'}")
    return 0


def _ntk_problem(args, **overrides) -> problems.Problem:
    """The problem at init with a square loss: a built-in that takes ``loss`` gets ``loss=mse`` and, with
    ``--examples``, ``examples=m``; another problem's (X, y) is cut to its first m examples."""
    builder = problems.BUILTIN.get(args.problem)
    accepts = inspect.signature(builder).parameters if builder else {}
    given = _problem_kwargs(args.problem_arg)
    pairs = list(args.problem_arg or [])
    for key, value in {"loss": "mse", "examples": args.examples}.items():
        if key in accepts and key not in given and value is not None:
            pairs.append(f"{key}={value}")
    pairs += [f"{key}={value}" for key, value in overrides.items()]
    problem = _problem(argparse.Namespace(**{**vars(args), "problem_arg": pairs}), untrained=True)
    if args.examples is not None and "examples" not in accepts:
        if not (isinstance(problem.data, (tuple, list)) and len(problem.data) == 2):
            raise ValueError("--examples needs a problem whose data is one (X, y) pair")
        X, y = problem.data
        problem.data = (X[:args.examples], y[:args.examples])
    return problem


def _ntk(args) -> int:
    from dynamics import linearized
    from viz.training import kernel_regime, width_scaling

    if args.steps < 1 or args.every < 1:
        raise ValueError(f"--steps and --every must be at least 1, got {args.steps} and {args.every}")
    if args.examples is not None and args.examples < 1:
        raise ValueError(f"--examples must be at least 1, got {args.examples}")
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    if not args.stable_fraction > 0:
        raise ValueError(f"--stable-fraction must be positive, got {args.stable_fraction}")
    if args.dtype not in (None, "float64"):
        raise ValueError(f"--dtype {args.dtype}: the kernel and both trainings are computed in float64")
    if args.seeds != "0" and not args.widths:
        raise ValueError("--seeds goes with --widths (the networks of each width); without it the problem's own "
                         "model is used")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(steps=args.steps, every=args.every, method=args.method)
    if args.widths:
        widths, seeds = _ints(args.widths), _ints(args.seeds, "--seeds", least=0)
        if len(widths) < 2 or len(set(widths)) < len(widths):
            raise ValueError(f"--widths {args.widths!r} must name two or more different widths")
        if args.checkpoint:
            raise ValueError("--widths builds new networks at their initialisation; it takes no --checkpoint")
        if "hidden" not in inspect.signature(problems.BUILTIN.get(args.problem, lambda: None)).parameters:
            raise ValueError(f"--widths needs a built-in problem whose builder takes hidden= (digits-mlp); "
                             f"{args.problem!r} does not")

        def build(width: int, seed: int) -> Objective:
            return _objective(args, _ntk_problem(args, hidden=width, seed=seed))

        problem = _ntk_problem(args, hidden=widths[0], seed=seeds[0])
        _headline(problem, _objective(args, problem),
                  f"widths {', '.join(map(str, widths))}, seeds {', '.join(map(str, seeds))}")
        sweep = linearized.sweep(build, widths, seeds=seeds, stable_fraction=args.stable_fraction, **settings)
        print(sweep.table())
        print(f"rate         max gap ~ width^-{sweep.rate:.3f}, kernel change ~ width^-{sweep.kernel_rate:.3f} "
              f"(least squares on the logs of the means over {len(seeds)} seed(s))")
        kernel_regime({f"width {w}": sweep.runs[i][0] for i, w in enumerate(sweep.widths)}, path=out / "ntk.png")
        width_scaling(sweep, path=out / "ntk_widths.png")
        (out / "ntk.json").write_text(json.dumps({"problem": args.problem, "sweep": sweep.to_dict()}, indent=2))
        print(f"wrote        {out / 'ntk.json'}, {out / 'ntk.png'} and {out / 'ntk_widths.png'}")
        return 0

    problem = _ntk_problem(args)
    obj = _objective(args, problem)
    _headline(problem, obj, f"NTK at {'the checkpoint' if args.checkpoint else 'initialisation'}")
    result = linearized.compare(obj, lr=args.lr, stable_fraction=args.stable_fraction, **settings)
    lam, m, C, scale = result.eigenvalues, result.settings["m"], result.settings["outputs"], result.settings["scale"]
    print(f"kernel       {m} examples x {C} outputs: [{m * C}, {m * C}], trace {lam.sum():.6g}, "
          f"lambda_max {lam[0]:.6g}, lambda_min {lam[-1]:.3g}; loss (c/2m) sum ||f - y||^2 with c = {scale:.4g}")
    print("top          " + " ".join(f"{v:.5g}" for v in lam[:args.k]))
    print(f"training     {args.method} at lr {result.lr:.4g} ({result.lr / result.max_stable_lr:.2f} of the "
          f"stability limit {result.max_stable_lr:.4g}) for {args.steps} steps")
    print(f"{'step':>6} {'time':>9} {'loss':>10} {'linear':>10} {'gap':>10} {'moved':>10}")
    for k, t, a, b, g, d in zip(result.steps, result.times, result.loss, result.linear_loss, result.gap,
                                result.movement):
        print(f"{k:>6} {t:>9.4g} {a:>10.4g} {b:>10.4g} {g:>10.3g} {d:>10.3g}")
    print(f"kernel moved ||Theta_T - Theta_0||_F / ||Theta_0||_F = {result.kernel_change:.4g}; "
          f"max gap {result.max_gap:.4g}")
    kernel_regime({problem.name: result}, eigenvalues=lam, path=out / "ntk.png")
    (out / "ntk.json").write_text(json.dumps({"problem": args.problem, "trace": float(lam.sum()),
                                              "comparison": result.to_dict()}, indent=2))
    print(f"wrote        {out / 'ntk.json'} and {out / 'ntk.png'}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="landscape",
        description="Look inside a trained network's loss: exact Hessian-vector products, "
                    "curvature and the geometry of the landscape.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="parameters, loss, gradient norm, metrics and an HVP check of a problem",
                          description="Print a problem's size, loss, gradient norm and metrics, and check "
                                      "its exact Hessian-vector products against finite differences.")
    _problem_arguments(info)
    info.set_defaults(run=_info)

    spectrum = sub.add_parser("spectrum", help="Hessian eigenvalues (Lanczos), trace and spectral density",
                              description="Compute the Hessian's extreme eigenvalues with thick-restart Lanczos "
                                          "(residual-checked), optionally its trace (Hutch++) and spectral density "
                                          "(stochastic Lanczos quadrature, plotted with --plot); write spectrum.json.")
    _problem_arguments(spectrum)
    spectrum.add_argument("--k", type=int, default=10, help="how many eigenvalues (at each end with --which both; "
                                                            "default 10)")
    spectrum.add_argument("--which", choices=["largest", "smallest", "both"], default="largest")
    spectrum.add_argument("--tol", type=float, default=1e-6,
                          help="residual tolerance ||Hv - lambda v|| <= tol |lambda_max| (default 1e-6)")
    spectrum.add_argument("--trace", action="store_true", help="also estimate the trace with Hutch++")
    spectrum.add_argument("--trace-budget", type=int, default=99, metavar="N", help="HVPs for the trace (default 99)")
    spectrum.add_argument("--density", action="store_true", help="also compute the spectral density (into the JSON)")
    spectrum.add_argument("--plot", action="store_true",
                          help="draw DIR/density.png: the density (computed even without --density) with the "
                               "eigenvalues marked")
    spectrum.add_argument("--probes", type=int, default=16, help="density probes (default 16)")
    spectrum.add_argument("--steps", type=int, default=80, help="Lanczos steps per density probe (default 80)")
    spectrum.add_argument("--scale", choices=["log", "linear"], default="log", help="density axis (default log)")
    spectrum.add_argument("--out", required=True, metavar="DIR", help="directory for spectrum.json (and density.png)")
    spectrum.set_defaults(run=_spectrum)

    scan_cmd = sub.add_parser("scan", help="evaluate the loss on a 1D, 2D or 3D grid around the model (HDF5, resumable)",
                              description="Evaluate the loss and the problem's metrics at center + x d1 (+ y d2 "
                                          "(+ z d3)) on a grid, writing DIR/scan.h5 as it goes (a killed scan "
                                          "continues with the same command and --resume) and DIR/scan.json "
                                          "(centre loss, minimum found, cost). values[i, j] is at (x[i], y[j]). "
                                          "The centre is the model (--checkpoint, or the last checkpoint of "
                                          "--trajectory). x = 1 is one direction vector: for filter-normalized "
                                          "random directions a step as large as the model's own filters, for "
                                          "Hessian and PCA directions a unit vector.")
    _problem_arguments(scan_cmd)
    scan_cmd.add_argument("--grid", action="append", required=True, metavar="START:STOP:NUM",
                          help="one axis per --grid, 1 to 3 of them, e.g. --grid -1:1:51 --grid -1:1:51; "
                               "a symmetric range with odd NUM puts the model exactly at the centre")
    scan_cmd.add_argument("--directions", choices=["random", "hessian", "pca"], default="random",
                          help="random Gaussian (normalized by --norm), the top Hessian eigenvectors, or the "
                               "principal directions of --trajectory (default random)")
    scan_cmd.add_argument("--norm", choices=list(dirs.NORMS), default="filter",
                          help="normalization of random directions (default filter, Li et al. 2018; random only)")
    scan_cmd.add_argument("--include-1d", action="store_true",
                          help="also move 1-D parameters (biases, BatchNorm) along random directions (random only)")
    scan_cmd.add_argument("--seed", type=int, default=0, help="seed of the random directions, or of Lanczos' start for hessian (default 0)")
    scan_cmd.add_argument("--tol", type=float, default=1e-6, help="Lanczos tolerance for --directions hessian (default 1e-6)")
    scan_cmd.add_argument("--trajectory", metavar="DIR",
                          help="a folder of checkpoints (*.pt) of a training run: PCA directions come from it, "
                               "and each checkpoint is projected onto the scan's plane")
    scan_cmd.add_argument("--strategy", choices=list(STRATEGIES), default="auto",
                          help="loop (one point at a time), batched (vmapped chunks of points) or auto (default: "
                               "batched on CUDA, loop on the CPU)")
    scan_cmd.add_argument("--chunk", type=int, metavar="N", help="points per chunk written to the file together (default 64 for loop, what fits in "
                               "memory for batched; a resumed scan keeps its own)")
    scan_cmd.add_argument("--out", required=True, metavar="DIR", help="directory for scan.h5 and scan.json")
    scan_cmd.add_argument("--resume", action="store_true", help="continue the scan in DIR/scan.h5")
    scan_cmd.add_argument("--plot", action="store_true",
                          help="also draw PNGs in DIR: curve, contour (with the trajectory) and surface, and a VTK "
                               "rendering of a 2D scan")
    _scale_arguments(scan_cmd)
    scan_cmd.set_defaults(run=_scan)

    render_cmd = sub.add_parser("render", help="figures, a 3D rendering and ParaView files of a scan",
                                description="Draw a scan written by `landscape scan` (finished or not: points not "
                                            "computed are gaps): PNG figures (curve, contour with the trajectory, "
                                            "surface, and a VTK rendering of a 2D scan, made offscreen) and VTK "
                                            "files for ParaView (scan.vti for any scan, scan.vts height field for "
                                            "2D, trajectory.vtp, and view.py, which `pvpython view.py` opens). "
                                            "Without --png or --vtk, both.")
    render_cmd.add_argument("run_dir", metavar="RUN_DIR", help="the scan's folder (or its scan.h5)")
    render_cmd.add_argument("--png", action="store_true", help="write the PNG figures")
    render_cmd.add_argument("--vtk", action="store_true", help="write the VTK files and view.py")
    _scale_arguments(render_cmd)
    render_cmd.add_argument("--out", metavar="DIR", help="where to write (default: RUN_DIR)")
    render_cmd.set_defaults(run=_render)

    eos = sub.add_parser("eos", help="edge of stability: full-batch GD with the sharpness tracked against 2/lr",
                         description="Train the problem from its start (a built-in untrained, or --checkpoint) by "
                                     "full-batch gradient descent at each --lr, estimating the Hessian's top "
                                     "eigenvalue every --every steps (Lanczos warm-started from the last estimate), "
                                     "and write eos.json and eos.png: sharpness against 2/lr and the loss (Cohen et "
                                     "al. 2021). digits-mlp uses the square loss here unless --problem-arg loss=... "
                                     "says otherwise.")
    _problem_arguments(eos)
    eos.add_argument("--lr", type=float, action="append", required=True,
                     help="learning rate (repeat for several runs, e.g. --lr 0.1 --lr 0.15)")
    eos.add_argument("--steps", type=int, default=3000, help="GD steps per run (default 3000)")
    eos.add_argument("--every", type=int, default=100, help="estimate the sharpness every N steps (default 100)")
    eos.add_argument("--k", type=int, default=1, help="top eigenvalues per estimate (default 1)")
    eos.add_argument("--tol", type=float, default=1e-4, help="Lanczos residual tolerance, relative (default 1e-4)")
    eos.add_argument("--seed", type=int, default=0, help="seed of Lanczos' first start (default 0)")
    eos.add_argument("--out", required=True, metavar="DIR", help="directory for eos.json and eos.png")
    eos.set_defaults(run=_eos)

    from dynamics.flow import METHODS

    flow = sub.add_parser("flow", help="gradient descent against gradient flow and the modified flow",
                          description="Train the problem from its start by gradient descent at --lr and integrate "
                                      "gradient flow theta' = -grad L and the modified flow of Barrett and Dherin "
                                      "(L + lr/4 |grad L|^2, whose gradient takes one HVP) over the same time, "
                                      "t = k lr; write flow.json (losses, distances) and flow.png. GD follows the "
                                      "modified flow to O(lr^2) and plain gradient flow only to O(lr).")
    _problem_arguments(flow)
    flow.add_argument("--lr", type=float, required=True, help="gradient-descent learning rate")
    flow.add_argument("--steps", type=int, default=200, help="GD steps (default 200)")
    flow.add_argument("--every", type=int, default=10, help="record every N steps (default 10)")
    flow.add_argument("--method", choices=METHODS, default="dopri5", help="ODE solver (default dopri5, adaptive)")
    flow.add_argument("--rtol", type=float, help="solver tolerance (default: by dtype, see dynamics.flow)")
    flow.add_argument("--atol", type=float, help="solver tolerance (default: by dtype)")
    flow.add_argument("--out", required=True, metavar="DIR", help="directory for flow.json and flow.png")
    flow.set_defaults(run=_flow)

    lyap = sub.add_parser("lyapunov", help="Lyapunov spectrum of a classic system, of gradient descent or of "
                                           "gradient flow",
                          description="Lyapunov exponents by the QR method (Benettin, Shimada-Nagashima): of a "
                                      "classic system (--system), or of training on a problem: the gradient-descent "
                                      "map theta -> theta - lr grad L (--lr; its Jacobian is I - lr H) or gradient "
                                      "flow (--flow --dt; -H), tangents pushed as one batched HVP per step. Writes "
                                      "lyapunov.json and lyapunov.png (spectrum and convergence).")
    _problem_arguments(lyap)
    lyap.add_argument("--system", choices=["logistic", "henon", "lorenz", "rossler"],
                      help="a classic system with published exponents instead of a problem")
    lyap.add_argument("--lr", type=float, help="learning rate of the gradient-descent map")
    lyap.add_argument("--flow", action="store_true", help="gradient flow instead of gradient descent")
    lyap.add_argument("--k", type=int, help="how many exponents (default: all, for a system)")
    lyap.add_argument("--steps", type=int, default=1000, help="counted steps (default 1000)")
    lyap.add_argument("--transient", type=int, default=0, help="uncounted steps first (default 0)")
    lyap.add_argument("--interval", type=int, help="re-orthonormalize every N steps (default 1 for maps, 10 for flows)")
    lyap.add_argument("--dt", type=float, default=0.01, help="RK4 step of a flow (default 0.01)")
    lyap.add_argument("--seed", type=int, default=0, help="seed of the random orthonormal start (default 0)")
    lyap.add_argument("--out", required=True, metavar="DIR", help="directory for lyapunov.json and lyapunov.png")
    lyap.set_defaults(run=_lyapunov)

    connect = sub.add_parser(
        "connect", help="paths between two trained models: barriers on the line, after alignment, along trained curves",
        description="Is there a low-loss path between two trained networks? Evaluate the loss along the straight "
                    "line from --a to --b and report its barrier both ways: max_t L(t) - [(1-t) L(a) + t L(b)] "
                    "(linear, Entezari et al. 2021) and max_t L(t) - [L(a) + L(b)]/2 (mean, Frankle et al. 2020). "
                    "--align permutes b's hidden units to match a's (weight matching, Ainsworth et al. 2022) and "
                    "measures the line again; --curve trains a Bezier curve or polygonal chain between them "
                    "(Garipov et al. 2018). Writes connect.json, paths.png, a .vtp per path for ParaView (x, y: "
                    "the path in the plane of its ends and first bend, in units of ||b - a||; z: the loss) and "
                    "curve.pt.")
    _problem_arguments(connect, checkpoint=False)
    connect.add_argument("--a", required=True, metavar="CKPT_A", help="the first model's state dict (t = 0)")
    connect.add_argument("--b", required=True, metavar="CKPT_B", help="the second model's state dict (t = 1)")
    connect.add_argument("--align", action="store_true",
                         help="permute b's hidden units to match a's (weight matching) and connect a to the result")
    connect.add_argument("--curve", choices=["bezier", "polychain"],
                         help="also train a curve from a to b (to the aligned b with --align)")
    connect.add_argument("--bends", type=int, default=1, help="control points between the ends (default 1)")
    connect.add_argument("--epochs", type=int, default=50, help="passes over the data to train the curve (default 50)")
    connect.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate for the curve (default 0.01)")
    connect.add_argument("--batch-size", type=int, default=128,
                         help="examples per curve-training step, each at its own random t (default 128)")
    connect.add_argument("--points", type=int, metavar="N",
                         help="points along each path (default 25 on lines, 61 on curves)")
    connect.add_argument("--range", metavar="START:STOP",
                         help="evaluate the lines on START <= t <= STOP, e.g. -0.5:1.5 to extrapolate (default 0:1)")
    connect.add_argument("--bn", choices=["auto", "interpolate", "recompute"], default="auto",
                         help="BatchNorm's running statistics at each point: interpolated between the ends', or "
                              "recomputed from the data (auto, the default: recomputed along curves, whose bends "
                              "no end's statistics describe, interpolated along lines)")
    connect.add_argument("--plane", type=int, metavar="N",
                         help="with --curve: also scan the plane through a, the first bend and b on an N x N grid, "
                              "the curve drawn on it (DIR/plane)")
    connect.add_argument("--seed", type=int, default=0, help="seed of the curve's t and batches and of the "
                                                             "alignment's layer order (default 0)")
    connect.add_argument("--log", action="store_true", help="draw losses on a log scale")
    connect.add_argument("--out", required=True, metavar="DIR", help="directory for the files")
    connect.set_defaults(run=_connect)

    hop = sub.add_parser("hopfield", help="Hopfield network storage capacity against the AGS theory",
                         description="Store P = alpha N random +-1 patterns in a Hopfield network (Hebbian weights), "
                                     "start the dynamics at each stored pattern and count the bits flipped at the "
                                     "fixed point reached, for each --alpha; compare with Amit, Gutfreund and "
                                     "Sompolinsky's theory (critical load 0.138). Writes hopfield.json and "
                                     "hopfield.png.")
    hop.add_argument("--n", type=int, default=1000, help="units (default 1000)")
    hop.add_argument("--alpha", type=float, nargs="+", default=[0.05, 0.1, 0.12, 0.138, 0.16, 0.2],
                     help="loads P/N (default 0.05 0.1 0.12 0.138 0.16 0.2)")
    hop.add_argument("--trials", type=int, default=1, help="pattern sets per load (default 1)")
    hop.add_argument("--mode", choices=["async", "sync"], default="async",
                     help="one unit at a time in a random order (default), or all at once (can end in 2-cycles)")
    hop.add_argument("--seed", type=int, default=0, help="seed of the patterns and the update order (default 0)")
    hop.add_argument("--out", required=True, metavar="DIR", help="directory for hopfield.json and hopfield.png")
    hop.set_defaults(run=_hopfield)

    ntk_cmd = sub.add_parser(
        "ntk", help="the neural tangent kernel and training against its linearization (the kernel regime)",
        description="Form the empirical NTK Theta = J J^T of the model on its first --examples training examples "
                    "(all outputs: [mC, mC]), print its trace and top eigenvalues, then train the network by "
                    "full-batch gradient descent (or gradient flow) beside its linearization at the start, "
                    "f_t = y + (I - lr c Theta / m)^k (f_0 - y), and report the gap between them and how far the "
                    "kernel moved. The loss must be the square loss (c/2m) sum ||f - y||^2 (a built-in problem "
                    "gets loss=mse and starts at its initialisation). With --widths, the same for networks of each "
                    "width and seed, and the rate at which the gap closes with width. Writes ntk.json and ntk.png "
                    "(and ntk_widths.png).")
    _problem_arguments(ntk_cmd)
    ntk_cmd.add_argument("--examples", type=int, default=64, metavar="M",
                         help="training examples the kernel and the training use (default 64)")
    ntk_cmd.add_argument("--k", type=int, default=10, help="top eigenvalues to print (default 10)")
    ntk_cmd.add_argument("--steps", type=int, default=200,
                         help="gradient descent steps; with --method flow, the flow runs to t = steps * lr "
                              "(default 200)")
    ntk_cmd.add_argument("--every", type=int, default=10, help="record every N steps, and the last (default 10)")
    ntk_cmd.add_argument("--lr", type=float, help="learning rate (default: --stable-fraction of the linearized "
                                                  "model's stability limit 2m / (c lambda_max))")
    ntk_cmd.add_argument("--stable-fraction", type=float, default=0.5,
                         help="the learning rate as a fraction of the stability limit, when --lr is not given "
                              "(default 0.5)")
    ntk_cmd.add_argument("--method", choices=["gd", "flow"], default="gd",
                         help="train by gradient descent (default) or integrate gradient flow to t = steps * lr")
    ntk_cmd.add_argument("--widths", metavar="W1,W2,...",
                         help="compare networks of these widths (a built-in that takes hidden=, e.g. digits-mlp; "
                              "add --problem-arg parametrization=ntk for the NTK parametrization)")
    ntk_cmd.add_argument("--seeds", default="0", metavar="S1,S2,...",
                         help="with --widths: the seeds of each width's networks (default 0)")
    ntk_cmd.add_argument("--out", required=True, metavar="DIR", help="directory for ntk.json and the figures")
    ntk_cmd.set_defaults(run=_ntk)

    ip = sub.add_parser("infoplane", help="the information plane of a small MLP trained on the digits",
                        description="Train an MLP 64-WIDTHS-10 (default 64-10-7-5-4-3-10, after Shwartz-Ziv and "
                                    "Tishby's 12-10-7-5-4-3-2) on the digits' training split and estimate, every "
                                    "--every epochs, each hidden layer's I(X;T) and I(T;Y) in bits: by binning "
                                    "(Shwartz-Ziv & Tishby: 30 bins over (-1, 1) for tanh) or by the kernel "
                                    "(pairwise-KL) estimate of Saxe et al. with Gaussian noise. The numbers rest "
                                    "on these settings, which are recorded. Writes infoplane.json and "
                                    "infoplane.png.")
    ip.add_argument("--widths", default="10,7,5,4,3", metavar="W1,W2,...",
                    help="hidden layer widths (default 10,7,5,4,3)")
    ip.add_argument("--activation", choices=["tanh", "relu"], default="tanh",
                    help="hidden activation (default tanh)")
    ip.add_argument("--epochs", type=int, default=200, help="passes over the examples (default 200)")
    ip.add_argument("--every", type=int, default=10, help="estimate every N epochs, and at the last (default 10)")
    ip.add_argument("--optimizer", choices=["sgd", "adam"], default="adam", help="optimizer (default adam)")
    ip.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    ip.add_argument("--batch-size", type=int, default=64, help="examples per step, shuffled each epoch; 0 for "
                                                             "one full-batch step per epoch (default 64)")
    ip.add_argument("--examples", type=int, help="use the first N training digits (default: all 1437)")
    ip.add_argument("--method", choices=["binning", "kde"], default="binning", help="estimator (default binning)")
    ip.add_argument("--bins", type=int, help="binning: equal-width bins per neuron over --range (default 30)")
    ip.add_argument("--range", metavar="LO:HI", help="binning: the bins' range (default -1:1 for tanh, the observed "
                                                     "range of each layer at each epoch for relu)")
    ip.add_argument("--noise-variance", type=float, help="kde: variance of the Gaussian noise added to T (default 0.1)")
    ip.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batches (default 0)")
    ip.add_argument("--out", required=True, metavar="DIR", help="directory for infoplane.json and infoplane.png")
    ip.set_defaults(run=_infoplane)

    demo = sub.add_parser("demo", help="the whole tour on the built-in digits-mlp: spectrum, landscape, figures, "
                                       "ParaView files",
                          description="Train the built-in digits-mlp keeping checkpoints, check its HVPs, find "
                                      "the top of its Hessian spectrum, its trace and spectral density, scan the "
                                      "loss on a filter-normalized random plane and on the PCA plane of the "
                                      "training run (the trajectory placed on both), and write PNGs (density, "
                                      "contours with the trajectory, surfaces, VTK renderings) and VTK files "
                                      "(.vti, .vts, .vtp, a .pvd time series) to DIR. Under a minute on a CPU.")
    demo.add_argument("--out", default="landscape-demo", metavar="DIR",
                      help="where the files go (default: landscape-demo)")
    demo.add_argument("--points", type=int, default=51, metavar="N",
                      help="grid points per axis of the 2D scans (default 51; made odd)")
    demo.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu)")
    demo.set_defaults(run=_demo)
    for name in DISTRIBUTED:  # one process, so that args.run(args) works; main() sets torchrun's world
        sub.choices[name].set_defaults(world=distributed.World())  # (not on the top parser: infoplane saves args)
    return top


def _scale_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--log", action="store_true", help="draw heights as log10 of the loss (contours are always "
                                                        "log-spaced when the loss is positive)")
    sub.add_argument("--zmax", type=float, metavar="Z", help="clip the loss at Z before drawing (the raw loss stays "
                                                             "in the files' loss array)")


def _problem_arguments(sub: argparse.ArgumentParser, checkpoint: bool = True) -> None:
    sub.add_argument("--problem", default="digits-mlp", metavar="NAME_OR_PATH",
                     help=f"a built-in problem ({', '.join(problems.BUILTIN)}) or path/to/file.py:factory, "
                          f"a Python file whose factory() returns a Problem or (model, loss_fn, data); "
                          f"it runs as code (default: digits-mlp)")
    sub.add_argument("--problem-arg", action="append", metavar="KEY=VALUE",
                     help="an argument for the problem's builder or factory, e.g. loss=mse, examples=256, hidden=64 "
                          "(repeatable)")
    if checkpoint:
        sub.add_argument("--checkpoint", metavar="FILE",
                         help="a state dict saved with torch.save, loaded with weights_only=True")
    sub.add_argument("--params", nargs="+", metavar="PATTERN",
                     help="analyse only these parameters (names or glob patterns, e.g. 'fc2.*')")
    sub.add_argument("--device", help="cpu, cuda or cuda:N (default: where the model is)")
    sub.add_argument("--dtype", choices=sorted(DTYPES), help="compute in this precision (default: the model's)")


def _glue_grids(argv: list[str]) -> list[str]:
    """``--grid -1:1:51`` -> ``--grid=-1:1:51`` (and ``--range``): argparse takes a value starting with '-' for an option."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in ("--grid", "--range") and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


DISTRIBUTED = ("scan", "spectrum")  # the commands that run under torchrun


def _world(args) -> distributed.World:
    """This process's place among those torchrun started (``WORLD_SIZE`` > 1), else a world of one.

    Each rank computes on ``--device``: ``cuda`` means cuda:LOCAL_RANK (NCCL), the CPU gloo.
    """
    if not distributed.launched():
        return distributed.World()
    if args.command not in DISTRIBUTED:
        raise ValueError(f"only {' and '.join(DISTRIBUTED)} run under torchrun (WORLD_SIZE > 1); run "
                         f"landscape {args.command} as one process")
    device = torch.device(args.device or "cpu")
    if device.type == "cuda" and device.index is not None:
        raise ValueError(f"--device {args.device} under torchrun: give --device cuda, and each process takes "
                         f"cuda:LOCAL_RANK")
    world = distributed.init(device)
    args.device = str(world.device)
    return world


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(_glue_grids(sys.argv[1:] if argv is None else list(argv)))
    world, who, ok = distributed.World(), "", False
    try:
        world = _world(args)
        if args.command in DISTRIBUTED:
            args.world = world
        who = "" if world.main else f" (rank {world.rank} of {world.size})"
        with distributed.quiet(world):
            code = args.run(args)
        ok = True
        return code
    except (ValueError, OSError) as error:  # OSError: a file or folder that cannot be read or made
        print(f"landscape {args.command}{who}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"landscape {args.command}{who}: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as error:  # torch refusing the model on its data: shapes, dtypes, devices
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        what = ("the processes lost each other (did another rank fail?)" if isinstance(error, torch.distributed.DistError)
                else "the model failed on its data")
        print(f"landscape {args.command}{who}: error: {what}: {first}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown(synchronize=ok)
