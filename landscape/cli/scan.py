"""``landscape scan``: the loss on a 1D, 2D or 3D grid around the model, resumable (also under torchrun,
point-parallel); a training run's checkpoints placed on the scan's plane (shared with demo)."""

from __future__ import annotations

import argparse
import math
import sys

import torch

from landscape.cli.common import (check_scale, checkpoints, draw, headline, load_problem, load_trajectory, objective,
                                  output_folder, place, problem_arguments, scale_arguments, write_json)
from landscape.core import data_parallel
from landscape.core.objective import Objective
from landscape.core.results import fingerprint
from landscape.scans import directions as dirs
from landscape.scans import store as scan_store
from landscape.scans.grid import parse_grid
from landscape.scans.points import STRATEGIES
from landscape.scans.scan import check_room, footprint, scan
from landscape.scans.scan import load as load_scan


def add_parser(subparsers) -> None:
    sub = subparsers.add_parser(
        "scan", help="evaluate the loss on a 1D, 2D or 3D grid around the model (HDF5, resumable)",
        description="Evaluate the loss and the problem's metrics at center + x d1 (+ y d2 (+ z d3)) on a grid, "
                    "writing DIR/scan.h5 as it goes (a killed scan continues with the same command and --resume) "
                    "and DIR/scan.json (centre loss, minimum found, cost). values[i, j] is at (x[i], y[j]). The "
                    "centre is the model (--checkpoint, or the last checkpoint of --trajectory). x = 1 is one "
                    "direction vector: for filter-normalized random directions a step as large as the model's own"
                    " filters, for Hessian and PCA directions a unit vector.")
    problem_arguments(sub)
    sub.add_argument("--grid", action="append", required=True, metavar="START:STOP:NUM",
                     help="one axis per --grid, 1 to 3 of them, e.g. --grid -1:1:51 --grid -1:1:51; "
                          "a symmetric range with odd NUM puts the model exactly at the centre")
    sub.add_argument("--directions", choices=["random", "hessian", "pca"], default="random",
                     help="random Gaussian (normalized by --norm), the top Hessian eigenvectors, or the "
                          "principal directions of --trajectory (default random)")
    sub.add_argument("--norm", choices=list(dirs.NORMS), default="filter",
                     help="normalization of random directions (default filter, Li et al. 2018; random only)")
    sub.add_argument("--include-1d", action="store_true", default=None,
                     help="also move 1-D parameters (biases, BatchNorm) along random directions (random only; "
                          "the default when every selected parameter is 1-D)")
    sub.add_argument("--seed", type=int, default=0,
                     help="seed of the random directions, or of Lanczos' start for hessian (default 0)")
    sub.add_argument("--tol", type=float, default=1e-6,
                     help="Lanczos tolerance for --directions hessian (default 1e-6)")
    sub.add_argument("--trajectory", metavar="DIR",
                     help="a folder of checkpoints (*.pt) of a training run: PCA directions come from it, "
                          "and each checkpoint is projected onto the scan's plane")
    sub.add_argument("--strategy", choices=list(STRATEGIES), default="auto",
                     help="loop (one point at a time), batched (vmapped chunks of points) or auto (default: "
                          "from 256 points on, the loop, the loop with its images laid out channels_last (a model "
                          "with 2D convolutions) and batched timed on 16 points and the fastest kept; below, "
                          "batched on CUDA and loop on the CPU)")
    sub.add_argument("--tf32", action="store_true",
                     help="convolutions and matrix products in TF32 on NVIDIA GPUs (faster, ~1e-3 relative per "
                          "product); by default they run in full float32")
    sub.add_argument("--compile", action="store_true",
                     help="run the model through torch.compile (the loop strategy): the first points wait for "
                          "the compilation (seconds to a minute), the rest may go faster; say it again to resume")
    sub.add_argument("--channels-last", action="store_const", const=True, default=None,
                     help="lay the images out channels_last (NHWC) for the model's convolutions: the loop "
                          "strategy, unmeasured; the same values to float32 rounding, often faster; say it again "
                          "to resume")
    sub.add_argument("--chunk", type=int, metavar="N",
                     help="points per chunk written to the file together (default 64 for loop, what fits in "
                          "memory for batched; a resumed scan keeps its own)")
    sub.add_argument("--out", required=True, metavar="DIR", help="directory for scan.h5 and scan.json")
    sub.add_argument("--resume", action="store_true", help="continue the scan in DIR/scan.h5")
    sub.add_argument("--force", action="store_true",
                     help="scan even when the grid needs more memory or disk than there is (refused otherwise, "
                          "before any work)")
    sub.add_argument("--plot", action="store_true",
                     help="also draw PNGs in DIR: curve, contour (with the trajectory) and surface, and a VTK "
                          "rendering of a 2D scan")
    scale_arguments(sub)
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    axes = parse_grid(args.grid)  # bad grids and scales fail before any work
    check_scale(args.log, args.zmax)
    if args.chunk is not None and args.chunk < 1:
        raise ValueError(f"--chunk must be at least 1, got {args.chunk}")
    out = output_folder(args.out)
    path = out / "scan.h5"
    world = args.world
    if (path.exists() or scan_store.parts(path)) and not args.resume:
        what = (f"{path} exists" if path.exists()
                else f"{path}'s per-rank files ({scan_store.parts(path)[0].name}, ...) exist")
        raise ValueError(f"{what}: pass --resume to continue that scan, or choose another --out")
    stored = scan_store.read(path) if path.exists() else None
    saved = scan_store.progress(path)[1]  # with the per-rank files of an interrupted distributed scan
    if args.resume and saved is None:
        print(f"resume       nothing to resume in {out}: starting the scan", flush=True)
    files = checkpoints(args.trajectory) if args.trajectory else None
    # the centre: --checkpoint, else the end of the run, buffers included
    checkpoint = str(files[-1]) if files and not args.checkpoint else args.checkpoint
    problem = load_problem(args.problem, args.problem_arg, checkpoint, cache=not args.no_cache)
    obj = objective(args, problem)
    trajectory = load_trajectory(files, problem, obj) if files else None
    headline(problem, obj, f"point-parallel over {world.size} processes ({world.backend})" if world.active else "")
    if not args.force:  # before the directions, which may cost a Lanczos run
        points = math.prod(len(a) for a in axes)
        check_room(footprint(points, 1 + len(problem.metrics), (len(axes) + 1) * obj.space.n * obj.theta0.element_size(),
                             path), path)
    d = _directions(args, obj, len(axes), trajectory, stored)
    if saved is not None:
        print(f"resuming     {path}: {int(saved.sum())} of {saved.size} points done", flush=True)
    meta = {"problem": problem.name, "checkpoint": checkpoint, "trajectory": args.trajectory}
    try:
        result = scan(obj, d, args.grid, metrics=problem.metrics, store=path, strategy=args.strategy,
                      precision="tf32" if args.tf32 else "float32", chunk=args.chunk, meta=meta, world=world,
                      force=args.force, compiled=args.compile, channels_last=args.channels_last)
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
          f"{result.seconds:.2f} s{rate} ({result.strategy}{', compiled' * result.compiled}"
          f"{', channels_last' * result.channels_last})")
    print("centre       " + ", ".join(f"{k} {v:.6g}" for k, v in result.center_values.items()))
    found = summary["minimum"]
    print("minimum      " + ("none finite" if found is None else
                             f"loss {found['loss']:.6g} at ({', '.join(f'{c:.4g}' for c in found['coords'])})"))
    non_finite = summary["non_finite"]
    if non_finite:
        print(f"non-finite   {non_finite} points have a NaN or infinite loss (recorded as such)")
    if trajectory is not None:
        summary["trajectory"] = place(path, d, result, trajectory)
    write_json(out / "scan.json", summary)
    print(f"wrote        {path} and {out / 'scan.json'}")
    if args.plot:
        draw(load_scan(path), out, png=True, vtk=False, log=args.log, zmax=args.zmax,
             to_scale=not args.stretch)
    return 0


def _directions(args, obj: Objective, k: int, trajectory, stored: dict | None) -> dirs.Directions:
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


