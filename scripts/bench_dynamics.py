"""Benchmark: Lyapunov spectra with batched tangents, and warm-started sharpness tracking.

1. The Lyapunov spectrum of the gradient-descent map theta -> theta - lr grad L on the trained
   digits-mlp, k = 16 tangents: propagated as one batched HVP ``[16, n]`` per step against one
   tangent at a time (the same exponents either way; the time of each, fastest of interleaved
   repeats).
2. Sharpness tracking along full-batch GD on digits-mlp with the square loss from its start
   (Cohen et al.'s setting, lr 0.1, where the sharpness rises from 9.5 to 2/lr = 20): HVPs per
   estimate with Lanczos warm-started from the previous eigenvector against cold starts, at
   several tracking intervals and tolerances, and the largest relative difference between the
   two.

    python scripts/bench_dynamics.py [--device cuda] [--repeats 3] [--out DIR]

prints the tables and writes DIR/bench_dynamics.json (default: out/).
"""

from __future__ import annotations

import argparse
import time

import benchlib
import numpy as np
import torch

import landscape
from dynamics.descent import gradient_descent
from dynamics.edge_of_stability import SharpnessTracker
from dynamics.lyapunov import gd_spectrum


def lyapunov_part(device: torch.device, repeats: int, k: int, steps: int) -> dict:
    obj = landscape.load("digits-mlp").objective(device=device)
    lr = 0.1
    times = {True: [], False: []}
    results = {}
    for _ in range(repeats):
        for batched in (True, False):  # interleaved: the machine's load hits both alike
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            results[batched] = gd_spectrum(obj, lr=lr, k=k, steps=steps, batched=batched, seed=0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[batched].append(time.perf_counter() - start)
    a, b = results[True].exponents, results[False].exponents
    row = {"k": k, "steps": steps, "lr": lr, "batched_s": min(times[True]), "one_at_a_time_s": min(times[False]),
           "speedup": min(times[False]) / min(times[True]), "max_abs_difference": float(np.abs(a - b).max()),
           "exponents": a.tolist(), "times": {"batched": times[True], "one_at_a_time": times[False]}}
    print(f"\nLyapunov spectrum of GD (lr {lr}) on trained digits-mlp, k = {k}, {steps} steps, fastest of {repeats}:")
    print(f"  batched [k, n] HVPs  {row['batched_s']:.3f} s")
    print(f"  one tangent at a time {row['one_at_a_time_s']:.3f} s   ({row['speedup']:.2f}x slower)")
    print(f"  same exponents: largest difference {row['max_abs_difference']:.1e}; "
          f"lambda_1..3 = {', '.join(f'{v:.5f}' for v in a[:3])}")
    return row


def tracker_part(device: torch.device, steps: int) -> list[dict]:
    obj = landscape.load("digits-mlp", steps=0, loss="mse").objective(device=device)
    lr = 0.1
    rows = []
    print(f"\nSharpness tracking along full-batch GD (digits-mlp, square loss, lr {lr}, {steps} steps): "
          f"HVPs per estimate")
    print(f"  {'every':>5} {'tol':>6} {'cold':>6} {'warm':>6} {'cold/warm':>9} {'max rel diff':>12} {'sharpness':>17}")
    for tol in (1e-3, 1e-4, 1e-5):
        for every in (10, 100):
            found = {}
            for warm in (False, True):
                tracker = SharpnessTracker(obj, lr=lr, every=every, tol=tol, warm=warm)
                found[warm] = gradient_descent(obj, lr, steps, tracker=tracker, progress=False).sharpness
            cold, warm = found[False], found[True]
            # the first estimate has nothing to start from: compare the rest
            row = {"every": every, "tol": tol, "cold_hvps": float(cold.n_matvecs[1:].mean()),
                   "warm_hvps": float(warm.n_matvecs[1:].mean()),
                   "max_rel_difference": float(np.abs(warm.sharpness[:, 0] / cold.sharpness[:, 0] - 1).max()),
                   "sharpness_first_last": [float(cold.sharpness[0, 0]), float(cold.sharpness[-1, 0])]}
            row["ratio"] = row["cold_hvps"] / row["warm_hvps"]
            rows.append(row)
            print(f"  {every:>5} {tol:>6g} {row['cold_hvps']:>6.1f} {row['warm_hvps']:>6.1f} {row['ratio']:>9.2f} "
                  f"{row['max_rel_difference']:>12.1e} {row['sharpness_first_last'][0]:>7.3g} -> "
                  f"{row['sharpness_first_last'][1]:<7.3g}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=16, help="Lyapunov tangents (default 16)")
    parser.add_argument("--lyapunov-steps", type=int, default=200)
    parser.add_argument("--gd-steps", type=int, default=2000)
    parser.add_argument("--out", default="out")
    args = parser.parse_args()
    device = torch.device(args.device)
    report = benchlib.header(device)
    report["lyapunov"] = lyapunov_part(device, args.repeats, args.k, args.lyapunov_steps)
    report["tracker"] = tracker_part(device, args.gd_steps)
    benchlib.write(report, args.out, "bench_dynamics.json")


if __name__ == "__main__":
    main()
