"""``landscape hopfield``: a Hopfield network's storage capacity against the theory of Amit, Gutfreund and
Sompolinsky."""

from __future__ import annotations

import argparse
import math

import numpy as np

from landscape.cli.common import output_folder, write_json


def add_parser(subparsers) -> None:
    sub = subparsers.add_parser(
        "hopfield", help="Hopfield network storage capacity against the AGS theory",
        description="Store P = alpha N random +-1 patterns in a Hopfield network (Hebbian weights), start the "
                    "dynamics at each stored pattern and count the bits flipped at the fixed point reached, for "
                    "each --alpha; compare with Amit, Gutfreund and Sompolinsky's theory (critical load 0.138). "
                    "Writes hopfield.json and hopfield.png.")
    sub.add_argument("--n", type=int, default=1000, help="units (default 1000)")
    sub.add_argument("--alpha", type=float, nargs="+", default=[0.05, 0.1, 0.12, 0.138, 0.16, 0.2],
                     help="loads P/N (default 0.05 0.1 0.12 0.138 0.16 0.2)")
    sub.add_argument("--trials", type=int, default=1, help="pattern sets per load (default 1)")
    from dynamics.systems.hopfield import MODES

    sub.add_argument("--mode", choices=MODES, default="async",
                     help="one unit at a time in a random order (default), or all at once (can end in 2-cycles)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the patterns and the update order (default 0)")
    sub.add_argument("--out", required=True, metavar="DIR", help="directory for hopfield.json and hopfield.png")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dynamics.systems import hopfield

    if args.n < 2 or args.trials < 1:
        raise ValueError("--n must be at least 2 and --trials at least 1")
    out = output_folder(args.out)
    result = hopfield.capacity(args.n, args.alpha, trials=args.trials, seed=args.seed, mode=args.mode)
    alpha_c, at_c = hopfield.ags_critical_load()
    print(f"network      N = {args.n}, Hebbian weights, {args.mode} retrieval from each stored pattern, "
          f"{args.trials} trial(s), in {result.seconds:.1f} s")
    print(f"{'alpha':>8} {'P':>6} {'flipped':>9} {'(std)':>9} {'AGS':>9} {'retrieved':>9} {'sweeps':>6}")
    for i, alpha in enumerate(result.alphas):
        theory = "-" if not math.isfinite(result.theory[i]) else f"{result.theory[i]:.3%}"
        print(f"{alpha:>8.4g} {result.patterns[i]:>6} {result.flipped_mean[i]:>9.3%} {result.flipped_std[i]:>9.3%} "
              f"{theory:>9} {result.retrieved[i]:>9.1%} {result.sweeps[i]:>6.1f}")
    print(f"theory       AGS: critical load {alpha_c:.4f} with {at_c:.2%} flipped; above it no retrieval state")
    from viz.training import hopfield_capacity

    dense = np.linspace(0.01, alpha_c, 60)
    hopfield_capacity({f"N = {args.n}, {args.mode}": result}, theory=(dense, [hopfield.ags_flipped(a) for a in dense]),
                      critical=alpha_c, path=out / "hopfield.png")
    write_json(out / "hopfield.json", {**result.to_dict(), "alpha_c": alpha_c, "flipped_at_c": at_c})
    print(f"wrote        {out / 'hopfield.png'} and {out / 'hopfield.json'}")
    return 0
