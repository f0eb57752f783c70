"""Lyapunov spectra: the Lorenz attractor, then gradient descent on a trained network.

A Lyapunov exponent is the average exponential rate at which nearby trajectories separate
along one direction. The QR method pushes k tangent vectors along a trajectory by the
Jacobian, re-orthonormalizes them now and then, and averages the logarithms of the
stretches. First the Lorenz system, whose spectrum is published (0.9056, 0, -14.5723;
Sprott 2003). Then training itself: gradient descent theta -> theta - lr grad L is a map with
Jacobian I - lr H, so near a minimum its exponents are log|1 - lr a_i| over the Hessian's
eigenvalues a_i. Below lr = 2 / lambda_max the top Hessian direction contracts and the
largest exponents are about 0, from the flat directions (a_i near 0): nearby runs do not
separate. Above it, log|1 - lr lambda_max| > 0: the top exponent turns positive and the
minimum repels gradient descent.

    python examples/lyapunov.py [--out DIR] [--steps N]

Writes DIR/lyapunov_lorenz.png and DIR/lyapunov_gd.png and prints the spectra.
"""

import argparse
from pathlib import Path

import numpy as np

import landscape
from dynamics.lyapunov import flow_spectrum, gd_spectrum
from dynamics.systems import Lorenz
from viz.training import lyapunov_spectrum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples-out", help="where the figures go (default examples-out/)")
    parser.add_argument("--steps", type=int, default=200, help="gradient-descent steps per learning rate")
    parser.add_argument("--time", type=float, default=500.0, help="Lorenz integration time (default 500)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    lorenz = flow_spectrum(Lorenz(), dt=0.01, steps=int(args.time / 0.01), transient=1000)
    print("Lorenz (10, 28, 8/3), RK4 dt = 0.01, T =", args.time)
    print("  exponents   ", ", ".join(f"{v:.4f}" for v in lorenz.exponents), " (published 0.9056, 0, -14.5723)")
    print(f"  sum          {lorenz.exponents.sum():.4f} (exactly -(sigma + 1 + beta) = -13.6667)")
    print(f"  Kaplan-Yorke {lorenz.kaplan_yorke:.4f} (published 2.0621)")
    lyapunov_spectrum(lorenz.exponents, running=lorenz.running, times=lorenz.times, title="Lorenz attractor",
             path=out / "lyapunov_lorenz.png")

    problem = landscape.load("digits-mlp")  # trained: 300 Adam steps
    obj = problem.objective()
    top = landscape.eigenvalues(landscape.hessian(obj), k=4).eigenvalues
    print(f"\ndigits-mlp, trained: top Hessian eigenvalues {', '.join(f'{v:.4f}' for v in top)}; "
          f"2 / lambda_max = {2 / top[0]:.2f}")
    for lr in (1.0, 8.0):
        spectrum = gd_spectrum(obj, lr, 4, steps=args.steps)
        print(f"  lr {lr:>4g}: exponents {', '.join(f'{v: .4f}' for v in spectrum.exponents)}; "
              f"log|1 - lr lambda_max| at the start {np.log(abs(1 - lr * top[0])): .4f}")
        lyapunov_spectrum(spectrum.exponents, running=spectrum.running, times=spectrum.times,
                 title=f"gradient descent on digits-mlp, lr = {lr:g}", path=out / f"lyapunov_gd_lr{lr:g}.png")
    print(f"wrote {out}/lyapunov_lorenz.png, lyapunov_gd_lr1.png, lyapunov_gd_lr8.png")


if __name__ == "__main__":
    main()
