"""Benchmark: the cost of one exact HVP relative to one gradient, per mode, side by side with PyHessian.

For digits-mlp and digits-cnn (full training set, one batch), in one run:
  1. median time of one gradient (landscape, and plain torch forward+backward), one HVP
     in each mode, and PyHessian's two HVPs (a cached single-batch graph, and its
     dataloader path that rebuilds the graph per product), timed interleaved so
     drift affects all alike; ratios are to landscape's gradient;
  2. batched HVP throughput for k = 1, 4, 16, 32, 64 vectors, per mode, looping over the
     vectors and vmapping them, as vectors/s and as a multiple of the k = 1 throughput;
  3. peak extra memory of a first product (k = 1 and 64) on a fresh objective, per
     mode: on CUDA the allocator's peak; on Linux CPUs the resident-set high-water
     mark, reset just before.

    python scripts/bench_hvp.py [--device cuda] [--repeats 30] [--out DIR]

prints tables and writes DIR/bench_hvp.json (default: out/).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import torch
from torch.nn import functional as F

import landscape
from landscape.core.hvp import MODES

PROBLEMS = ("digits-mlp", "digits-cnn")
KS = (1, 4, 16, 32, 64)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def single_costs(problem, device, repeats: int) -> dict:
    """Median seconds of each item, timed round-robin."""
    from pyhessian import hessian as PyHessian

    model = problem.model.to(device)
    X, y = (t.to(device) for t in problem.data)
    objectives = {mode: problem.objective(device=device, hvp_mode=mode) for mode in MODES}
    obj = objectives["cached"]
    n = obj.space.n
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(n, generator=gen).to(device)
    shapes = [p.shape for p in model.parameters()]
    v_list = [t.reshape(s) for t, s in zip(v.split([p.numel() for p in model.parameters()]), shapes)]

    def plain_grad():
        model.zero_grad()
        F.cross_entropy(model(X), y).backward()

    cuda = device.type == "cuda"
    peer_cached = PyHessian(model, F.cross_entropy, data=(X, y), cuda=cuda)
    peer_stream = PyHessian(model, F.cross_entropy, dataloader=[(X, y)], cuda=cuda)
    from pyhessian.utils import hessian_vector_product

    items = {
        "gradient (landscape)": lambda: obj.grad(),
        "gradient (plain torch)": plain_grad,
        **{f"HVP {mode}": (lambda o=objectives[mode]: o.hvp(v)) for mode in MODES},
        "PyHessian HVP, cached one-batch graph": lambda: hessian_vector_product(peer_cached.gradsH, peer_cached.params,
                                                                                v_list),
        "PyHessian HVP, dataloader": lambda: peer_stream.dataloader_hv_product(v_list),
    }
    build = timed(lambda: obj.hvp(v), device)  # the first cached product builds the graph
    obj.clear_cache()
    for fn in items.values():  # warm up
        fn()
        fn()
    times = {name: [] for name in items}
    for _ in range(repeats):
        for name, fn in items.items():
            times[name].append(timed(fn, device))
    model.zero_grad(set_to_none=True)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    grad = medians["gradient (landscape)"]
    # correctness of what was timed: every HVP agrees with every other
    ref = objectives["rev-rev"].hvp(v)
    peer = torch.cat([t.reshape(-1) for t in hessian_vector_product(peer_cached.gradsH, peer_cached.params, v_list)])
    agreement = max(((objectives[m].hvp(v) - ref).norm() / ref.norm()).item() for m in MODES)
    return {"n": n, "examples": len(y), "seconds": medians, "ratio_to_gradient": {k: t / grad for k, t in medians.items()},
            "cached_graph_build_seconds": build, "max_rel_diff_between_modes": agreement,
            "rel_diff_pyhessian": ((peer - ref).norm() / ref.norm()).item()}


VARIANTS = (("cached", False), ("cached", True), ("rev-rev", False), ("rev-rev", True), ("fwd-rev", False), ("fwd-rev", True))


def label(mode: str, vectorize: bool) -> str:
    return f"{mode} {'vmap' if vectorize else 'loop'}"


def throughput(problem, device, repeats: int) -> dict:
    """Vectors per second of one product of k vectors, for each mode looped and vmapped (timed interleaved)."""
    objectives = {mode: problem.objective(device=device, hvp_mode=mode) for mode in MODES}
    gen = torch.Generator().manual_seed(1)
    rows = {label(mode, vec): {} for mode, vec in VARIANTS}
    for k in KS:
        V = torch.randn(k, objectives["cached"].space.n, generator=gen).to(device)
        products = {label(mode, vec): (lambda o=objectives[mode], m=mode, v=vec: o.engine.products(V, o.theta0, m, vectorize=v))
                    for mode, vec in VARIANTS}
        times = {name: [] for name in products}
        for fn in products.values():
            fn()
        for _ in range(max(3, repeats // k)):
            for name, fn in products.items():
                times[name].append(timed(fn, device))
        for name, ts in times.items():
            rows[name][k] = k / statistics.median(ts)
    return {name: {"vectors_per_second": row, "speedup_over_k1": {k: row[k] / row[1] for k in KS}}
            for name, row in rows.items()}


def _status(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def fixed_mmap_threshold() -> None:
    """Make glibc return every freed block of 64 KiB or more to the OS, so the resident set
    follows what is in use (by default the threshold rises after a free, up to 32 MiB)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
    except OSError:
        pass


def peak_extra_bytes(fn, device: torch.device) -> float | None:
    """Bytes above the current use at the peak of ``fn()``: the CUDA allocator's peak, or on
    Linux the resident-set high-water mark after resetting it (``/proc/self/clear_refs``)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    base = _status("VmRSS")
    fn()
    return float(_status("VmHWM") - base)


def memory_table(problem, device: torch.device) -> dict:
    """Peak extra memory of a first product of k vectors on a fresh objective (the cached graph included)."""
    table = {}
    for mode in MODES:
        for k in (1, 64):
            obj = problem.objective(device=device, hvp_mode=mode)
            obj.graph_bytes()  # the one-batch probe is not part of the product
            V = torch.randn(k, obj.space.n, generator=torch.Generator().manual_seed(2)).to(device)
            gc.collect()
            table[f"{mode} k={k}"] = peak_extra_bytes(lambda: obj.hvp(V), device)
    return table


def memory_in_worker(problem) -> dict:
    """``memory_table`` on the CPU, in a fresh process whose allocator returns freed memory to the OS
    (that setting slows everything down, so timings are taken here, memory there)."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = str(Path(tmp) / "model.pt")
        torch.save(problem.model.state_dict(), checkpoint)
        done = subprocess.run([sys.executable, __file__, "--memory-worker", problem.name, checkpoint],
                              capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default="out", help="directory for bench_hvp.json (default: out)")
    parser.add_argument("--memory-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        fixed_mmap_threshold()
        name, checkpoint = args.memory_worker
        problem = landscape.load(name, steps=0)
        landscape.load_checkpoint(problem.model, checkpoint)
        print(json.dumps(memory_table(problem, torch.device("cpu"))))
        return
    device = torch.device(args.device)
    report = benchlib.header(device, repeats=args.repeats, problems={})
    for name in PROBLEMS:
        problem = landscape.load(name)
        entry = single_costs(problem, device, args.repeats)
        entry["throughput"] = throughput(problem, device, args.repeats)
        entry["peak_memory_bytes"] = memory_table(problem, device) if device.type == "cuda" else memory_in_worker(problem)
        report["problems"][name] = entry

        print(f"\n{name}: n = {entry['n']:,} parameters, {entry['examples']} examples in one batch, "
              f"{device}, median of {args.repeats}")
        print(f"  {'item':<40} {'ms':>8} {'x gradient':>11}")
        for item, seconds in entry["seconds"].items():
            print(f"  {item:<40} {seconds * 1e3:8.3f} {entry['ratio_to_gradient'][item]:11.2f}")
        print(f"  first cached product (builds the graph): {entry['cached_graph_build_seconds'] * 1e3:.3f} ms; "
              f"modes agree to {entry['max_rel_diff_between_modes']:.1e}, PyHessian to "
              f"{entry['rel_diff_pyhessian']:.1e}")
        print("  batched throughput, vectors/s (x k=1):")
        rows = entry["throughput"]
        print("  " + f"{'k':>4}" + "".join(f"{name:>17}" for name in rows))
        for k in KS:
            print(f"  {k:>4}" + "".join(f"{rows[v]['vectors_per_second'][k]:>9.0f} ({rows[v]['speedup_over_k1'][k]:4.1f}x)"
                                        for v in rows))
        print("  peak extra memory of a first product, MB: " + ", ".join(
            f"{key} {'n/a' if value is None else f'{value / 2**20:.1f}'}" for key, value in entry["peak_memory_bytes"].items()))
    benchlib.write(report, args.out, "bench_hvp.json")


if __name__ == "__main__":
    main()
