"""``landscape spectrum``: the Hessian's extreme eigenvalues, trace and spectral density (also under torchrun,
data-parallel)."""

from __future__ import annotations

import argparse
import math


from landscape.cli.common import (headline, load_problem, negative_mass, objective, output_folder,
                                  problem_arguments, write_json)
from landscape.curvature.operators import hessian
from landscape.curvature.spectrum import density, eigenvalues
from landscape.linalg.lanczos import WHICH
from landscape.linalg.trace import hutchpp


def add_parser(subparsers) -> None:
    sub = subparsers.add_parser(
        "spectrum", help="Hessian eigenvalues (Lanczos), trace and spectral density",
        description="Compute the Hessian's extreme eigenvalues with thick-restart Lanczos (residual-checked), "
                    "optionally its trace (Hutch++) and spectral density (stochastic Lanczos quadrature, plotted "
                    "with --plot); write spectrum.json.")
    problem_arguments(sub)
    sub.add_argument("--k", type=int, default=10, help="how many eigenvalues (at each end with --which both; "
                                                       "default 10)")
    sub.add_argument("--which", choices=WHICH, default="largest")
    sub.add_argument("--tol", type=float, default=1e-6,
                     help="residual tolerance ||Hv - lambda v|| <= tol |lambda_max| (default 1e-6)")
    sub.add_argument("--trace", action="store_true", help="also estimate the trace with Hutch++")
    sub.add_argument("--trace-budget", type=int, default=99, metavar="N", help="HVPs for the trace (default 99)")
    sub.add_argument("--density", action="store_true", help="also compute the spectral density (into the JSON)")
    sub.add_argument("--plot", action="store_true",
                     help="draw DIR/density.png: the density (computed even without --density) with the "
                          "eigenvalues marked")
    sub.add_argument("--probes", type=int, default=16, help="density probes (default 16)")
    sub.add_argument("--steps", type=int, default=80, help="Lanczos steps per density probe (default 80)")
    sub.add_argument("--scale", choices=["log", "linear"], default="log", help="density axis (default log)")
    sub.add_argument("--out", required=True, metavar="DIR", help="directory for spectrum.json (and density.png)")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    checks = [("--k", args.k, args.k >= 1, "at least 1"), ("--tol", args.tol, math.isfinite(args.tol) and args.tol > 0,
              "a positive number"), ("--trace-budget", args.trace_budget, args.trace_budget >= 3, "at least 3 (Hutch++"
              " needs a sketch, its products and a probe)"), ("--probes", args.probes, args.probes >= 1, "at least 1"),
              ("--steps", args.steps, args.steps >= 2, "at least 2 (one step is one node per probe: no density)")]
    for flag, value, ok, what in checks:  # every argument before any work
        if not ok:
            raise ValueError(f"{flag} must be {what}, got {value}")
    out = output_folder(args.out)
    problem = load_problem(args.problem, args.problem_arg, args.checkpoint, cache=not args.no_cache)
    obj = objective(args, problem, data_parallel=True)  # its memory budget is one all ranks agree on
    world = args.world
    H = hessian(obj)
    headline(problem, obj, f"data-parallel over {world.size} processes ({world.backend})" if world.active else "")
    summary = {"problem": problem.name, "parameters": obj.space.n, "dtype": str(obj.dtype).removeprefix("torch."),
               **({"processes": world.size} if world.active else {})}

    def save(key: str, result) -> None:
        """Each result into spectrum.json as soon as it exists (rank 0), so that a later failure loses nothing."""
        summary[key] = result.to_dict()
        if world.main:
            write_json(out / "spectrum.json", summary)

    top = eigenvalues(H, k=args.k, which=args.which, tol=args.tol, progress=True)
    save("eigenvalues", top)
    if top.converged:
        verdict = "converged"
    elif top.n_matvecs >= top.settings["max_steps"]:
        verdict = "NOT converged: the step budget ran out"
    else:
        verdict = ("NOT converged: the measured residuals stay above tol, the precision of the products "
                   "(try --dtype float64 or a larger --tol)")
    print(f"eigenvalues  {args.which} {args.k}: {top.n_matvecs} HVPs, {top.seconds:.2f} s, {verdict} at tol {args.tol:g}")
    for i, (value, residual) in enumerate(zip(top.eigenvalues, top.residuals), 1):
        print(f"  {i:>3}  {value: .8e}   residual {residual:.1e}")
    if args.trace:
        trace = hutchpp(H, n_matvecs=args.trace_budget)
        save("trace", trace)
        print(f"trace        {trace.estimate:.6g} +- {trace.stderr:.2g} (Hutch++, {trace.n_matvecs} HVPs)")
    if args.density or args.plot:
        rho = density(H, probes=args.probes, steps=args.steps, progress=True)
        save("density", rho)
        print(f"density      {args.probes} probes x {args.steps} steps, {rho.n_matvecs} HVPs, {negative_mass(rho)}")
    if world.main:
        print(f"wrote        {out / 'spectrum.json'}")
    if args.plot and world.main:
        from viz.plots import spectral_density

        spectral_density(rho, log=args.scale == "log", eigenvalues=top.eigenvalues,
                         title=f"{problem.name}: Hessian spectral density", path=out / "density.png")
        print(f"wrote        {out / 'density.png'}")
    return 0
