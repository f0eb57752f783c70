"""``landscape flow``: gradient descent against gradient flow and the modified flow."""

from __future__ import annotations

import argparse

from landscape.cli.common import (headline, load_problem, objective, output_folder, problem_arguments,
                                  write_json)


def add_parser(subparsers) -> None:
    from dynamics.flow import METHODS

    sub = subparsers.add_parser(
        "flow", help="gradient descent against gradient flow and the modified flow",
        description="Train the problem from its start by gradient descent at --lr and integrate gradient flow "
                    "theta' = -grad L and the modified flow of Barrett and Dherin (L + lr/4 |grad L|^2, whose "
                    "gradient takes one HVP) over the same time, t = k lr; write flow.json (losses, distances) "
                    "and flow.png. GD follows the modified flow to O(lr^2) and plain gradient flow only to O(lr).")
    problem_arguments(sub)
    sub.add_argument("--lr", type=float, required=True, help="gradient-descent learning rate")
    sub.add_argument("--steps", type=int, default=200, help="GD steps (default 200)")
    sub.add_argument("--every", type=int, default=10, help="record every N steps (default 10)")
    sub.add_argument("--method", choices=METHODS, default="dopri5", help="ODE solver (default dopri5, adaptive)")
    sub.add_argument("--rtol", type=float, help="solver tolerance (default: by dtype, see dynamics.flow)")
    sub.add_argument("--atol", type=float, help="solver tolerance (default: by dtype)")
    sub.add_argument("--out", required=True, metavar="DIR", help="directory for flow.json and flow.png")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dynamics.flow import compare_gd

    if not (args.lr and args.lr > 0) or args.steps < 1 or args.every < 1:
        raise ValueError("--lr must be positive, --steps and --every at least 1")
    out = output_folder(args.out)
    problem = load_problem(args.problem, args.problem_arg, args.checkpoint, untrained=True)
    obj = objective(args, problem)
    headline(problem, obj, f"from {'--checkpoint' if args.checkpoint else 'its start'}")
    result = compare_gd(obj, args.lr, args.steps, every=args.every, method=args.method, rtol=args.rtol,
                        atol=args.atol)
    end = -1
    print(f"time         0 to {result.times[end]:g} ({args.steps} GD steps of lr {args.lr:g}); {args.method}, "
          f"{result.flow.n_gradients + result.modified.n_gradients} gradients and {result.modified.n_matvecs} HVPs "
          f"for the flows")
    print(f"loss at end  gradient descent {result.gd_loss[end]:.6g}, gradient flow {result.flow.loss[end]:.6g}, "
          f"modified flow {result.modified.loss[end]:.6g}")
    print(f"distance     GD to gradient flow {result.to_flow[end]:.4g}, GD to the modified flow "
          f"{result.to_modified[end]:.4g} (of order lr and lr^2)")
    for flow, name in ((result.flow, "gradient flow"), (result.modified, "modified flow")):
        if flow.message:
            print(f"note         {name}: {flow.message}")
    from viz.training import over_time

    over_time(result.times, {"gradient descent": result.gd_loss, "gradient flow": result.flow.loss,
                             "modified flow (L + lr/4 |grad L|^2)": result.modified.loss},
              gaps={"GD to gradient flow": result.to_flow, "GD to modified flow": result.to_modified},
              title=f"{problem.name}: gradient descent (lr {args.lr:g}) against the flows", path=out / "flow.png")
    write_json(out / "flow.json", {"problem": problem.name, **result.to_dict()})
    print(f"wrote        {out / 'flow.png'} and {out / 'flow.json'}")
    return 0
