"""``landscape eos``: the edge of stability, full-batch gradient descent with its sharpness tracked
against 2/lr."""

from __future__ import annotations

import argparse

from landscape.cli.common import (headline, load_problem, objective, output_folder, problem_arguments,
                                  problem_kwargs, write_json)


def add_parser(subparsers) -> None:
    sub = subparsers.add_parser(
        "eos", help="edge of stability: full-batch GD with the sharpness tracked against 2/lr",
        description="Train the problem from its start (a built-in untrained, or --checkpoint) by full-batch "
                    "gradient descent at each --lr, estimating the Hessian's top eigenvalue every --every steps "
                    "(Lanczos warm-started from the last estimate), and write eos.json and eos.png: sharpness "
                    "against 2/lr and the loss (Cohen et al. 2021). digits-mlp uses the square loss here unless "
                    "--problem-arg loss=... says otherwise.")
    problem_arguments(sub)
    sub.add_argument("--lr", type=float, action="append", required=True,
                     help="learning rate (repeat for several runs, e.g. --lr 0.1 --lr 0.15)")
    sub.add_argument("--steps", type=int, default=3000, help="GD steps per run (default 3000)")
    sub.add_argument("--every", type=int, default=100, help="estimate the sharpness every N steps (default 100)")
    sub.add_argument("--k", type=int, default=1, help="top eigenvalues per estimate (default 1)")
    sub.add_argument("--tol", type=float, default=1e-4, help="Lanczos residual tolerance, relative (default 1e-4)")
    sub.add_argument("--seed", type=int, default=0, help="seed of Lanczos' first start (default 0)")
    sub.add_argument("--out", required=True, metavar="DIR", help="directory for eos.json and eos.png")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dynamics.descent import gradient_descent
    from dynamics.edge_of_stability import SharpnessTracker

    if not args.lr or any(not lr > 0 for lr in args.lr):
        raise ValueError(f"--lr must be positive, got {args.lr}")
    if args.steps < 1 or args.every < 1 or args.k < 1:
        raise ValueError("--steps, --every and --k must be at least 1")
    pairs = list(args.problem_arg or [])
    if args.problem == "digits-mlp" and not any(p.startswith("loss=") for p in pairs):
        pairs.append("loss=mse")  # Cohen et al.'s square loss, where sharpness settles at 2/lr
    out = output_folder(args.out)
    problem = load_problem(args.problem, pairs, args.checkpoint, untrained=True)
    obj = objective(args, problem)
    headline(problem, obj, f"full-batch gradient descent from {'--checkpoint' if args.checkpoint else 'its start'}"
                           + (f" ({', '.join(pairs)})" if pairs else ""))
    runs = []
    for lr in args.lr:
        tracker = SharpnessTracker(obj, lr=lr, every=args.every, k=args.k, tol=args.tol, seed=args.seed)
        descent = gradient_descent(obj, lr, args.steps, tracker=tracker)
        h = descent.sharpness
        edge = h.sharpness[-1, 0] / h.two_over_lr
        print(f"lr {lr:<9g} 2/lr {h.two_over_lr:.4g}: sharpness {h.sharpness[0, 0]:.4g} at step 0, "
              f"{h.sharpness[-1, 0]:.4g} at step {h.steps[-1]} ({edge:.2f} x 2/lr); loss {descent.loss[0]:.4g} -> "
              f"{descent.loss[descent.steps_done]:.4g}"
              + (f"; DIVERGED after step {descent.steps_done}" if descent.diverged else "")
              + f"; {h.n_matvecs.mean():.1f} HVPs per estimate", flush=True)
        runs.append(descent)
    from viz.training import sharpness_history

    sharpness_history(runs, title=f"{problem.name}: full-batch GD, sharpness and 2/lr",
                      path=out / "eos.png")
    write_json(out / "eos.json", {"problem": problem.name, "problem_args": problem_kwargs(pairs),
                                  "parameters": obj.space.n, "runs": [r.to_dict() for r in runs]})
    print(f"wrote        {out / 'eos.png'} and {out / 'eos.json'}")
    return 0
