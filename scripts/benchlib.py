"""What the benchmarks in scripts/ share: the machine's description and writing the report."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch


def header(device: torch.device, **extra) -> dict:
    """Date, torch version and the device a benchmark ran on, to start its JSON report."""
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    return {"date": time.strftime("%Y-%m-%d"), "device": name, "torch": torch.__version__, **extra}


def write(report: dict, out: str | Path, filename: str) -> None:
    """Write ``report`` as JSON to ``out/filename`` (creating ``out``) and say where."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / filename).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out / filename}")


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a CUDA timing without it measures the launch, not the work)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    """``fn`` as a run for ``interleaved``: ``() -> (seconds, fn's value)``, the device synced around it."""
    def run():
        sync(device)
        start = time.perf_counter()
        value = fn()
        sync(device)
        return time.perf_counter() - start, value

    return run


def interleaved(runs: dict, repeats: int) -> dict:
    """``{label: (median seconds, last value)}`` of runs ``() -> (seconds, value)``: each warmed once (cuDNN's
    choice of kernels, vmap's tracing, compilations), then timed in ``repeats`` rounds that call every run in
    turn, so that a drift of the machine's speed (another process, the clock) reaches all alike instead of
    whichever ran during it."""
    for run in runs.values():
        run()
    seconds, values = {label: [] for label in runs}, {}
    for _ in range(repeats):
        for label, run in runs.items():
            took, values[label] = run()
            seconds[label].append(took)
    return {label: (statistics.median(seconds[label]), values[label]) for label in runs}


def median_times(fns: dict, device: torch.device, repeats: int) -> dict:
    """``{label: median seconds}`` of ``fns`` timed in interleaved rounds (``interleaved``)."""
    found = interleaved({label: timed(fn, device) for label, fn in fns.items()}, repeats)
    return {label: seconds for label, (seconds, _) in found.items()}
