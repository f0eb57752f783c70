"""The edge of stability (Cohen et al. 2021), on the built-in digits MLP, in about 20 seconds on a CPU.

Gradient descent at learning rate lr is stable on a quadratic only where its curvature is
below 2/lr. Train a tanh MLP with the square loss by full-batch GD from its random start at
two learning rates, tracking the Hessian's top eigenvalue (the sharpness) every 100 steps:
it rises from about 9.5 (progressive sharpening) until it reaches 2/lr, and then hovers
there while the loss keeps falling, which no quadratic model of the loss predicts.

    python examples/edge_of_stability.py [--out DIR] [--steps N]

Writes DIR/edge_of_stability.png (sharpness against 2/lr, and the loss) and prints a table.
"""

import argparse
from pathlib import Path

import landscape
from dynamics.descent import gradient_descent
from dynamics.edge_of_stability import SharpnessTracker
from viz.training import sharpness_history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples-out", help="where the figure goes (default examples-out/)")
    parser.add_argument("--steps", type=int, default=4000, help="GD steps per learning rate (default 4000)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 64-32-10 tanh MLP at its random start; the square loss on one-hot targets over all 1437 digits
    obj = landscape.load("digits-mlp", steps=0, loss="mse").objective()
    runs = []
    for lr in (0.1, 0.15):
        tracker = SharpnessTracker(obj, lr=lr, every=100)
        runs.append(gradient_descent(obj, lr, args.steps, tracker=tracker))

    print(f"{'lr':>6} {'2/lr':>7} {'start':>7} {'max':>7} {'end':>7} {'end/(2/lr)':>11} {'loss':>16}")
    for run in runs:
        lam = run.sharpness.sharpness[:, 0]
        print(f"{run.lr:>6g} {2 / run.lr:>7.3g} {lam[0]:>7.3g} {lam.max():>7.3g} {lam[-1]:>7.3g} "
              f"{lam[-1] * run.lr / 2:>11.2f} {run.loss[0]:>7.3g} -> {run.loss[run.steps_done]:<6.3g}")
    path = out / "edge_of_stability.png"
    sharpness_history([run.sharpness for run in runs], title="digits-mlp, square loss: full-batch GD at the edge of stability",
              path=path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
