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
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    problem = load_problem(args.problem, args.problem_arg, args.checkpoint, cache=not args.no_cache)
    report(problem, objective(args, problem))
    return 0
