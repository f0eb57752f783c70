"""``landscape lyapunov``: the Lyapunov spectrum of a classic system, of gradient descent or of gradient flow."""

from __future__ import annotations

import argparse
from dataclasses import fields

from landscape.cli.common import load_problem, objective, output_folder, problem_arguments, write_json


def add_parser(subparsers) -> None:
    from dynamics.systems import SYSTEMS

    sub = subparsers.add_parser(
        "lyapunov", help="Lyapunov spectrum of a classic system, of gradient descent or of gradient flow",
        description="Lyapunov exponents by the QR method (Benettin, Shimada-Nagashima): of a classic system "
                    "(--system), or of training on a problem: the gradient-descent map theta -> theta - lr grad L"
                    " (--lr; its Jacobian is I - lr H) or gradient flow (--flow --dt; -H), tangents pushed as one"
                    " batched HVP per step. Writes lyapunov.json and lyapunov.png (spectrum and convergence).")
    problem_arguments(sub)
    sub.add_argument("--system", choices=list(SYSTEMS),
                     help="a classic system with published exponents instead of a problem")
    sub.add_argument("--lr", type=float, help="learning rate of the gradient-descent map")
    sub.add_argument("--flow", action="store_true", help="gradient flow instead of gradient descent")
    sub.add_argument("--k", type=int, help="how many exponents (default: all, for a system)")
    sub.add_argument("--steps", type=int, default=1000, help="counted steps (default 1000)")
    sub.add_argument("--transient", type=int, default=0, help="uncounted steps first (default 0)")
    sub.add_argument("--interval", type=int, help="re-orthonormalize every N steps (default 1 for maps, 10 for flows)")
    sub.add_argument("--dt", type=float, default=0.01, help="RK4 step of a flow (default 0.01)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the random orthonormal start (default 0)")
    sub.add_argument("--out", required=True, metavar="DIR", help="directory for lyapunov.json and lyapunov.png")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dynamics import lyapunov
    from dynamics.systems import SYSTEMS

    out = output_folder(args.out)
    common = {"steps": args.steps, "transient": args.transient, "seed": args.seed}
    if args.interval is not None:
        common["interval"] = args.interval
    if args.system:
        system = SYSTEMS[args.system]()
        what = f"{args.system} ({', '.join(f'{f.name} {getattr(system, f.name):.4g}' for f in fields(system) if f.repr)})"
        if system.kind == "map":
            result = lyapunov.map_spectrum(system, k=args.k, **common)
        else:
            result = lyapunov.flow_spectrum(system, k=args.k, dt=args.dt, **common)
        unit = "per step" if system.kind == "map" else "per unit time"
    else:
        problem = load_problem(args.problem, args.problem_arg, args.checkpoint, cache=not args.no_cache)
        obj = objective(args, problem)
        if args.k is None:
            raise ValueError("--k (how many exponents) is needed for a problem")
        if args.flow:
            result = lyapunov.gradient_flow_spectrum(obj, args.k, dt=args.dt, **common)
            what, unit = f"gradient flow on {problem.name}", "per unit time"
        else:
            if args.lr is None:
                raise ValueError("--lr is needed for the gradient-descent map (or --flow for gradient flow)")
            result = lyapunov.gd_spectrum(obj, args.lr, args.k, **common)
            what, unit = f"gradient descent (lr {args.lr:g}) on {problem.name}", "per step"
    print(f"system       {what}", flush=True)
    n = result.settings.get("n", len(result.exponents))
    print(f"exponents    {unit}, {result.n_steps} steps ({result.n_matvecs} tangent products) in "
          f"{result.seconds:.1f} s; {len(result.exponents)} of {n}"
          + (" (truncated: the rest were not computed)" if result.truncated else "")
          + "; spread = how far each estimate moved over the last quarter of the run:")
    for i, (value, spread, still) in enumerate(zip(result.exponents, result.spread, result.moving), 1):
        print(f"  {i:>3}  {value: .6f}   spread {spread:.1e}" + ("  still moving" if still else ""))
    drifting = int(result.moving.sum())
    print(f"sum          {result.exponents.sum():.6f}")
    if result.kaplan_yorke_bound:
        print(f"Kaplan-Yorke >= {result.kaplan_yorke:.0f} (every computed partial sum is positive: the exponents not "
              f"computed decide the rest; raise --k)")
    else:
        print(f"Kaplan-Yorke {result.kaplan_yorke:.4f}")
    if drifting:
        print(f"note         {drifting} exponent(s) still moving by more than 10% over the last quarter of the run: "
              f"not converged; raise --steps")
    from viz.training import lyapunov_spectrum

    lyapunov_spectrum(result.exponents, running=result.running, times=result.times, moving=result.moving, of=n,
                      title=f"Lyapunov spectrum: {what}", path=out / "lyapunov.png")
    write_json(out / "lyapunov.json", {"system": what, **result.to_dict()})
    print(f"wrote        {out / 'lyapunov.png'} and {out / 'lyapunov.json'}")
    return 0
