"""Benchmark: paths between two minima, against loss-landscapes' ``linear_interpolation``.

The peer is loss-landscapes (``loss_landscapes.linear_interpolation(model_start, model_end,
metric, steps)``), the one pip-installable library that evaluates the loss on the line between
two models (its Bezier curve and polygonal chain are stubs marked "todo"). Two networks of one
architecture trained from seeds 0 and 1, the loss over all their training data:

1. The line, ``steps`` points: seconds (fastest of interleaved repeats) of
   ``curves.interpolate`` and of the peer on the same points (the peer evaluates
   t = 1/steps, ..., 1, so ours gets those t, plus 0, which it always adds), and the largest
   relative difference between the two on the points they share. What the peer does besides,
   measured, not asserted: whether it evaluates t = 0, whether ``model_start`` still holds its
   own weights afterwards (the default ``deepcopy_model=False``), and, for a BatchNorm network,
   how far its loss at t = 1 is from model b's own loss (it keeps model a's running statistics
   all along the line; ours interpolates them, or recomputes them with ``recompute_bn``).
2. Weight matching (no installable peer: Ainsworth et al.'s code is a JAX research repository):
   seconds, sweeps, the share of units moved, and the line's barrier before and after.
3. Curves: the maximum loss along a trained Bezier curve and polygonal chain (one bend) after
   ``epochs`` epochs of batches of 128, against the line's, with the training seconds.

    python scripts/bench_connect.py [--repeats 5] [--steps 25] [--epochs 5 20 50] [--out DIR]

prints tables and writes DIR/bench_connect.json (default: out/).
"""

from __future__ import annotations

import argparse
import copy
import time

import benchlib
import numpy as np
import torch
from torch.nn import functional as F

import landscape
from landscape.paths import curves
from landscape.paths.align import weight_matching

PEER = "loss-landscapes 3.0.6 linear_interpolation"


def peer_line(model_a, model_b, data, steps: int) -> np.ndarray:
    from loss_landscapes import linear_interpolation
    from loss_landscapes.metrics import Loss

    X, y = data
    return linear_interpolation(model_a, model_b, Loss(F.cross_entropy, X, y), steps=steps, deepcopy_model=True)


def fastest(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def line_case(name: str, a, b, steps: int, repeats: int) -> dict:
    obj = a.objective()
    t = np.arange(1, steps + 1) / steps
    # interleaved: ours, peer, ours, peer ...
    ours_s, peer_s = [], []
    for _ in range(repeats):
        s, ours = fastest(lambda: curves.interpolate(obj, a.model, b.model, t=t, progress=False), 1)
        ours_s.append(s)
        s, peer = fastest(lambda: peer_line(a.model, b.model, a.data, steps), 1)
        peer_s.append(s)
    shared = ours.values["loss"][1:]  # ours has t = 0 first
    diff = float(np.max(np.abs(shared - peer) / np.abs(shared)))
    # the peer's default call, on copies: does model_start survive it?
    start, end = copy.deepcopy(a.model), copy.deepcopy(b.model)
    before = torch.cat([p.detach().reshape(-1) for p in start.parameters()]).clone()
    from loss_landscapes import linear_interpolation
    from loss_landscapes.metrics import Loss

    linear_interpolation(start, end, Loss(F.cross_entropy, *a.data), steps=steps)
    after = torch.cat([p.detach().reshape(-1) for p in start.parameters()])
    own_b = b.objective().loss().item()
    row = {"problem": name, "steps": steps, "ours_seconds": min(ours_s), "peer_seconds": min(peer_s),
           "peer_over_ours": min(peer_s) / min(ours_s), "max_rel_difference": diff,
           "peer_evaluates_t0": False, "peer_moves_model_start": float((after - before).norm() / before.norm()),
           "loss_b_own": own_b, "ours_at_1": float(ours.values["loss"][-1]), "peer_at_1": float(peer[-1]),
           "peer_error_at_1": abs(float(peer[-1]) - own_b) / own_b,
           "ours_error_at_1": abs(float(ours.values["loss"][-1]) - own_b) / own_b,
           "statistics": ours.statistics}
    if ours.statistics != "none":
        redone = curves.interpolate(obj, a.model, b.model, t=t, recompute_bn=True, progress=False)
        row.update(recomputed_seconds=redone.seconds, barrier_interpolated=ours.barrier_linear,
                   barrier_recomputed=redone.barrier_linear)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 20, 50])
    parser.add_argument("--out", default="out")
    args = parser.parse_args()
    report = benchlib.header(torch.device("cpu"), peer=PEER, steps=args.steps, repeats=args.repeats)
    pairs = {name: (landscape.load(name, seed=0), landscape.load(name, seed=1)) for name in ("digits-mlp", "digits-cnn")}

    print(f"1. the line, {args.steps} points, all 1437 training examples per point (fastest of {args.repeats})")
    print(f"{'problem':<11} {'ours s':>8} {'peer s':>8} {'peer/ours':>9} {'max rel diff':>12} {'peer moves a':>12} "
          f"{'L(b) own':>9} {'ours t=1':>9} {'peer t=1':>9}")
    report["line"] = []
    for name, (a, b) in pairs.items():
        row = line_case(name, a, b, args.steps, args.repeats)
        report["line"].append(row)
        print(f"{name:<11} {row['ours_seconds']:>8.4f} {row['peer_seconds']:>8.4f} {row['peer_over_ours']:>9.2f} "
              f"{row['max_rel_difference']:>12.1e} {row['peer_moves_model_start']:>12.2f} {row['loss_b_own']:>9.4g} "
              f"{row['ours_at_1']:>9.4g} {row['peer_at_1']:>9.4g}")
        if "barrier_recomputed" in row:
            print(f"{'':<11} BatchNorm: barrier {row['barrier_interpolated']:.4g} with interpolated statistics, "
                  f"{row['barrier_recomputed']:.4g} recomputed ({row['recomputed_seconds']:.3f} s)")

    print("\n2. weight matching (seed 1's units permuted to match seed 0's)")
    print(f"{'problem':<11} {'seconds':>8} {'sweeps':>6} {'moved':>6} {'barrier':>8} {'aligned':>8}")
    report["align"] = []
    for name, (a, b) in pairs.items():
        obj = a.objective()
        probe = a.data[0][:8]
        seconds, alignment = fastest(lambda: weight_matching(a.model, b.model, probe), args.repeats)
        aligned = alignment.apply(b.model, probe)
        before = curves.interpolate(obj, a.model, b.model, progress=False).barrier_linear
        after = curves.interpolate(obj, a.model, aligned, progress=False).barrier_linear
        row = {"problem": name, "seconds": seconds, "sweeps": alignment.iterations, "moved": alignment.moved(),
               "barrier": before, "barrier_aligned": after}
        report["align"].append(row)
        print(f"{name:<11} {seconds:>8.4f} {row['sweeps']:>6} {row['moved']:>6.0%} {before:>8.4f} {after:>8.4f}")

    print("\n3. trained curves (one bend, batches of 128, Adam lr 0.01): max loss on the path, 61 points")
    print(f"{'problem':<11} {'epochs':>6} {'line':>8} {'bezier':>8} {'s':>6} {'polychain':>9} {'s':>6}")
    report["curves"] = []
    for name, (a, b) in pairs.items():
        obj = a.objective()
        line = curves.interpolate(obj, a.model, b.model, num=61, progress=False).max_loss
        for epochs in args.epochs:
            row = {"problem": name, "epochs": epochs, "line_max_loss": line}
            for kind in ("bezier", "polychain"):
                trained = curves.train_curve(obj, curves.curve(obj, a.model, b.model, kind),
                                                   epochs=epochs, batch_size=128, progress=False)
                row[kind] = curves.evaluate_curve(obj, trained, progress=False).max_loss
                row[f"{kind}_seconds"] = trained.training["seconds"]
            report["curves"].append(row)
            print(f"{name:<11} {epochs:>6} {line:>8.4f} {row['bezier']:>8.4f} {row['bezier_seconds']:>6.1f} "
                  f"{row['polychain']:>9.4f} {row['polychain_seconds']:>6.1f}")
    benchlib.write(report, args.out, "bench_connect.json")


if __name__ == "__main__":
    main()
