"""What the commands share: the problem and scale options, argparse helpers, the problem and objective
builders, the printed report, the output folder and the one JSON writer, torchrun's world, and the outputs
several commands write (a scan's figures and files, a trajectory of checkpoints, the negative mass)."""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import math
import re
from pathlib import Path

import numpy as np
import torch

from landscape import problems
from landscape.checkpoints import load_checkpoint
from landscape.core import data as batching
from landscape.core import distributed
from landscape.core.data_parallel import DataParallelObjective
from landscape.core.objective import Objective
from landscape.core.results import jsonable
from landscape.scans import directions as dirs
from landscape.scans import store as scan_store
from landscape.scans.scan import Scan

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DISTRIBUTED = ("scan", "spectrum")  # the commands that run under torchrun


# -- options ---------------------------------------------------------------------------------

def problem_arguments(sub: argparse.ArgumentParser, checkpoint: bool = True) -> None:
    """--problem, --problem-arg, --checkpoint (unless not ``checkpoint``), --params, --device, --dtype."""
    sub.add_argument("--problem", default="digits-mlp", metavar="NAME_OR_PATH",
                     help=f"a built-in problem ({', '.join(problems.BUILTIN)}) or path/to/file.py:factory, "
                          f"a Python file whose factory() returns a Problem or (model, loss_fn, data); "
                          f"it runs as code (default: digits-mlp)")
    sub.add_argument("--problem-arg", action="append", metavar="KEY=VALUE",
                     help="an argument for the problem's builder or factory, e.g. loss=mse, examples=256, hidden=64 "
                          "(repeatable)")
    if checkpoint:
        sub.add_argument("--checkpoint", metavar="FILE",
                         help="the weights: a state dict saved with torch.save (loaded with weights_only=True), a "
                              ".safetensors file, or a folder written by save_pretrained")
    sub.add_argument("--no-cache", action="store_true",
                     help="train a built-in problem afresh instead of reading it from the user cache "
                          "($LANDSCAPE_CACHE, else ~/.cache/landscape-dynamics), and do not keep it there")
    sub.add_argument("--params", nargs="+", metavar="PATTERN",
                     help="analyse only these parameters (names or glob patterns, e.g. 'fc2.*')")
    sub.add_argument("--device", help="cpu, cuda or cuda:N (default: where the model is)")
    sub.add_argument("--dtype", choices=sorted(DTYPES), help="compute in this precision (default: the model's)")


def scale_arguments(sub: argparse.ArgumentParser) -> None:
    """--log, --zmax and --stretch: how a scan's heights are drawn (checked by ``check_scale``), and its plane."""
    sub.add_argument("--log", action="store_true", help="draw heights as log10 of the loss (contours are always "
                                                        "log-spaced when the loss is positive)")
    sub.add_argument("--zmax", type=float, metavar="Z", help="clip the loss at Z before drawing (the raw loss stays "
                                                             "in the files' loss array)")
    sub.add_argument("--stretch", action="store_true",
                     help="draw a plane's contours filling a 4:5 panel instead of to scale (equal lengths in "
                          "parameter space drawn equal)")


def check_scale(log: bool, zmax: float | None) -> None:
    if zmax is not None and not math.isfinite(zmax):
        raise ValueError(f"--zmax must be a finite number, got {zmax}")
    if log and zmax is not None and zmax <= 0:
        raise ValueError(f"--zmax {zmax:g} with --log: the clip must be positive to take a log")


def glue_grids(argv: list[str]) -> list[str]:
    """``--grid -1:1:51`` -> ``--grid=-1:1:51`` (and ``--range``): argparse takes a value starting with '-' for
    an option."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in ("--grid", "--range") and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def parse_device(spec: str | None) -> torch.device | None:
    """``--device``: None (where the model is) or an available device."""
    if spec is None:
        return None
    try:
        device = torch.device(spec)
    except RuntimeError as error:
        raise ValueError(f"--device {spec!r} is not a device name like cpu, cuda or cuda:1") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: CUDA is not available on this machine")
    return device


def problem_kwargs(pairs: list[str] | None) -> dict:
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


def ints(text: str, flag: str = "--widths", least: int = 1) -> list[int]:
    """``"10,7,5,4,3"`` -> [10, 7, 5, 4, 3], each at least ``least``."""
    try:
        values = [int(w) for w in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} {text!r} is not a comma-separated list of integers, e.g. 10,7,5,4,3") from None
    if min(values) < least:
        what = "every hidden layer needs at least 1 unit" if flag == "--widths" else f"each must be at least {least}"
        raise ValueError(f"{flag} {text}: {what}")
    return values


# -- the problem and its objective -----------------------------------------------------------------

def load_problem(name: str, pairs: list[str] | None = None, checkpoint: str | None = None, *,
                 untrained: bool = False, cache: bool = True) -> problems.Problem:
    """The problem ``name`` (--problem) built with the --problem-arg ``pairs``, its weights from ``checkpoint``.
    A built-in is left untrained when a checkpoint replaces its weights anyway, or when ``untrained`` (a
    command that trains it itself); a trained one comes from the user cache unless not ``cache`` (--no-cache)."""
    kwargs = problem_kwargs(pairs)
    builder = problems.BUILTIN.get(name)
    if (checkpoint or untrained) and builder and "steps" in inspect.signature(builder).parameters:
        kwargs.setdefault("steps", 0)  # no training to overwrite
    problem = problems.load(name, cache=cache, **kwargs)
    if checkpoint:
        load_checkpoint(problem.model, checkpoint)
    return problem


def objective(args: argparse.Namespace, problem: problems.Problem, data_parallel: bool = False) -> Objective:
    """The problem's objective with --params, --device and --dtype; ``data_parallel`` under torchrun
    (``args.world`` active): each rank's shard of the data, and only that moved to its device."""
    kwargs = {"params": args.params, "device": parse_device(args.device),
              "dtype": DTYPES[args.dtype] if args.dtype else None}
    if data_parallel and args.world.active:
        return DataParallelObjective(problem.model, problem.loss_fn, problem.data, world=args.world,
                                     batch_size=problem.batch_size, **kwargs)
    return problem.objective(**kwargs)


# -- what a command prints and writes --------------------------------------------------------------

def report(problem: problems.Problem, obj: Objective, check_examples: int | None = None) -> None:
    """Print what the problem is and where it stands: size, loss, gradient norm, metrics, HVP check."""
    def line(key: str, value: str) -> None:
        print(f"{key:<12} {value}", flush=True)

    line("problem", f"{problem.name}: {problem.description}" if problem.description else problem.name)
    line("parameters", f"{obj.space.n:,} in {len(obj.space.names)} tensors, "
                       f"{str(obj.dtype).removeprefix('torch.')} on {obj.device}")
    loss, grad = obj.loss_and_grad()
    line("loss", f"{loss.item():.6g}")
    line("grad norm", f"{grad.norm().item():.4g}")
    if not (torch.isfinite(loss) and torch.isfinite(grad).all()):
        raise ValueError(f"the {'loss' if not torch.isfinite(loss) else 'gradient'} is not finite at the model's "
                         f"parameters (loss {loss.item():.6g}): no derivative can be checked there; look at the "
                         f"weights (--checkpoint), the data and the loss")
    if problem.metrics:
        train = obj.evaluate(metrics=problem.metrics)
        test = None
        if problem.test_data is not None:
            test = Objective(problem.model, problem.loss_fn, problem.test_data, params=list(obj.space.names),
                             device=obj.device, dtype=obj.dtype).evaluate(metrics=problem.metrics)
        for name in problem.metrics:
            line(name, f"{train[name]:.4f} (train)" + (f"  {test[name]:.4f} (test)" if test else ""))
    total = None if check_examples is None else sum(batching.examples_in(X) for X, _, _ in obj.batches())  # rows
    subset = total is not None and check_examples < total
    check = obj.check_hvp(examples=check_examples if subset else None)
    def verdict(part) -> str:
        return ("ok" if part.agrees else "WRONG: an autodiff rule in this model disagrees with finite differences"
                if math.isfinite(part.rel_error) else "NOT FINITE: the products or the finite differences are NaN here")

    on = f", the first {check_examples:,} of {total:,} examples" if subset else ""
    line("HVP check", f"relative error {check.rel_error:.1e} against central differences "
                      f"({check.dtype}, {len(check.rel_errors)} random unit vectors{on}, {check.mode} mode): "
                      f"{verdict(check)}")
    if check.in_own_dtype:
        own = check.in_own_dtype
        line("", f"relative error {own.rel_error:.1e} of the products in {own.dtype}, their own precision, against "
                 f"those (tolerance {own.tolerance:.1e}): " + ("ok" if own.agrees else
                 f"WRONG: a {own.dtype} kernel or autodiff rule in this model differs from its {check.dtype} one"))


def headline(problem: problems.Problem, obj: Objective, note: str = "") -> None:
    """The first line of a command's report: the problem, its size, precision and device (and ``note``)."""
    print(f"problem      {problem.name}, {obj.space.n:,} parameters, {str(obj.dtype).removeprefix('torch.')} "
          f"on {obj.device}" + (f"; {note}" if note else ""), flush=True)


def output_folder(path: str | Path) -> Path:
    """``--out``, made if missing."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_json(path: Path, data) -> None:
    """Write ``data`` as strict JSON: tensors and arrays as lists, NaN and infinities as null."""
    path.write_text(json.dumps(jsonable(data), indent=2, allow_nan=False))


# -- torchrun ----------------------------------------------------------------------------------

def torchrun_world(args: argparse.Namespace) -> distributed.World:
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
    return distributed.init(device)


def in_world(args: argparse.Namespace, world: distributed.World) -> argparse.Namespace:
    """A copy of a torchrun command's ``args`` that runs in ``world``, on the rank's own device."""
    moved = {"device": str(world.device)} if distributed.launched() else {}
    return argparse.Namespace(**{**vars(args), "world": world, **moved})


# -- outputs several commands write ------------------------------------------------------------

def draw(result: Scan, out: Path, *, png: bool, vtk: bool, log: bool, zmax: float | None,
         title: str | None = None, announce: bool = True, to_scale: bool = True) -> list[Path]:
    """Write a scan's figures (curve, contour, surface, and a VTK rendering of a 2D one) and its VTK
    files to ``out``; print each file (``announce``). A rendering VTK cannot make here is skipped with a note."""
    check_scale(log, zmax)
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

        written += plots.scan_figures(result, out, log=log, zmax=zmax, to_scale=to_scale)
        if len(result.axes) == 2 and plots.is_plane(result):
            try:
                written.append(render.render(result, out / "render.png", log=log, zmax=zmax, title=title))
            except RuntimeError as error:
                print(f"render       skipped: {error}", flush=True)
    if vtk:
        from viz import scenes

        written += scenes.export(result, out, log=log, zmax=zmax)
    for f in written if announce else []:
        print(f"wrote        {f}", flush=True)
    return written


def checkpoints(folder: str) -> list[Path]:
    """The checkpoints ``*.pt``, ``*.pth`` or ``*.safetensors`` in ``folder``, in natural order (step2 before step10)."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"--trajectory {folder} is not a directory")
    files = sorted((f for f in path.iterdir() if f.suffix in (".pt", ".pth", ".safetensors")),
                   key=lambda f: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", f.name)])
    if not files:
        raise ValueError(f"--trajectory {folder} holds no checkpoints (*.pt, *.pth or *.safetensors files)")
    return files


def load_trajectory(files: list[Path], problem: problems.Problem,
                    obj: Objective) -> tuple[list[str], torch.Tensor, list]:
    """The checkpoints as flat parameter vectors ``[m, n]`` of ``obj``'s space, and each one's own
    loss (its parameters and its buffers, such as BatchNorm's running statistics)."""
    model = copy.deepcopy(problem.model)
    rows, losses = [], []
    for f in files:
        load_checkpoint(model, f)
        rows.append(obj.space.flatten(dict(model.named_parameters())).detach().to(obj.device, obj.dtype))
        own = Objective(model, problem.loss_fn, problem.data, batch_size=problem.batch_size, device=obj.device,
                        dtype=obj.dtype)  # a snapshot of this checkpoint, buffers included
        losses.append(own.loss().item())
    return [f.name for f in files], torch.stack(rows), losses


def place(path: Path, d: dirs.Directions, result: Scan, trajectory) -> dict:
    """Project the checkpoints onto the scan's plane and store them (with their own loss) in the scan file;
    say how far off the plane they are and whether the grid holds them."""
    names, T, losses = trajectory
    placed = dirs.project(d, T, center=result.center)
    scan_store.add_trajectory(path, placed.coords, placed.residuals, names, losses)
    off = placed.relative[placed.residuals > 0] if (placed.residuals > 0).any() else np.zeros(1)
    print(f"trajectory   {len(names)} checkpoints projected; off-plane distance median {np.median(off):.1%}, "
          f"up to {off.max():.1%} of their distance from the centre", flush=True)
    low, high = placed.coords.min(axis=0) + 0.0, placed.coords.max(axis=0) + 0.0  # + 0.0: no "-0"
    outside = [f"{'xyz'[a]} from {low[a]:.3g} to {high[a]:.3g}" for a, axis in enumerate(result.axes)
               if low[a] < axis[0] or high[a] > axis[-1]]
    if outside:
        print(f"             the run reaches beyond the grid ({', '.join(outside)}): figures show the part "
              f"inside; widen --grid to see all of it", flush=True)
    return {"names": names, "loss": losses, **placed.to_dict()}


def negative_mass(rho) -> str:
    """The negative mass as the toolkit defines it (``SpectralDensity.negative_mass``), in words."""
    return f"negative mass {rho.negative_mass()}"
