"""``landscape connect``: paths between two trained models, their barriers on the line, after alignment and
along trained curves."""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path

import numpy as np
import torch

from landscape import problems
from landscape.checkpoints import load_checkpoint
from landscape.paths.curves import KINDS
from landscape.cli.common import (
    headline,
    load_problem,
    objective,
    output_folder,
    problem_arguments,
    problem_kwargs,
    write_json,
)
from landscape.cli.common import draw
from landscape.core.objective import Objective
from landscape.scans import directions as dirs
from landscape.scans import store as scan_store
from landscape.scans.scan import load as load_scan
from landscape.scans.scan import scan


def add_parser(subparsers) -> None:
    sub = subparsers.add_parser(
        "connect", help="paths between two trained models: barriers on the line, after alignment, along trained curves",
        description="Is there a low-loss path between two trained networks? Evaluate the loss along the straight "
                    "line from --a to --b and report its barrier both ways: max_t L(t) - [(1-t) L(a) + t L(b)] "
                    "(linear, Entezari et al. 2021) and max_t L(t) - [L(a) + L(b)]/2 (mean, Frankle et al. 2020). "
                    "--align permutes b's hidden units to match a's (weight matching, Ainsworth et al. 2022) and "
                    "measures the line again; --curve trains a Bezier curve or polygonal chain between them "
                    "(Garipov et al. 2018). Writes connect.json, paths.png, a .vtp per path for ParaView (x, y: "
                    "the path in the plane of its ends and first bend, in units of ||b - a||; z: the loss), "
                    "view_paths.py (the ParaView scene of them all) and curve.pt.")
    problem_arguments(sub, checkpoint=False)
    sub.add_argument("--a", required=True, metavar="CKPT_A", help="the first model's state dict (t = 0)")
    sub.add_argument("--b", required=True, metavar="CKPT_B", help="the second model's state dict (t = 1)")
    sub.add_argument("--align", action="store_true",
                     help="permute b's hidden units to match a's (weight matching) and connect a to the result")
    sub.add_argument("--curve", choices=[kind for kind in KINDS if kind != "line"],
                     help="also train a curve from a to b (to the aligned b with --align)")
    sub.add_argument("--bends", type=int, default=1, help="control points between the ends (default 1)")
    sub.add_argument("--epochs", type=int, default=50, help="passes over the data to train the curve (default 50)")
    sub.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate for the curve (default 0.01)")
    sub.add_argument("--batch-size", type=int, default=128,
                     help="examples per curve-training step, each at its own random t (default 128)")
    sub.add_argument("--points", type=int, metavar="N",
                     help="points along each path (default 25 on lines, 61 on curves)")
    sub.add_argument("--range", metavar="START:STOP",
                     help="evaluate the lines on START <= t <= STOP, e.g. -0.5:1.5 to extrapolate (default 0:1)")
    sub.add_argument("--bn", choices=["auto", "interpolate", "recompute"], default="auto",
                     help="BatchNorm's running statistics at each point: interpolated between the ends', or "
                          "recomputed from the data (auto, the default: recomputed along curves, whose bends "
                          "no end's statistics describe, interpolated along lines)")
    sub.add_argument("--plane", type=int, metavar="N",
                     help="with --curve: also scan the plane through a, the first bend and b on an N x N grid, "
                          "the curve drawn on it (DIR/plane)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the curve's t and batches and of the "
                                                         "alignment's layer order (default 0)")
    sub.add_argument("--log", action="store_true", help="draw losses on a log scale")
    sub.add_argument("--out", required=True, metavar="DIR", help="directory for the files")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
    out = output_folder(args.out)
    problem = load_problem(args.problem, args.problem_arg, untrained=True)
    model_a, model_b = _endpoints(args, problem)
    problem.model = model_a
    obj = objective(args, problem)
    headline(problem, obj)
    recompute = {"auto": None, "interpolate": False, "recompute": True}[args.bn]
    summary = {"problem": problem.name, "problem_args": problem_kwargs(args.problem_arg), "a": args.a, "b": args.b,
               "parameters": obj.space.n, "dtype": str(obj.dtype).removeprefix("torch."), "paths": {}}
    drawn, scenes_paths = {}, {}

    def record(label: str, path, result) -> None:
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
        scenes_paths[file.name] = (coords, loss)
        summary["paths"][label] = {**result.to_dict(), "vtp": str(file)}
        write_json(out / "connect.json", summary)

    line = curves.curve(obj, model_a, model_b, kind="line")
    if args.curve:
        curves.curve(obj, model_a, model_b, kind=args.curve, bends=args.bends)  # refused now, not after the line
    t = None if span is None else np.linspace(span[0], span[1], args.points or 25)
    result = curves.evaluate_curve(obj, line, args.points or 25, t=t, metrics=problem.metrics, recompute_bn=recompute)
    print(f"ends         loss {result.values['loss'][result.t == 0][0]:.6g} (a), "
          f"{result.values['loss'][result.t == 1][0]:.6g} (b), BatchNorm statistics {result.statistics}; "
          f"||b - a|| = {result.length:.6g}", flush=True)
    record("line", line, result)
    target = model_b
    if args.align:
        from landscape.paths.align import output_gap, weight_matching

        probe = next(obj.batches())[0]
        alignment = weight_matching(model_a, model_b, probe, seed=args.seed)
        target = alignment.apply(model_b, probe)  # refused when the outputs on the first batch change
        gap = output_gap(model_b, target, probe)[0]
        print(f"align        weight matching: {alignment.iterations} sweeps in {alignment.seconds:.2f} s, "
              f"{alignment.moved():.0%} of the hidden units moved; outputs unchanged to {gap:.1e} (relative)",
              flush=True)
        pinned = alignment.structure.pinned
        if pinned:
            print(f"align        {len(pinned)} parameter dims left in place, e.g. {next(iter(pinned))}: "
                  f"{next(iter(pinned.values()))} (operations align does not follow keep their units)", flush=True)
        summary["alignment"] = {**alignment.to_dict(), "seed": args.seed, "output_difference": gap}
        aligned = curves.curve(obj, model_a, target, kind="line")
        record("aligned line", aligned, curves.evaluate_curve(obj, aligned, args.points or 25, t=t,
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
        record(args.curve + (", aligned" if args.align else ""), path, result)
        if args.plane:
            summary["plane"] = _curve_plane(args, problem, obj, path, result, out / "plane")
    from viz.plots import path_losses
    from viz.scenes import paths_script

    path_losses(drawn, log=args.log, title=f"{problem.name}: loss along paths from a to b", path=out / "paths.png")
    ends = drawn["line"][1][drawn["line"][0] == 0][0], drawn["line"][1][drawn["line"][0] == 1][0]
    paths_script(out / "view_paths.py", scenes_paths, ends=ends)
    write_json(out / "connect.json", summary)
    print(f"wrote        {out / 'paths.png'}, {out / 'connect.json'}, the paths as .vtp and view_paths.py for ParaView"
          + (f", {out / 'curve.pt'}" if args.curve else ""))
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
            load_checkpoint(model, file)
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
    scanned = scan(obj, d, grid, metrics=problem.metrics, store=file,
                   meta={"problem": problem.name, "curve": "curve.pt"})
    names = [f"t={s:.3f}" for s in result.t[inside]]
    scan_store.add_trajectory(file, coords, off, names, result.values["loss"][inside])
    found = scanned.minimum()
    print(f"plane        {args.plane} x {args.plane} scan of the plane through a, the bend(s) and b in "
          f"{scanned.seconds:.1f} s; the curve is {off.max() / path.length():.1%} of its length off it at most",
          flush=True)
    drawn = load_scan(file)
    draw(drawn, out, png=True, vtk=True, log=args.log, zmax=None, announce=False)
    from viz.plots import contour

    contour(drawn, label=f"{path.kind} curve", path=out / "contour.png",
            title=f"{problem.name}: loss in the plane of the curve (a at (0, 0), b at (1, 0))")
    return {"dir": str(out), "grid": [list(g) for g in grid],
            "minimum": found and {"coords": found[0], "loss": found[1]}, "off_plane": float(off.max())}
