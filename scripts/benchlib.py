"""What the benchmarks in scripts/ share: the machine's description and writing the report."""

from __future__ import annotations

import json
import platform
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
