"""The kernel regime: when a network trains like its linearization, and how it stops as width shrinks.

A network linearized at its initialisation, f(x) + J(x)(theta - theta_0), trains under the square
loss in closed form, f_t = y + exp(-Theta t / m)(f_0 - y), with Theta = J J^T its neural tangent
kernel (NTK). Wide networks follow that solution; narrow ones leave it as their kernel moves.
This script:

1. forms the NTK of a width-512 tanh MLP on 64 digits and checks the identity that ties it to the
   Hessian core: the top Gauss-Newton eigenvalue (Lanczos on GGN products) is lambda_max(Theta)/m;
2. trains tanh MLPs of widths 16 to 1024 (NTK parametrization) by gradient descent at half
   their stability limit, beside their linearizations, and fits how the gap closes with width;
3. compares the output covariance of 2,000 random ReLU networks with the NNGP closed form
   (the arc-cosine kernel), in units of its Monte Carlo standard error.

    python examples/ntk_regime.py [--out DIR] [--seeds 2]

Writes DIR/ntk_regime.png (loss and gap over time, the NTK spectrum) and DIR/ntk_widths.png.
"""

import argparse
from pathlib import Path

import torch

import landscape
from dynamics import linearized
from landscape import problems
from landscape.kernels import nngp, ntk
from viz.training import kernel_regime, width_scaling

EXAMPLES = 64


def network(width: int, seed: int) -> landscape.Objective:
    """The tanh MLP 64-width-10, NTK parametrization, at init, square loss on the first 64 digits."""
    problem = problems.digits_mlp(hidden=width, steps=0, loss="mse", examples=EXAMPLES, seed=seed,
                                  parametrization="ntk")
    return problem.objective(dtype=torch.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples-out", help="where the figures go (default examples-out/)")
    parser.add_argument("--seeds", type=int, default=2, help="networks per width (default 2)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. the NTK and the Gauss-Newton matrix
    obj = network(512, 0)
    X = obj.batches().__next__()[0]
    theta = ntk.kernel(obj, X)  # [m, m, C, C], entry [i, j, c, d]
    m, _, C, _ = theta.shape
    spectrum = torch.linalg.eigvalsh(theta.permute(0, 2, 1, 3).reshape(m * C, m * C))
    top_ggn = landscape.eigenvalues(landscape.ggn(obj), k=1, tol=1e-10).eigenvalues[0]
    print(f"NTK          {m} digits x {C} outputs, width 512: trace {float(spectrum.sum()):.1f}, "
          f"lambda_max {float(spectrum[-1]):.3f}")
    print(f"identity     top GGN eigenvalue {top_ggn:.10f} = lambda_max(NTK)/m {float(spectrum[-1]) / m:.10f}")

    # 2. real against linearized training across widths
    widths = [16, 64, 256, 1024]
    sweep = linearized.sweep(network, widths, seeds=range(args.seeds), steps=200, every=5)
    print(sweep.table())
    print(f"rate         max gap ~ width^-{sweep.rate:.2f}, kernel change ~ width^-{sweep.kernel_rate:.2f} "
          f"(Lee et al. 2019 bound: at least 1/2; Dyer & Gur-Ari 2019: 1 for wide networks)")

    # 3. the Gaussian-process limit at initialisation
    inputs = X[:6]
    exact = nngp.kernel(inputs, depth=2, activation="relu", sigma_w2=2.0, sigma_b2=0.1)
    drawn = nngp.empirical(inputs, width=256, depth=2, activation="relu", sigma_w2=2.0, sigma_b2=0.1, draws=2000)
    z = ((drawn.covariance - exact) / drawn.stderr).abs()
    print(f"NNGP         2 ReLU layers, width {drawn.width}, {drawn.draws} draws: largest deviation from the arc-cosine "
          f"kernel {float(z.max()):.2f} standard errors (mean {float(z.mean()):.2f})")

    runs = {f"width {w}": sweep.runs[i][0] for i, w in enumerate(widths)}
    kernel_regime(runs, eigenvalues=spectrum.numpy(), path=out / "ntk_regime.png",
                  title=f"tanh MLPs on {EXAMPLES} digits: real (solid) and linearized (dashed) training")
    width_scaling(sweep, path=out / "ntk_widths.png")
    print(f"wrote {out / 'ntk_regime.png'} and {out / 'ntk_widths.png'}")


if __name__ == "__main__":
    main()
