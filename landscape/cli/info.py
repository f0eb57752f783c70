"""``landscape info``: a problem's size, loss, gradient norm, metrics and an HVP check."""

from __future__ import annotations

import argparse

from landscape.cli.common import load_problem, objective, problem_arguments, report


def add_parser(subparsers) -> None:
    sub = subparsers.add_parser(
        "info", help="parameters, loss, gradient norm, metrics and an HVP check of a problem",
        description="Print a problem's size, loss, gradient norm and metrics, and check its exact Hessian-vector "
                    "products against finite differences.")
    problem_arguments(sub)
    sub.add_argument("--check-examples", type=int, default=64, metavar="N",
                     help="check the HVPs on the first N examples (default 64; 0: all of them): an autodiff rule "
                          "that is wrong is wrong on any data, and the float64 finite differences take 30 gradients")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.check_examples < 0:
        raise ValueError(f"--check-examples must be 0 (all) or a positive number of examples, got {args.check_examples}")
    problem = load_problem(args.problem, args.problem_arg, args.checkpoint, cache=not args.no_cache)
    report(problem, objective(args, problem), args.check_examples or None)
    return 0
