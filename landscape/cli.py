"""The ``landscape`` command: ``info`` and ``demo`` (more subcommands arrive with their analyses).

Bad input (an unknown problem, a missing file, a checkpoint that does not fit) is
reported in one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import inspect
import sys

import torch

from landscape import problems
from landscape.objective import Objective

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


def _problem(args) -> problems.Problem:
    checkpoint = getattr(args, "checkpoint", None)
    builder = problems.BUILTIN.get(args.problem)
    untrained = checkpoint and builder and "steps" in inspect.signature(builder).parameters
    problem = problems.load(args.problem, **({"steps": 0} if untrained else {}))  # no training to overwrite
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


def _info(args) -> int:
    problem = _problem(args)
    obj = problem.objective(params=args.params, device=_device(args.device),
                            dtype=DTYPES[args.dtype] if args.dtype else None)
    report(problem, obj)
    return 0


def _demo(args) -> int:
    print("landscape demo: train the built-in digits-mlp, then check its exact Hessian-vector products.\n")
    problem = problems.load("digits-mlp")
    report(problem, problem.objective(device=_device(args.device)))
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
    info.add_argument("--problem", default="digits-mlp", metavar="NAME_OR_PATH",
                      help=f"a built-in problem ({', '.join(problems.BUILTIN)}) or path/to/file.py:factory, "
                           f"a Python file whose factory() returns a Problem or (model, loss_fn, data); "
                           f"it runs as code (default: digits-mlp)")
    info.add_argument("--checkpoint", metavar="FILE",
                      help="a state dict saved with torch.save, loaded with weights_only=True")
    info.add_argument("--params", nargs="+", metavar="PATTERN",
                      help="analyse only these parameters (names or glob patterns, e.g. 'fc2.*')")
    info.add_argument("--device", help="cpu, cuda or cuda:N (default: where the model is)")
    info.add_argument("--dtype", choices=sorted(DTYPES), help="compute in this precision (default: the model's)")
    info.set_defaults(run=_info)

    demo = sub.add_parser("demo", help="train the built-in digits-mlp and check its HVPs",
                          description="Train the built-in digits-mlp (seconds on a CPU) and print its "
                                      "parameter count, loss, gradient norm, accuracy and an HVP check.")
    demo.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu)")
    demo.set_defaults(run=_demo)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"landscape {args.command}: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # torch refusing the model on its data: shapes, dtypes, devices
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"landscape {args.command}: error: the model failed on its data: {first}", file=sys.stderr)
        return 2
