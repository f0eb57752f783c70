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


if __name__ == "__main__":
    main()
