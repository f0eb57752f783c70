"""``landscape infoplane``: the information plane of a small MLP trained on the digits."""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from landscape import problems
from landscape.cli.common import ints, output_folder, write_json


def add_parser(subparsers) -> None:
    from dynamics.information import ACTIVATIONS, ESTIMATORS

    sub = subparsers.add_parser(
        "infoplane", help="the information plane of a small MLP trained on the digits",
        description="Train an MLP 64-WIDTHS-10 (default 64-10-7-5-4-3-10, after Shwartz-Ziv and Tishby's "
                    "12-10-7-5-4-3-2) on the digits' training split and estimate, every --every epochs, each "
                    "hidden layer's I(X;T) and I(T;Y) in bits: by binning (Shwartz-Ziv & Tishby: 30 bins over "
                    "(-1, 1) for tanh) or by the kernel (pairwise-KL) estimate of Saxe et al. with Gaussian "
                    "noise. The numbers rest on these settings, which are recorded. Writes infoplane.json and "
                    "infoplane.png.")
    sub.add_argument("--widths", default="10,7,5,4,3", metavar="W1,W2,...",
                     help="hidden layer widths (default 10,7,5,4,3)")
    sub.add_argument("--activation", choices=list(ACTIVATIONS), default="tanh",
                     help="hidden activation (default tanh)")
    sub.add_argument("--epochs", type=int, default=200, help="passes over the examples (default 200)")
    sub.add_argument("--every", type=int, default=10, help="estimate every N epochs, and at the last (default 10)")
    sub.add_argument("--optimizer", choices=["sgd", "adam"], default="adam", help="optimizer (default adam)")
    sub.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    sub.add_argument("--batch-size", type=int, default=64, help="examples per step, shuffled each epoch; 0 for "
                                                              "one full-batch step per epoch (default 64)")
    sub.add_argument("--examples", type=int, help="use the first N training digits (default: all 1437)")
    sub.add_argument("--method", choices=list(ESTIMATORS), default="binning", help="estimator (default binning)")
    sub.add_argument("--bins", type=int, help="binning: equal-width bins per neuron over --range (default 30)")
    sub.add_argument("--range", metavar="LO:HI", help="binning: the bins' range (default -1:1 for tanh, the observed "
                                                      "range of each layer at each epoch for relu)")
    sub.add_argument("--noise-variance", type=float, help="kde: variance of the Gaussian noise added to T (default 0.1)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batches (default 0)")
    sub.add_argument("--out", required=True, metavar="DIR", help="directory for infoplane.json and infoplane.png")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dynamics.information import mlp, track

    widths = ints(args.widths)
    bin_range = _bin_range(args.range)
    train, _ = problems.digits(images=False)
    available = len(train[1])
    for name, value, low in (("--epochs", args.epochs, 0), ("--every", args.every, 1),
                             ("--batch-size", args.batch_size, 0), ("--examples", args.examples, 2)):
        if value is not None and value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if args.examples is not None and args.examples > available:
        raise ValueError(f"--examples must be at most {available} (the digits' training split), got {args.examples}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a positive number, got {args.lr}")
    if args.method == "binning":
        if args.noise_variance is not None:
            raise ValueError("--noise-variance is a setting of --method kde, not of binning")
        bins = 30 if args.bins is None else args.bins
        if bins < 1:
            raise ValueError(f"--bins must be at least 1, got {bins}")
        if bin_range is None and args.activation == "tanh":
            bin_range = (-1.0, 1.0)
        settings = {"bins": bins, "range_": bin_range}
        estimator = f"binning, {bins} bins over " + \
            ("the observed range (each layer, each epoch)" if bin_range is None else f"({bin_range[0]:g}, {bin_range[1]:g})")
    else:
        if args.bins is not None or args.range is not None:
            raise ValueError("--bins and --range are settings of --method binning, not of kde")
        variance = 0.1 if args.noise_variance is None else args.noise_variance
        if not (math.isfinite(variance) and variance > 0):
            raise ValueError(f"--noise-variance must be a positive number, got {variance}")
        settings = {"noise_variance": variance}
        estimator = f"KDE (pairwise-KL upper bound), noise variance {variance:g}"
    X, y = train if args.examples is None else (train[0][:args.examples], train[1][:args.examples])
    out = output_folder(args.out)
    model = mlp(widths, args.activation, seed=args.seed)
    optimizer = (torch.optim.SGD if args.optimizer == "sgd" else torch.optim.Adam)(model.parameters(), lr=args.lr)
    batch_size = args.batch_size or None
    plane = track(model, X, y, optimizer, epochs=args.epochs, every=args.every, method=args.method,
                  batch_size=batch_size, seed=args.seed, **settings)
    architecture = "-".join(str(w) for w in [X.shape[1], *widths, 10])
    print(f"network      {architecture} {args.activation}, {args.optimizer} lr {args.lr:g}, "
          f"{'full batch' if batch_size is None else f'batches of {batch_size}'}, {len(y)} digits, "
          f"{args.epochs} epochs in {plane.seconds:.1f} s")
    print(f"estimator    {estimator}; H(Y) = {plane.H_Y:.3f} bits, I(X;T) <= log2 m = {math.log2(len(y)):.3f} bits")
    print(f"{'layer':<6} {'width':>5} {'I(X;T) start':>12} {'peak':>7} {'(epoch)':>7} {'end':>7} "
          f"{'I(T;Y) start':>12} {'end':>7}")
    last = len(plane.epochs) - 1
    for j, (name, width) in enumerate(zip(plane.layers, widths)):
        column = plane.I_XT[:, j]
        peak = int(np.nanargmax(column)) if np.isfinite(column).any() else 0
        print(f"{name:<6} {width:>5} {plane.I_XT[0, j]:>12.3f} {column[peak]:>7.3f} {plane.epochs[peak]:>7} "
              f"{plane.I_XT[last, j]:>7.3f} {plane.I_TY[0, j]:>12.3f} {plane.I_TY[last, j]:>7.3f}")
    print(f"loss         {plane.loss[0]:.4f} at epoch 0, {plane.loss[last]:.4f} at epoch {plane.epochs[last]}")
    from viz.training import information_plane

    information_plane(plane, title=f"digits, {architecture} {args.activation}: information plane",
                      path=out / "infoplane.png")
    arguments = {key: value for key, value in vars(args).items() if key != "run"}
    model_spec = {"architecture": architecture, "inputs": int(X.shape[1]), "widths": widths, "classes": 10,
                  "activation": args.activation, "layers": plane.layers, "examples": len(y),
                  "optimizer": args.optimizer, "lr": args.lr, "batch_size": batch_size, "seed": args.seed}
    write_json(out / "infoplane.json", {**plane.to_dict(), "model": model_spec, "arguments": arguments})
    print(f"wrote        {out / 'infoplane.png'} and {out / 'infoplane.json'}")
    return 0


def _bin_range(text: str | None) -> tuple[float, float] | None:
    """``"-1:1"`` -> (-1.0, 1.0), the binning range, finite with lo < hi."""
    if text is None:
        return None
    try:
        lo, hi = (float(p) for p in text.split(":"))
    except ValueError:
        raise ValueError(f"--range {text!r} is not LO:HI, e.g. -1:1") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"--range {text}: LO and HI must be finite with LO < HI")
    return lo, hi
