"""What the commands share: the problem and scale options, argparse helpers, the problem and objective
builders, the printed report, the output folder and the one JSON writer, and torchrun's world."""

from __future__ import annotations

import argparse
import inspect
import json
import math
from pathlib import Path

import torch

from landscape import problems
from landscape.core import distributed
from landscape.core.data_parallel import DataParallelObjective
from landscape.core.objective import Objective
from landscape.core.results import jsonable

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
                         help="a state dict saved with torch.save, loaded with weights_only=True")
    sub.add_argument("--params", nargs="+", metavar="PATTERN",
                     help="analyse only these parameters (names or glob patterns, e.g. 'fc2.*')")
    sub.add_argument("--device", help="cpu, cuda or cuda:N (default: where the model is)")
    sub.add_argument("--dtype", choices=sorted(DTYPES), help="compute in this precision (default: the model's)")


def scale_arguments(sub: argparse.ArgumentParser) -> None:
    """--log and --zmax, how a scan's heights are drawn (checked by ``check_scale``)."""
    sub.add_argument("--log", action="store_true", help="draw heights as log10 of the loss (contours are always "
                                                        "log-spaced when the loss is positive)")
    sub.add_argument("--zmax", type=float, metavar="Z", help="clip the loss at Z before drawing (the raw loss stays "
                                                             "in the files' loss array)")


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
                 untrained: bool = False) -> problems.Problem:
    """The problem ``name`` (--problem) built with the --problem-arg ``pairs``, its weights from ``checkpoint``.
    A built-in is left untrained when a checkpoint replaces its weights anyway, or when ``untrained`` (a
    command that trains it itself)."""
    kwargs = problem_kwargs(pairs)
    builder = problems.BUILTIN.get(name)
    if (checkpoint or untrained) and builder and "steps" in inspect.signature(builder).parameters:
        kwargs.setdefault("steps", 0)  # no training to overwrite
    try:
        problem = problems.load(name, **kwargs)
    except TypeError as error:  # a keyword the built-in does not take
        raise ValueError(f"--problem-arg: {error}") from error
    if checkpoint:
        problems.load_checkpoint(problem.model, checkpoint)
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
