"""``landscape ntk``: the neural tangent kernel, and training against its linearization (the kernel regime)."""

from __future__ import annotations

import argparse
import inspect

from landscape import problems
from landscape.cli.common import (headline, ints, load_problem, objective, output_folder, problem_arguments,
                                  problem_kwargs, write_json)
from landscape.core.objective import Objective


def add_parser(subparsers) -> None:
    from dynamics.linearized import METHODS

    sub = subparsers.add_parser(
        "ntk", help="the neural tangent kernel and training against its linearization (the kernel regime)",
        description="Form the empirical NTK Theta = J J^T of the model on its first --examples training examples "
                    "(all outputs: [mC, mC]), print its trace and top eigenvalues, then train the network by "
                    "full-batch gradient descent (or gradient flow) beside its linearization at the start, "
                    "f_t = y + (I - lr c Theta / m)^k (f_0 - y), and report the gap between them and how far the "
                    "kernel moved. The loss must be the square loss (c/2m) sum ||f - y||^2 (a built-in problem "
                    "gets loss=mse and starts at its initialisation). With --widths, the same for networks of each "
                    "width and seed, and the rate at which the gap closes with width. Writes ntk.json and ntk.png "
                    "(and ntk_widths.png).")
    problem_arguments(sub)
    sub.add_argument("--examples", type=int, default=64, metavar="M",
                     help="training examples the kernel and the training use (default 64)")
    sub.add_argument("--k", type=int, default=10, help="top eigenvalues to print (default 10)")
    sub.add_argument("--steps", type=int, default=200,
                     help="gradient descent steps; with --method flow, the flow runs to t = steps * lr "
                          "(default 200)")
    sub.add_argument("--every", type=int, default=10, help="record every N steps, and the last (default 10)")
    sub.add_argument("--lr", type=float, help="learning rate (default: --stable-fraction of the linearized "
                                              "model's stability limit 2m / (c lambda_max))")
    sub.add_argument("--stable-fraction", type=float, default=0.5,
                     help="the learning rate as a fraction of the stability limit, when --lr is not given "
                          "(default 0.5)")
    sub.add_argument("--method", choices=METHODS, default="gd",
                     help="train by gradient descent (default) or integrate gradient flow to t = steps * lr")
    sub.add_argument("--widths", metavar="W1,W2,...",
                     help="compare networks of these widths (a built-in that takes hidden=, e.g. digits-mlp; "
                          "add --problem-arg parametrization=ntk for the NTK parametrization)")
    sub.add_argument("--seeds", default="0", metavar="S1,S2,...",
                     help="with --widths: the seeds of each width's networks (default 0)")
    sub.add_argument("--out", required=True, metavar="DIR", help="directory for ntk.json and the figures")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
    out = output_folder(args.out)
    settings = {"steps": args.steps, "every": args.every, "method": args.method}
    if args.widths:
        widths, seeds = ints(args.widths), ints(args.seeds, "--seeds", least=0)
        if len(widths) < 2 or len(set(widths)) < len(widths):
            raise ValueError(f"--widths {args.widths!r} must name two or more different widths")
        if args.checkpoint:
            raise ValueError("--widths builds new networks at their initialisation; it takes no --checkpoint")
        if "hidden" not in inspect.signature(problems.BUILTIN.get(args.problem, lambda: None)).parameters:
            raise ValueError(f"--widths needs a built-in problem whose builder takes hidden= (digits-mlp); "
                             f"{args.problem!r} does not")

        def build(width: int, seed: int) -> Objective:
            return objective(args, _problem(args, hidden=width, seed=seed))

        problem = _problem(args, hidden=widths[0], seed=seeds[0])
        headline(problem, objective(args, problem),
                 f"widths {', '.join(map(str, widths))}, seeds {', '.join(map(str, seeds))}")
        sweep = linearized.sweep(build, widths, seeds=seeds, stable_fraction=args.stable_fraction, **settings)
        print(sweep.table())
        print(f"rate         max gap ~ width^-{sweep.rate:.3f}, kernel change ~ width^-{sweep.kernel_rate:.3f} "
              f"(least squares on the logs of the means over {len(seeds)} seed(s))")
        kernel_regime({f"width {w}": sweep.runs[i][0] for i, w in enumerate(sweep.widths)}, path=out / "ntk.png")
        width_scaling(sweep, path=out / "ntk_widths.png")
        write_json(out / "ntk.json", {"problem": args.problem, "sweep": sweep.to_dict()})
        print(f"wrote        {out / 'ntk.json'}, {out / 'ntk.png'} and {out / 'ntk_widths.png'}")
        return 0

    problem = _problem(args)
    obj = objective(args, problem)
    headline(problem, obj, f"NTK at {'the checkpoint' if args.checkpoint else 'initialisation'}")
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
    write_json(out / "ntk.json", {"problem": args.problem, "trace": float(lam.sum()), "comparison": result.to_dict()})
    print(f"wrote        {out / 'ntk.json'} and {out / 'ntk.png'}")
    return 0


def _problem(args, **overrides) -> problems.Problem:
    """The problem at init with a square loss: a built-in that takes ``loss`` gets ``loss=mse`` and, with
    ``--examples``, ``examples=m``; another problem's (X, y) is cut to its first m examples."""
    builder = problems.BUILTIN.get(args.problem)
    accepts = inspect.signature(builder).parameters if builder else {}
    given = problem_kwargs(args.problem_arg)
    pairs = list(args.problem_arg or [])
    for key, value in {"loss": "mse", "examples": args.examples}.items():
        if key in accepts and key not in given and value is not None:
            pairs.append(f"{key}={value}")
    pairs += [f"{key}={value}" for key, value in overrides.items()]
    problem = load_problem(args.problem, pairs, args.checkpoint, untrained=True)
    if args.examples is not None and "examples" not in accepts:
        if not (isinstance(problem.data, (tuple, list)) and len(problem.data) == 2):
            raise ValueError("--examples needs a problem whose data is one (X, y) pair")
        X, y = problem.data
        problem.data = (X[:args.examples], y[:args.examples])
    return problem
