"""The information plane of a tanh and a ReLU network on the digits, by binning and by KDE.

Shwartz-Ziv & Tishby (2017) trained a 12-10-7-5-4-3-2 tanh network and, binning each unit into
30 bins over (-1, 1), saw every layer's I(X;T) rise and then fall late in training: a
"compression phase". Saxe et al. (2018) answered that the fall comes from the tanh saturating
(saturated units put many inputs in one bin) and that ReLU networks, which do not saturate, show
no such fall; they also estimated I(X;T) with Gaussian noise added to T (a kernel estimate).

Here the same shape, 64-10-7-5-4-3-10, is trained on the 1437 training digits (Adam, lr 0.01,
batches of 64) with tanh and with ReLU, and each run is measured with both estimators: binning
(30 bins over (-1, 1) for tanh; over the observed range of each layer at each epoch for ReLU,
whose activations have no fixed range) and KDE (noise variance 0.1). Both estimators see the same
training run: the same seed gives the same weights, batches and updates. For each layer the
table gives I(X;T) at the start, at its peak and at the end; "compression" is said when a layer
peaks after epoch 0 and ends at least 0.5 bits below its peak (a layer that only falls from epoch
0 on is named apart). Whatever that says is printed.

    python examples/information_plane.py [--out DIR] [--epochs 200] [--every 20]

Writes DIR/information_plane_{tanh,relu}_{binning,kde}.png and DIR/information_plane.png (all four).
"""

import argparse
import io
import math
from pathlib import Path

import numpy as np
import torch

import landscape
from dynamics.information import mlp, track
from viz.training import information_plane

WIDTHS = (10, 7, 5, 4, 3)
DROP = 0.5  # bits: a fall from the peak smaller than this is not called compression


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples-out", help="where the figures go (default examples-out/)")
    parser.add_argument("--epochs", type=int, default=200, help="passes over the digits (default 200)")
    parser.add_argument("--every", type=int, default=20, help="estimate every N epochs (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and batches (default 0)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    X, y = landscape.load("digits-mlp", steps=0).data
    print(f"{len(y)} digits, 64-{'-'.join(map(str, WIDTHS))}-10, Adam lr 0.01, batches of 64, {args.epochs} epochs; "
          f"I(X;T) <= log2 m = {math.log2(len(y)):.2f} bits, I(T;Y) <= H(Y)")
    figures = []
    for activation in ("tanh", "relu"):
        for method, settings in (("binning", {"bins": 30, "range_": (-1.0, 1.0) if activation == "tanh" else None}),
                                 ("kde", {"noise_variance": 0.1})):
            model = mlp(WIDTHS, activation, seed=args.seed)
            plane = track(model, X, y, torch.optim.Adam(model.parameters(), lr=0.01), epochs=args.epochs,
                          every=args.every, batch_size=64, seed=args.seed, method=method, **settings)
            where = {None: "the observed range", (-1.0, 1.0): "(-1, 1)"}.get(settings.get("range_"))
            estimator = "binning, 30 bins over " + where if method == "binning" else "KDE, noise variance 0.1"
            print(f"\n{activation}, {estimator}: loss {plane.loss[0]:.3f} -> {plane.loss[-1]:.4f} "
                  f"(H(Y) = {plane.H_Y:.2f} bits)")
            print(f"{'layer':<6} {'I(X;T) start':>12} {'peak':>6} {'(epoch)':>7} {'end':>6} {'fall':>6} "
                  f"{'I(T;Y) end':>10}")
            compressed, fell = [], []
            for j, name in enumerate(plane.layers):
                column = plane.I_XT[:, j]
                peak = int(np.nanargmax(column))
                fall = column[peak] - column[-1]
                if fall >= DROP:
                    (compressed if plane.epochs[peak] > 0 else fell).append(name)
                print(f"{name:<6} {column[0]:>12.2f} {column[peak]:>6.2f} {plane.epochs[peak]:>7} "
                      f"{column[-1]:>6.2f} {fall:>6.2f} {plane.I_TY[-1, j]:>10.2f}")
            if plane.ranges is not None:
                print("observed range (top of the bins, start -> end): " + ", ".join(
                    f"{name} {plane.ranges[0, j, 1]:.3g} -> {plane.ranges[-1, j, 1]:.3g}"
                    for j, name in enumerate(plane.layers)))
                widened = np.diff(plane.ranges[-1], axis=1) / np.diff(plane.ranges[0], axis=1)
                print(f"the bins widened {widened.min():.3g}x to {widened.max():.3g}x over training: a fall in this "
                      f"estimate mixes what the network does with coarser bins")
            verdict = (f"compression in {', '.join(compressed)}: I(X;T) fell >= {DROP} bits after a peak past "
                       f"epoch 0" if compressed else
                       f"no compression: no layer's I(X;T) fell {DROP} bits or more after a peak past epoch 0")
            if fell:
                verdict += f"; {', '.join(fell)} fell >= {DROP} bits from epoch 0 on, without rising first"
            print(f"{activation}, {method}: {verdict}")
            title = f"{activation}, {'binning' if method == 'binning' else 'KDE'}"
            information_plane(plane, title=f"digits, 64-{'-'.join(map(str, WIDTHS))}-10 {title}",
                              path=out / f"information_plane_{activation}_{method}.png")
            figures.append(information_plane(plane, loss=False, title=title))
    # the four planes side by side without their loss panels: tanh above relu, binning left of KDE
    from matplotlib.image import imread, imsave

    images = []
    for figure in figures:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=120)
        images.append(imread(io.BytesIO(buffer.getvalue())))

    imsave(out / "information_plane.png", np.vstack([np.hstack(images[:2]), np.hstack(images[2:])]))
    print(f"\nwrote {out}/information_plane_{{tanh,relu}}_{{binning,kde}}.png and {out / 'information_plane.png'}")


if __name__ == "__main__":
    main()
