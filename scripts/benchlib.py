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


def median_times(fns: dict, device: torch.device, repeats: int) -> dict:
    """``{label: the median seconds of fn's repeats}``: each ``fn`` warmed once, then timed in ``repeats`` rounds
    that call every one in turn, so that a drift of the machine's speed (another process, the clock) reaches all
    alike instead of whichever ran during it."""
    for fn in fns.values():
        fn()
    times = {label: [] for label in fns}
    for _ in range(repeats):
        for label, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(t) for label, t in times.items()}
