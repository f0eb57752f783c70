"""Benchmark: Hessian spectra against PyHessian, on digits-mlp and digits-cnn after training.

In one run, per problem:
  1. top-1 and top-10 eigenvalues: PyHessian 0.1 at its defaults (deflated power
     iteration, tol 1e-3) and landscape's Lanczos at tol 1e-6 on the same float32 model,
     and on a float64 objective at tol 1e-6, 1e-4 and 1e-3 (a residual tolerance: the
     eigenvalue error is about its square); HVPs, seconds and the largest relative
     error against numpy.linalg.eigh of the dense float64 Hessian;
  2. trace: relative RMS error over seeds of Hutchinson and Hutch++ at equal HVP
     budgets, and PyHessian's trace at its defaults;
  3. SLQ density with 16 probes: lockstep (one [16, n] product a step) against one
     probe at a time, as a time ratio;
  4. warm start, as when tracking sharpness during training: top-1 and top-10 at theta0,
     then 10 gradient-descent steps at lr = 1 / lambda_max, then Lanczos at the new point
     cold and warm-started from the old eigenvectors (float64, tol 1e-6): HVPs of each
     and how far apart their eigenvalues are.

    python scripts/bench_spectrum.py [--device cuda] [--out DIR]

prints tables and writes DIR/bench_spectrum.json (default: out/).
"""

from __future__ import annotations

import argparse
import sys
import time

import benchlib
import numpy as np
import torch
from pyhessian import hessian as PyHessian

import landscape
from landscape.linalg.density import slq
from landscape.linalg.trace import hutchinson, hutchpp

PROBLEMS = ("digits-mlp", "digits-cnn")


def dense_spectrum(problem, device) -> tuple[np.ndarray, float]:
    """Eigenvalues (descending) and trace of the float64 Hessian, column by column."""
    obj = problem.objective(dtype=torch.float64, device=device)
    H = landscape.hessian(obj)
    eye = torch.eye(obj.space.n, dtype=torch.float64, device=device)
    dense = torch.cat([H @ eye[i:i + 64] for i in range(0, obj.space.n, 64)]).cpu().numpy()
    dense = (dense + dense.T) / 2
    return np.linalg.eigvalsh(dense)[::-1], float(np.trace(dense))


class CountedPyHessian:
    """PyHessian with its Hessian-vector products counted."""

    def __init__(self, problem, device):
        self.calls = 0
        module = sys.modules["pyhessian.hessian"]  # the package rebinds the name pyhessian.hessian to the class
        original = module.hessian_vector_product

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        module.hessian_vector_product = counted
        X, y = problem.data
        self.comp = PyHessian(problem.model.to(device), torch.nn.functional.cross_entropy,
                              data=(X.to(device), y.to(device)), cuda=device.type == "cuda")

    def run(self, method, **kwargs):
        self.calls = 0
        torch.manual_seed(0)  # PyHessian draws its vectors from the global RNG
        start = time.perf_counter()
        result = getattr(self.comp, method)(**kwargs)
        if method == "eigenvalues":
            result = result[0]
        return result, self.calls, time.perf_counter() - start


def rel_error(values, truth) -> float:
    values = np.sort(np.asarray(values, dtype=float))[::-1]
    return float(np.max(np.abs(values - truth[:len(values)]) / np.abs(truth[:len(values)])))


def eigen_rows(problem, device, truth) -> list[dict]:
    rows = []
    peer = CountedPyHessian(problem, device)
    ours32 = landscape.hessian(problem.objective(device=device))
    ours64 = landscape.hessian(problem.objective(device=device, dtype=torch.float64))
    for k in (1, 10):
        values, hvps, seconds = peer.run("eigenvalues", top_n=k)
        rows.append({"k": k, "who": "PyHessian (power iteration, tol 1e-3)", "hvps": hvps, "seconds": seconds,
                     "rel_error": rel_error(values, truth), "negative_returned": int(np.sum(np.array(values) < 0))})
        for name, op, tol in (("landscape Lanczos, float32, tol 1e-6", ours32, 1e-6),
                              ("landscape Lanczos, float64, tol 1e-6", ours64, 1e-6),
                              ("landscape Lanczos, float64, tol 1e-4", ours64, 1e-4),
                              ("landscape Lanczos, float64, tol 1e-3", ours64, 1e-3)):
            result = landscape.eigenvalues(op, k=k, tol=tol)
            rows.append({"k": k, "who": name, "hvps": result.n_matvecs, "seconds": result.seconds,
                         "rel_error": rel_error(result.eigenvalues, truth), "converged": result.converged})
    problem.model.zero_grad(set_to_none=True)
    return rows


def trace_rows(problem, device, trace, seeds: int) -> list[dict]:
    H = landscape.hessian(problem.objective(device=device))
    rows = []
    for budget in (30, 99, 300):
        for name, estimator in (("Hutchinson", hutchinson), ("Hutch++", hutchpp)):
            errors = [(estimator(H, n_matvecs=budget, seed=s).estimate - trace) / trace for s in range(seeds)]
            rows.append({"budget": budget, "who": name, "rms_rel_error": float(np.sqrt(np.mean(np.square(errors))))})
    samples, hvps, seconds = CountedPyHessian(problem, device).run("trace")
    problem.model.zero_grad(set_to_none=True)
    rows.append({"budget": hvps, "who": "PyHessian trace (Hutchinson, its defaults), seed 0",
                 "rms_rel_error": abs(float(np.mean(samples)) - trace) / abs(trace), "seconds": seconds})
    return rows


def density_row(problem, device) -> dict:
    H = landscape.hessian(problem.objective(device=device))
    slq(H, probes=2, steps=5)  # warm up
    start = time.perf_counter()
    slq(H, probes=16, steps=40, seed=0)
    lockstep = time.perf_counter() - start
    start = time.perf_counter()
    for seed in range(16):
        slq(H, probes=1, steps=40, seed=seed)
    one_by_one = time.perf_counter() - start
    return {"probes": 16, "steps": 40, "lockstep_seconds": lockstep, "one_at_a_time_seconds": one_by_one,
            "speedup": one_by_one / lockstep}


def warm_rows(problem, device) -> list[dict]:
    obj = problem.objective(device=device, dtype=torch.float64)
    lr = 1.0 / landscape.eigenvalues(landscape.hessian(obj), k=1).eigenvalues[0]
    theta = obj.theta0.clone()
    for _ in range(10):
        theta -= lr * obj.grad(theta)
    rows = []
    for k in (1, 10):
        old = landscape.eigenvalues(landscape.hessian(obj), k=k, tol=1e-6)
        cold = landscape.eigenvalues(landscape.hessian(obj, theta), k=k, tol=1e-6)
        warm = landscape.eigenvalues(landscape.hessian(obj, theta), k=k, tol=1e-6, v0=old.eigenvectors)
        rows.append({"k": k, "cold_hvps": cold.n_matvecs, "warm_hvps": warm.n_matvecs,
                     "max_rel_diff": float(np.max(np.abs(warm.eigenvalues - cold.eigenvalues) / cold.eigenvalues)),
                     "lambda_max_change": float(cold.eigenvalues[0] / old.eigenvalues[0] - 1),
                     "both_converged": cold.converged and warm.converged})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per trace estimate (default 20)")
    parser.add_argument("--out", default="out", help="directory for bench_spectrum.json (default: out)")
    args = parser.parse_args()
    device = torch.device(args.device)
    report = benchlib.header(device, seeds=args.seeds, problems={})
    for name in PROBLEMS:
        problem = landscape.load(name)
        start = time.perf_counter()
        truth, trace = dense_spectrum(problem, device)
        entry = {"n": len(truth), "dense_seconds": time.perf_counter() - start, "top10": truth[:10].tolist(),
                 "trace": trace, "fraction_negative": float(np.mean(truth < 0))}
        entry["eigenvalues"] = eigen_rows(problem, device, truth)
        entry["trace_errors"] = trace_rows(problem, device, trace, args.seeds)
        entry["density"] = density_row(problem, device)
        entry["warm_start"] = warm_rows(problem, device)
        report["problems"][name] = entry
        print(f"\n{name}: n = {entry['n']:,}, lambda_max {truth[0]:.6g}, trace {trace:.6g} "
              f"(dense float64 reference, {entry['dense_seconds']:.0f} s)")
        print(f"  {'k':>3} {'method':<40} {'HVPs':>6} {'seconds':>8} {'max rel error':>14}")
        for row in entry["eigenvalues"]:
            print(f"  {row['k']:>3} {row['who']:<40} {row['hvps']:>6} {row['seconds']:>8.3f} {row['rel_error']:>14.1e}")
        print(f"  trace, relative RMS error over {args.seeds} seeds:")
        for row in entry["trace_errors"]:
            print(f"    {row['who']:<52} budget {row['budget']:>4}: {row['rms_rel_error']:.2e}")
        d = entry["density"]
        print(f"  SLQ 16 probes x 40 steps: lockstep {d['lockstep_seconds']:.2f} s, one at a time "
              f"{d['one_at_a_time_seconds']:.2f} s, speedup {d['speedup']:.2f}x")
        for row in entry["warm_start"]:
            print(f"  warm start, top-{row['k']} after 10 GD steps (lambda_max moved {row['lambda_max_change']:+.1%}): "
                  f"{row['warm_hvps']} HVPs against {row['cold_hvps']} cold, eigenvalues agree to "
                  f"{row['max_rel_diff']:.1e}, converged {row['both_converged']}")
    benchlib.write(report, args.out, "bench_spectrum.json")


if __name__ == "__main__":
    main()
