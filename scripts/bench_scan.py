"""Benchmark: 2D loss scans against loss-landscapes 3.0.6 and a plain per-point loop.

Same model, data, directions (filter-normalized, seed 0) and grid (-1:1 on both axes,
21x21 and 51x51) on digits-mlp and digits-cnn (1437 examples as one batch, float32):

  - landscape.scan, loop and batched strategies;
  - loss-landscapes 3.0.6 ``random_plane`` made to use the same two directions (its draw
    is patched) and ``distance`` chosen so that its step equals the grid's step;
  - a plain loop: ``vector_to_parameters`` then a forward pass, per point.

For each: points per second (the fastest of interleaved repeats: on a shared machine other
work only ever slows a run down), and the largest relative disagreement with a float64
reference (the model in float64, evaluated point by point at the grid's exact
coordinates). loss-landscapes is compared twice: at the coordinates a user asks for,
and at the coordinates its loop actually visits (derived from its source: the grid
starts at -S/2 steps, not centred, and even rows sit one step further along the second
direction), which separates its grid bug from its arithmetic.

    python scripts/bench_scan.py [--device cuda] [--repeats 5] [--out DIR]

prints a table and writes DIR/bench_scan.json (default: out/). Needs
``pip install --no-deps loss-landscapes==3.0.6`` (its only dependency is numpy); without
it that column is left out.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time

import benchlib
import numpy as np
import torch
from torch.nn import functional as F
from torch.nn.utils import vector_to_parameters

import landscape
from landscape.scans import directions as dirs
from landscape.scans.grid import parse_axis

try:
    import loss_landscapes
    import loss_landscapes.main as ll_main
    from loss_landscapes.metrics import Loss
    from loss_landscapes.model_interface.model_parameters import ModelParameters
except ImportError:
    loss_landscapes = None

PROBLEMS = ("digits-mlp", "digits-cnn")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(model, X, y, center, D, A, B) -> np.ndarray:
    """What a research script does: write center + A d1 + B d2 into a copy of the model (in center's
    dtype), run it, read the loss; point by point. In float64 it is the reference."""
    model = copy.deepcopy(model).to(center.dtype)
    X = X.to(center.dtype)
    out = np.empty(A.shape)
    with torch.no_grad():
        for index in np.ndindex(A.shape):
            vector_to_parameters(center + A[index] * D[0] + B[index] * D[1], model.parameters())
            out[index] = F.cross_entropy(model(X), y).item()
    return out


@contextlib.contextmanager
def given_directions(d1, d2):
    """Make loss-landscapes' next random_plane draw ``d1`` and ``d2`` (lists shaped like the parameters)."""
    saved = ll_main.rand_u_like, ll_main.orthogonal_to
    ll_main.rand_u_like = lambda example: ModelParameters([t.clone() for t in d1])
    ll_main.orthogonal_to = lambda vector: ModelParameters([t.clone() for t in d2])
    try:
        yield
    finally:
        ll_main.rand_u_like, ll_main.orthogonal_to = saved


def ll_plane(model, X, y, obj, D, steps) -> np.ndarray:
    """loss-landscapes' random_plane with our directions; each step is 2 / (steps - 1) of a direction."""
    pieces = [list(obj.space.unflatten(d).values()) for d in D]
    theta_norm = obj.theta0.double().norm().item()
    # its step is d * ||theta|| / (distance * steps * ||d||); ours is d * 2 / (steps - 1)
    distance = theta_norm * (steps - 1) / (2 * steps * D[0].double().norm().item())
    with given_directions(*pieces):
        return np.asarray(loss_landscapes.random_plane(model, Loss(F.cross_entropy, X, y), distance=distance,
                                                       steps=steps, normalization=None, deepcopy_model=True))


def ll_coordinates(steps: int, d_norms) -> tuple[np.ndarray, np.ndarray]:
    """Where random_plane's out[i][j] is evaluated, in units of our directions (from its source):
    a = (i - S/2) step_1, b = (j + [i even] - S/2) step_2, with its steps d_k ||d_1|| / ||d_k|| * 2 / (S - 1)."""
    step = [2 / (steps - 1) * d_norms[0] / n for n in d_norms]
    i, j = np.meshgrid(np.arange(steps), np.arange(steps), indexing="ij")
    return (i - steps / 2) * step[0], (j + (i % 2 == 0) - steps / 2) * step[1]


def rel_disagreement(values, truth) -> float:
    return float(np.max(np.abs(values - truth)) / np.max(np.abs(truth)))


def run(name, steps, device, repeats):
    problem = landscape.load(name)
    model = problem.model.to(device).eval()
    X, y = (t.to(device) for t in problem.data)
    obj = problem.objective(device=device)
    D = dirs.random(obj, k=2, seed=0).vectors
    spec = f"-1:1:{steps}"
    axis = parse_axis(spec)
    A, B = np.meshgrid(axis, axis, indexing="ij")
    methods = {
        "landscape loop": lambda: landscape.scan(obj, dirs.Directions(D, {}), [spec, spec], strategy="loop",
                                                 progress=False).values["loss"],
        "landscape batched": lambda: landscape.scan(obj, dirs.Directions(D, {}), [spec, spec], strategy="batched",
                                                    progress=False).values["loss"],
        "plain loop": lambda: plain_loop(model, X, y, obj.theta0, D, A, B),
    }
    if loss_landscapes is not None:
        methods["loss-landscapes 3.0.6"] = lambda: ll_plane(model, X, y, obj, D, steps)
    times = {m: [] for m in methods}
    values = {}
    for _ in range(repeats):  # interleaved, so drifts in the machine's speed hit every method alike
        for m, fn in methods.items():
            sync(device)
            start = time.perf_counter()
            values[m] = fn()
            sync(device)
            times[m].append(time.perf_counter() - start)
    center64, D64 = obj.theta0.double(), D.double()
    truth = plain_loop(model, X, y, center64, D64, A, B)
    rows = {}
    for m in methods:
        seconds = min(times[m])  # the least disturbed run: the machine is shared, and slowdowns only add
        rows[m] = {"points_per_second": steps * steps / seconds, "seconds": seconds, "all_seconds": times[m],
                   "max_rel_disagreement": rel_disagreement(values[m], truth)}
    if loss_landscapes is not None:
        a, b = ll_coordinates(steps, [d.norm().item() for d in D64])
        visited = plain_loop(model, X, y, center64, D64, a, b)
        rows["loss-landscapes 3.0.6"]["max_rel_disagreement_at_visited_points"] = rel_disagreement(
            values["loss-landscapes 3.0.6"], visited)
        rows["loss-landscapes 3.0.6"]["centre_index"] = [int(v) for v in np.unravel_index(
            np.argmin(np.abs(a) + np.abs(b)), a.shape)]
        rows["loss-landscapes 3.0.6"]["model_evaluated"] = bool(((a == 0) & (b == 0)).any())
    base = rows["plain loop"]["points_per_second"]
    for row in rows.values():
        row["x_plain_loop"] = row["points_per_second"] / base
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5,
                        help="interleaved repeats for the 21x21 grid (51x51: a third as many, at least 1)")
    parser.add_argument("--out", default="out")
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument("--grids", nargs="+", type=int, default=[21, 51], metavar="STEPS")
    args = parser.parse_args()
    device = torch.device(args.device)
    report = benchlib.header(device, loss_landscapes=getattr(loss_landscapes, "__version__", None) if loss_landscapes
                             else None, results={})
    for name in args.problems:
        for steps in args.grids:
            rows = run(name, steps, device, args.repeats if steps == 21 else max(1, args.repeats // 3))
            report["results"][f"{name} {steps}x{steps}"] = rows
            print(f"\n{name}, {steps}x{steps} grid on {device}")
            print(f"{'method':<24} {'points/s':>10} {'x plain':>8} {'max rel. error vs float64':>26}")
            for m, row in rows.items():
                extra = ""
                if "max_rel_disagreement_at_visited_points" in row:
                    extra = (f"  (at the points it visits: {row['max_rel_disagreement_at_visited_points']:.1e}; "
                             f"model itself evaluated: {row['model_evaluated']})")
                print(f"{m:<24} {row['points_per_second']:>10.1f} {row['x_plain_loop']:>8.2f} "
                      f"{row['max_rel_disagreement']:>26.1e}{extra}")
    benchlib.write(report, args.out, "bench_scan.json")


if __name__ == "__main__":
    main()
