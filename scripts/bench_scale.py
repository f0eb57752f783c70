"""Benchmark: how cost grows with scale (issue 8). For now, the memory of Lanczos' basis options.

In one run:
  1. bytes kept against steps: for each ``basis`` option ("device", "cpu", "float32", "none")
     and m = 20, 50, 100, 200 steps, Lanczos (k = 5, eigenvectors included) on a diagonal
     n x n operator whose spectrum has no gap, so that every step runs; the peak of all
     tensors alive at once, measured by ``landscape.memory.LiveTensors`` (on CUDA, per device:
     the GPU and the host), beside the number of products;
  2. accuracy and time on a real Hessian: digits-mlp (n = 2410), top 5 and both ends (3 + 3),
     float64 and float32 objectives, each option's wall time (median of ``--repeats``),
     products, and its largest eigenvalue difference from "device", relative to |lambda_max|;
     "none" again with 3 times the steps where the default budget did not converge it.

    python scripts/bench_scale.py [--device cuda] [--n 100000] [--repeats 3] [--out DIR]

prints markdown tables and writes DIR/bench_scale.json (default: out/).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import benchlib
import landscape
from landscape import memory
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


if __name__ == "__main__":
    if sys.argv[1:2] == ["scan"]:
        scan_main(sys.argv[2:])
    else:
        main()
