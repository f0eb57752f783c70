"""Benchmark: how cost grows with scale (issue 8), in three parts, each its own command.

Lanczos memory (the default part): the memory of Lanczos' basis options, in one run:
  1. bytes kept against steps: for each ``basis`` option ("device", "cpu", "float32", "none")
     and m = 20, 50, 100, 200 steps, Lanczos (k = 5, eigenvectors included) on a diagonal
     n x n operator whose spectrum has no gap, so that every step runs; the peak of all
     tensors alive at once, measured by ``landscape.core.memory.LiveTensors`` (on CUDA, per device:
     the GPU and the host), beside the number of products;
  2. accuracy and time on a real Hessian: digits-mlp (n = 2410), top 5 and both ends (3 + 3),
     float64 and float32 objectives, each option's wall time (median of ``--repeats``),
     products, and its largest eigenvalue difference from "device", relative to |lambda_max|;
     "none" again with 3 times the steps where the default budget did not converge it.

    python scripts/bench_scale.py [--device cuda] [--n 100000] [--repeats 3] [--out DIR]

  prints markdown tables and writes DIR/bench_scale.json (default: out/).

Distributed scans (``scan``): `landscape scan` end to end as one process with 1 and 2 threads
and as torchrun with 2 processes; times, speed-ups and whether the values are bit for bit the
same. Writes DIR/bench_scale_scan.json; see its section below.

    OMP_NUM_THREADS=1 python scripts/bench_scale.py scan [--repeats 3] [--out DIR]

HVP cost (``hvp``): the time of one exact HVP (``Objective.hvp``, mode "auto") and of one
gradient against the parameter count (tanh MLPs of n = 1e4 ... 1e7 on 256 examples) and
against the number of examples (256 ... 16384, n = 1e5, batches of 1024), with the fitted
log-log slopes. Writes DIR/bench_scale_hvp.json; see its section below.

    python scripts/bench_scale.py hvp [--device cpu|cuda] [--repeats 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import statistics
import time

import benchlib
import numpy as np
import torch

import landscape
from landscape.core import memory
from landscape.linalg.lanczos import lanczos

BASES = ("device", "cpu", "float32", "none")
STEPS = (20, 50, 100, 200)


class Diagonal:
    """diag(d) as an operator: the products cost nothing beside what Lanczos keeps."""

    def __init__(self, d: torch.Tensor):
        self.d = d
        self.shape, self.dtype, self.device = (len(d), len(d)), d.dtype, d.device

    def __matmul__(self, V: torch.Tensor) -> torch.Tensor:
        return V * self.d


def memory_rows(n: int, device: torch.device) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    op = Diagonal(torch.rand(n, generator=generator, dtype=torch.float64).to(device))  # no gap: tol is not met
    rows = []
    for basis in BASES:
        for steps in STEPS:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            with memory.LiveTensors() as live:
                result = lanczos(op, k=5, tol=1e-14, max_steps=steps, basis=basis,
                                 basis_size=None if basis == "none" else steps)
            rows.append({"basis": basis, "steps": steps, "n": n, "peak_bytes": live.peak,
                         "peak_bytes_by_device": dict(live.peaks), "products": result.n_matvecs,
                         "seconds": time.perf_counter() - start, "settings": result.settings})
    return rows


def hessian_rows(device: torch.device, repeats: int) -> list[dict]:
    problem = landscape.load("digits-mlp")
    rows = []
    for dtype in (torch.float64, torch.float32):
        H = landscape.hessian(problem.objective(dtype=dtype, device=device))
        tol = 1e-8 if dtype == torch.float64 else 1e-6
        for k, which in ((5, "largest"), (3, "both")):
            reference, converged = None, True
            # "none" again with 3 times the default budget of steps, where the default did not converge
            for basis, max_steps in [(basis, None) for basis in BASES] + [("none", 3 * max(300, 30 * k))]:
                if max_steps is not None and converged:
                    continue
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    result = lanczos(H, k=k, which=which, tol=tol, basis=basis, max_steps=max_steps)
                    times.append(time.perf_counter() - start)
                converged = result.converged
                if basis == "device":
                    reference = result.eigenvalues
                scale = np.abs(reference).max()
                rows.append({"dtype": str(dtype).removeprefix("torch."), "which": which, "k": k, "tol": tol,
                             "basis": basis, "max_steps": result.settings["max_steps"],
                             "products": result.n_matvecs, "seconds": statistics.median(times),
                             "converged": result.converged,
                             "max_diff_vs_device": float(np.abs(result.eigenvalues - reference).max() / scale),
                             "max_residual": float(result.residuals.max() / scale)})
    return rows


def mb(x: int) -> str:
    return f"{x / 1e6:,.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=100_000, help="size of the diagonal operator (default 100000)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per Hessian run; the median is kept")
    parser.add_argument("--out", default="out", help="directory for bench_scale.json (default: out)")
    args = parser.parse_args()
    device = torch.device(args.device)
    report = benchlib.header(device, n=args.n, repeats=args.repeats)
    report["memory"] = memory_rows(args.n, device)
    report["hessian"] = hessian_rows(device, args.repeats)

    vector = args.n * 8
    print(f"\nLanczos memory: peak MB of tensors alive at once (vectors of n = {args.n:,} float64 in brackets), "
          f"k = 5 with eigenvectors, diagonal operator")
    header = "| basis | " + " | ".join(f"m = {m}" for m in STEPS) + " | products at m = 200 |"
    print(header)
    print("|" + "---|" * (len(STEPS) + 2))
    for basis in BASES:
        rows = [r for r in report["memory"] if r["basis"] == basis]
        cells = []
        for r in rows:
            by_device = r["peak_bytes_by_device"]
            split = (f" (GPU {mb(by_device.get('cuda', 0))}, host {mb(by_device.get('cpu', 0))})"
                     if device.type == "cuda" else "")
            cells.append(f"{mb(r['peak_bytes'])} [{r['peak_bytes'] / vector:.1f}]{split}")
        print(f"| {basis} | " + " | ".join(cells) + f" | {rows[-1]['products']} |")

    print("\ndigits-mlp Hessian (n = 2,410): each option against \"device\" (differences and residuals "
          "relative to |lambda_max|)")
    print("| dtype | ends | tol | basis | max_steps | products | seconds | max eigenvalue diff | max residual "
          "| converged |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in report["hessian"]:
        ends = f"top {r['k']}" if r["which"] == "largest" else f"both {r['k']}+{r['k']}"
        print(f"| {r['dtype']} | {ends} | {r['tol']:.0e} | {r['basis']} | {r['max_steps']} | {r['products']} | "
              f"{r['seconds']:.3f} | "
              f"{r['max_diff_vs_device']:.1e} | {r['max_residual']:.1e} | {r['converged']} |")
    benchlib.write(report, args.out, "bench_scale.json")


# =====================================================================================================
# Distributed scans (issue 8): 1 against 2 processes, the `landscape scan` command end to end
#
#     OMP_NUM_THREADS=1 python scripts/bench_scale.py scan [--repeats 3] [--out DIR]
#
# For each problem and grid, `landscape scan` as one process with 1 thread, one process with 2
# threads (torch's intra-op parallelism), and `torchrun --standalone --nproc_per_node 2 -m landscape
# scan` with 1 thread each (the grid split over the processes); the median over --repeats of the
# scan's own seconds (scan.json: rank 0's, from the start of the split to the merged file) and of
# the command's wall time (interpreter, imports and the problem's training included), points/s
# and the ratio to one process with one thread; whether the scan.h5 values equal that run's bit
# for bit. Writes DIR/bench_scale_scan.json (default: out/).
# =====================================================================================================

import json  # noqa: E402  (this section's own imports, kept with it)
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402

SCAN_CASES = (("digits-cnn", ("-1:1:51", "-1:1:51")), ("digits-mlp", ("-1:1:101", "-1:1:101")))
SCAN_RUNS = ((1, 1), (1, 2), (2, 1))  # (processes, threads per process)


def scan_run(problem: str, grid: tuple[str, ...], processes: int, threads: int, out) -> dict:
    """One `landscape scan` run in a fresh folder: its wall time, scan.json and the stored loss."""
    folder = Path(out) / f"scan-{problem}-{processes}x{threads}"
    shutil.rmtree(folder, ignore_errors=True)
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
              if processes > 1 else [sys.executable])
    command = [*launch, "-m", "landscape", "scan", "--problem", problem,
               *[f"--grid={axis}" for axis in grid], "--out", str(folder)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{run.stderr[-3000:]}")
    summary = json.loads((folder / "scan.json").read_text())
    with h5py.File(folder / "scan.h5", "r") as file:
        loss = file["values"]["loss"][()]
    return {"problem": problem, "grid": list(grid), "processes": processes, "threads": threads,
            "points": summary["points_computed"], "scan_seconds": summary["seconds"], "wall_seconds": wall,
            "loss": loss}


def scan_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="1 against 2 processes for a scan (landscape scan under torchrun)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the medians are kept (default 3)")
    parser.add_argument("--out", default="out", help="directory for the runs and bench_scale_scan.json")
    args = parser.parse_args(argv)
    report = benchlib.header(torch.device("cpu"), repeats=args.repeats, runs=[list(r) for r in SCAN_RUNS])
    rows = []
    for problem, grid in SCAN_CASES:
        reference = None
        for processes, threads in SCAN_RUNS:
            runs = [scan_run(problem, grid, processes, threads, args.out) for _ in range(args.repeats)]
            if reference is None:
                reference = runs[0]["loss"]
            row = {key: value for key, value in runs[0].items() if key != "loss"}
            row["scan_seconds"] = statistics.median(r["scan_seconds"] for r in runs)
            row["wall_seconds"] = statistics.median(r["wall_seconds"] for r in runs)
            row["scan_seconds_all"] = [r["scan_seconds"] for r in runs]
            row["wall_seconds_all"] = [r["wall_seconds"] for r in runs]
            row["identical_to_1x1"] = all(np.array_equal(r["loss"], reference, equal_nan=True) for r in runs)
            rows.append(row)
    report["scan"] = rows

    print("\nScan: 1 against 2 processes (medians; ratio = one process with 1 thread / this)")
    print("| problem | grid | processes x threads | scan s | points/s | scan speed-up | wall s | wall speed-up "
          "| values = 1 x 1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for problem, grid in SCAN_CASES:
        group = [r for r in rows if r["problem"] == problem]
        base = group[0]
        for r in group:
            print(f"| {problem} | {' x '.join(a.rsplit(':', 1)[1] for a in grid)} | {r['processes']} x {r['threads']} "
                  f"| {r['scan_seconds']:.2f} | {r['points'] / r['scan_seconds']:,.0f} "
                  f"| {base['scan_seconds'] / r['scan_seconds']:.2f} | {r['wall_seconds']:.2f} "
                  f"| {base['wall_seconds'] / r['wall_seconds']:.2f} | {'bit for bit' if r['identical_to_1x1'] else 'no'} |")
    benchlib.write(report, args.out, "bench_scale_scan.json")


# =====================================================================================================
# HVP cost against scale (issue 8): parameters and examples
#
#     python scripts/bench_scale.py hvp [--device cpu|cuda] [--repeats 3] [--out DIR]
#
# 1. against the parameter count: tanh MLPs 64 -> h -> h -> 10 (n = h^2 + 76 h + 10) with
#    n = 10,015, 99,690, 1,000,567 and 9,996,810, on 256 synthetic float32 examples in one batch;
# 2. against the number of examples: the n = 99,690 MLP on 256, 1024, 4096 and 16384 examples in
#    batches of 1024, with the mode "auto" chose beside the streamed "rev-rev" (which rebuilds the
#    gradient graph batch by batch for every product).
# Each size: one warm-up call of each item (the first HVP decides the "auto" mode and builds the
# cached graph; its time is reported), then --repeats timings, interleaved, of the gradient and of
# one HVP obj.hvp(v); a timing averages as many calls as fill about 0.2 s (small sizes take
# fractions of a millisecond) and the median is kept. Log-log slopes of time against n or examples
# are least-squares fits, over all sizes and over the larger ones. On the CPU a size whose first
# HVP takes longer than --max-seconds stops the sweep: it and the larger sizes are recorded as
# skipped. Writes DIR/bench_scale_hvp.json (default: out/).
# =====================================================================================================

import gc  # noqa: E402
import math  # noqa: E402

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

HVP_WIDTHS = (69, 280, 963, 3124)  # n = 10,015, 99,690, 1,000,567, 9,996,810
HVP_EXAMPLES = (256, 1024, 4096, 16384)
HVP_FIXED_WIDTH = 280  # n = 99,690 for the sweep over examples
HVP_SIZE_EXAMPLES = 256
HVP_BATCH = 1024
IN_FEATURES, CLASSES = 64, 10


def mlp(width: int, device: torch.device, seed: int = 0) -> nn.Module:
    """tanh MLP 64 -> width -> width -> 10, weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) from ``seed``."""
    model = nn.Sequential(nn.Linear(IN_FEATURES, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                          nn.Linear(width, CLASSES))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                bound = 1 / math.sqrt(layer.in_features)
                for p in (layer.weight, layer.bias):
                    nn.init.uniform_(p, -bound, bound, generator=generator)
    return model.to(device)


def mlp_size(width: int) -> int:
    return IN_FEATURES * width + width + width * width + width + width * CLASSES + CLASSES


def synthetic(examples: int, device: torch.device, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian inputs [examples, 64] and uniform labels in 0..9, from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(examples, IN_FEATURES, generator=generator)
    y = torch.randint(0, CLASSES, (examples,), generator=generator)
    return X.to(device), y.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn, device: torch.device, number: int = 1) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(number):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / number


def timings(items: dict, device: torch.device, repeats: int, target: float = 0.2) -> dict:
    """Median seconds per call of each item; each was called once before (the warm-up).

    A second call sets how many calls one timing averages (enough to fill ``target`` seconds);
    the timings go round-robin so that drift affects every item alike.
    """
    numbers = {name: max(1, min(200, int(target / max(seconds_per_call(fn, device), 1e-9))))
               for name, fn in items.items()}
    times = {name: [] for name in items}
    for _ in range(repeats):
        for name, fn in items.items():
            times[name].append(seconds_per_call(fn, device, numbers[name]))
    return {"seconds": {name: statistics.median(ts) for name, ts in times.items()},
            "seconds_all": times, "calls_per_timing": numbers}


def loglog_slope(xs, ys) -> float | None:
    """Least-squares slope of log y against log x (None with fewer than 2 points)."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0]) if len(xs) >= 2 else None


def parameter_rows(device: torch.device, repeats: int, max_seconds: float) -> list[dict]:
    rows, stop = [], None
    for width in HVP_WIDTHS:
        row = {"width": width, "n": mlp_size(width), "examples": HVP_SIZE_EXAMPLES}
        if stop is not None:
            rows.append({**row, "skipped": stop})
            continue
        obj = landscape.Objective(mlp(width, device), F.cross_entropy, synthetic(HVP_SIZE_EXAMPLES, device))
        assert obj.space.n == row["n"]
        v = torch.randn(obj.space.n, generator=torch.Generator().manual_seed(2)).to(device)
        first = seconds_per_call(lambda: obj.hvp(v), device)  # decides "auto", builds the cached graph
        row.update(mode=obj.resolve_mode(), first_hvp_seconds=first,
                   graph_bytes=obj.graph_bytes(HVP_SIZE_EXAMPLES), budget_bytes=obj.memory_budget())
        if device.type == "cpu" and first > max_seconds:
            stop = f"the first HVP of n = {row['n']:,} took {first:.1f} s > {max_seconds:g} s"
            rows.append({**row, "skipped": stop})
            continue
        row["first_gradient_seconds"] = seconds_per_call(obj.grad, device)
        measured = timings({"gradient": obj.grad, "hvp": lambda: obj.hvp(v)}, device, repeats)
        row.update(gradient_seconds=measured["seconds"]["gradient"], hvp_seconds=measured["seconds"]["hvp"],
                   seconds_all=measured["seconds_all"], calls_per_timing=measured["calls_per_timing"])
        rows.append(row)
        obj = v = None  # free this size before the next one is built
        gc.collect()
    return rows


def example_rows(device: torch.device, repeats: int) -> list[dict]:
    rows = []
    model = mlp(HVP_FIXED_WIDTH, device)
    for examples in HVP_EXAMPLES:
        obj = landscape.Objective(model, F.cross_entropy, synthetic(examples, device), batch_size=HVP_BATCH)
        v = torch.randn(obj.space.n, generator=torch.Generator().manual_seed(2)).to(device)
        first = seconds_per_call(lambda: obj.hvp(v), device)
        auto = obj.hvp(v)
        streamed = obj.hvp(v, mode="rev-rev")  # also its warm-up
        obj.grad()
        measured = timings({"gradient": obj.grad, "hvp": lambda: obj.hvp(v),
                            "hvp_rev_rev": lambda: obj.hvp(v, mode="rev-rev")}, device, repeats)
        seconds = measured["seconds"]
        rows.append({"n": obj.space.n, "examples": examples, "batches": -(-examples // HVP_BATCH),
                     "mode": obj.resolve_mode(), "graph_bytes": obj.graph_bytes(examples),
                     "budget_bytes": obj.memory_budget(), "first_hvp_seconds": first,
                     "gradient_seconds": seconds["gradient"], "hvp_seconds": seconds["hvp"],
                     "hvp_rev_rev_seconds": seconds["hvp_rev_rev"],
                     "rel_diff_auto_vs_rev_rev": ((auto - streamed).norm() / streamed.norm()).item(),
                     "seconds_all": measured["seconds_all"], "calls_per_timing": measured["calls_per_timing"]})
        obj = v = auto = streamed = None
        gc.collect()
    return rows


def slopes(rows: list[dict], x: str, keys: tuple[str, ...], large: int) -> dict:
    """Log-log slopes of each timed key against ``x``: over all measured rows and over those with x >= ``large``."""
    done = [r for r in rows if "skipped" not in r]
    out = {}
    for key in keys:
        big = [r for r in done if r[x] >= large]
        out[key] = {"all": loglog_slope([r[x] for r in done], [r[key] for r in done]),
                    f"{x} >= {large}": loglog_slope([r[x] for r in big], [r[key] for r in big])}
    return out


def local_slope(rows: list[dict], i: int, x: str, key: str) -> str:
    if i == 0 or "skipped" in rows[i] or "skipped" in rows[i - 1]:
        return ""
    a, b = rows[i - 1], rows[i]
    return f"{math.log(b[key] / a[key]) / math.log(b[x] / a[x]):.2f}"


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def hvp_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="HVP time against parameter count and against examples")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timings per item; the median is kept (default 3)")
    parser.add_argument("--max-seconds", type=float, default=30.0,
                        help="on the CPU, stop the parameter sweep at a size whose first HVP takes longer (default 30)")
    parser.add_argument("--out", default="out", help="directory for bench_scale_hvp.json (default: out)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    report = benchlib.header(device, repeats=args.repeats, dtype="float32", max_seconds=args.max_seconds,
                             model="tanh MLP 64 -> h -> h -> 10", batch_size_examples_sweep=HVP_BATCH)
    start = time.perf_counter()
    report["parameters"] = parameter_rows(device, args.repeats, args.max_seconds)
    report["examples"] = example_rows(device, args.repeats)
    report["slopes"] = {
        "parameters": slopes(report["parameters"], "n", ("hvp_seconds", "gradient_seconds"), 10**5),
        "examples": slopes(report["examples"], "examples", ("hvp_seconds", "hvp_rev_rev_seconds", "gradient_seconds"),
                           1024)}
    report["seconds_total"] = time.perf_counter() - start

    rows = report["parameters"]
    print(f"\nHVP against parameters: tanh MLP 64 -> h -> h -> 10, {HVP_SIZE_EXAMPLES} examples in one batch, "
          f"float32, {device}, median of {args.repeats}")
    print("| h | n | mode | first HVP s | gradient s | HVP s | HVP / gradient | HVP ns per parameter "
          "| slope from previous |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows):
        if "skipped" in r:
            print(f"| {r['width']} | {r['n']:,} | skipped: {r['skipped']} | | | | | | |")
            continue
        print(f"| {r['width']} | {r['n']:,} | {r['mode']} | {r['first_hvp_seconds']:.4f} | "
              f"{r['gradient_seconds']:.5f} | {r['hvp_seconds']:.5f} | {r['hvp_seconds'] / r['gradient_seconds']:.2f} | "
              f"{r['hvp_seconds'] / r['n'] * 1e9:.1f} | {local_slope(rows, i, 'n', 'hvp_seconds')} |")
    s = report["slopes"]["parameters"]
    print(f"\nlog-log slope against n: HVP {fmt(s['hvp_seconds']['all'])} over all sizes, "
          f"{fmt(s['hvp_seconds']['n >= 100000'])} for n >= 1e5; gradient {fmt(s['gradient_seconds']['all'])} and "
          f"{fmt(s['gradient_seconds']['n >= 100000'])}")

    rows = report["examples"]
    print(f"\nHVP against examples: n = {rows[0]['n']:,}, batches of {HVP_BATCH}, float32, {device}, "
          f"median of {args.repeats}")
    print("| examples | batches | auto mode | graph MB | gradient s | HVP (auto) s | HVP rev-rev s | auto / gradient "
          "| rev-rev / gradient | auto us per example | slope from previous (auto) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows):
        print(f"| {r['examples']:,} | {r['batches']} | {r['mode']} | {r['graph_bytes'] / 1e6:.1f} | "
              f"{r['gradient_seconds']:.4f} | {r['hvp_seconds']:.4f} | {r['hvp_rev_rev_seconds']:.4f} | "
              f"{r['hvp_seconds'] / r['gradient_seconds']:.2f} | {r['hvp_rev_rev_seconds'] / r['gradient_seconds']:.2f} | "
              f"{r['hvp_seconds'] / r['examples'] * 1e6:.2f} | {local_slope(rows, i, 'examples', 'hvp_seconds')} |")
    s = report["slopes"]["examples"]
    print(f"\nlog-log slope against examples: HVP (auto) {fmt(s['hvp_seconds']['all'])} over all, "
          f"{fmt(s['hvp_seconds']['examples >= 1024'])} from 1024; rev-rev {fmt(s['hvp_rev_rev_seconds']['all'])} and "
          f"{fmt(s['hvp_rev_rev_seconds']['examples >= 1024'])}; gradient {fmt(s['gradient_seconds']['all'])} and "
          f"{fmt(s['gradient_seconds']['examples >= 1024'])}; auto and rev-rev agree to "
          f"{max(r['rel_diff_auto_vs_rev_rev'] for r in rows):.1e}")
    print(f"total {report['seconds_total']:.0f} s")
    benchlib.write(report, args.out, "bench_scale_hvp.json")



if __name__ == "__main__":
    if sys.argv[1:2] == ["scan"]:
        scan_main(sys.argv[2:])
    elif sys.argv[1:2] == ["hvp"]:
        hvp_main(sys.argv[2:])
    else:
        main()
