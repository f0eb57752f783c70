"""Every figure the toolkit draws, in its normal and its degenerate cases, into one folder for a human look.

    python scripts/gallery.py --out gallery/        # about 30 seconds on a 2-core CPU

The commands run as a user runs them (``landscape ...`` in this process), each into its own folder;
the degenerate scans (unfinished, NaN, flat, one point, 3D) are drawn by ``landscape render`` from scans
made here. At the end every PNG is listed with its size in pixels; open them all.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch

import landscape
from landscape.cli import main

NAN_PROBLEM = '''
import torch
from torch import nn


class Bowl(nn.Module):
    """A 2-parameter bowl whose loss is NaN where theta_0 > 1.3: a scan's NaN region."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([0.5, -0.2]))

    def forward(self, x):
        t = self.theta
        loss = (t ** 2).sum() + 0.1 * torch.sin(5 * t[0]) + 0.2
        return (torch.where(t[0] > 1.3, torch.nan, loss) + 0 * x.sum(1)).unsqueeze(1)


def problem(flat: int = 0):
    model = Bowl()
    if flat:
        model.forward = lambda x: (0 * model.theta.sum() + 1 + 0 * x.sum(1)).unsqueeze(1)
    return model, (lambda out, y: out.mean()), (torch.zeros(4, 1), torch.zeros(4))
'''


def run(*argv: str) -> None:
    """``landscape argv...``, its output kept quiet unless it fails."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        code = main(list(argv))
    if code not in (0, None):
        print(text.getvalue(), file=sys.stderr)
        raise SystemExit(f"landscape {' '.join(argv)} exited {code}")


def scans(out: Path) -> None:
    """The scan figures: normal 2D, 1D, 3D, unfinished, NaN region, flat, one point, PCA with a trajectory."""
    run("scan", "--grid", "-1:1:41", "--grid", "-1:1:41", "--out", str(out / "scan-2d"), "--plot")
    run("scan", "--grid", "-1:1:41", "--out", str(out / "scan-1d"), "--plot")
    run("scan", "--grid", "-1:1:9", "--grid", "-1:1:9", "--grid", "-1:1:9", "--out", str(out / "scan-3d"), "--plot")
    # unfinished: the first 40% of the points of a 2D scan
    partial = out / "scan-partial"
    run("scan", "--grid", "-1:1:41", "--grid", "-1:1:41", "--out", str(partial))
    import h5py

    with h5py.File(partial / "scan.h5", "r+") as f:
        done = f["done"][()]
        done.reshape(-1)[int(0.42 * done.size):] = False
        f["done"][()] = done
        for name in f["values"]:
            values = f[f"values/{name}"][()]
            values[~done] = np.nan
            f[f"values/{name}"][()] = values
    run("render", str(partial), "--out", str(out / "scan-partial-render"))
    problem_file = out / "bowl.py"
    problem_file.write_text(NAN_PROBLEM)
    run("scan", "--problem", f"{problem_file}:problem", "--grid", "-1:1:41", "--grid", "-1:1:41",
        "--out", str(out / "scan-nan"), "--plot")
    run("scan", "--problem", f"{problem_file}:problem", "--problem-arg", "flat=1", "--grid", "-1:1:21",
        "--grid", "-1:1:21", "--out", str(out / "scan-flat"), "--plot")
    run("scan", "--grid", "0:0:1", "--grid", "0:0:1", "--out", str(out / "scan-one-point"), "--plot")


def training_run(out: Path) -> Path:
    """Checkpoints of a digits-mlp run (and seed0.pt, seed1.pt for connect)."""
    folder = out / "run"
    folder.mkdir(parents=True, exist_ok=True)
    landscape.load("digits-mlp", steps=200,
                   callback=lambda step, model: step % 25 == 0 and torch.save(model.state_dict(),
                                                                                folder / f"step{step}.pt"))
    for seed in (0, 1):
        torch.save(landscape.load("digits-mlp", seed=seed).model.state_dict(), out / f"seed{seed}.pt")
    return folder


def main_gallery(out: Path) -> None:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    scans(out)
    run_folder = training_run(out)
    run("scan", "--directions", "pca", "--trajectory", str(run_folder), "--grid", "-40:40:41", "--grid", "-10:10:21",
        "--out", str(out / "scan-pca"), "--plot")
    run("scan", "--trajectory", str(run_folder), "--grid", "-1:1:31", "--grid", "-1:1:31",
        "--out", str(out / "scan-random-with-run"), "--plot")
    run("spectrum", "--k", "3", "--density", "--plot", "--out", str(out / "spectrum"))
    run("eos", "--lr", "0.1", "--lr", "0.15", "--steps", "600", "--problem-arg", "examples=256",
        "--out", str(out / "eos"))
    run("eos", "--lr", "40", "--steps", "200", "--every", "20", "--problem-arg", "examples=64",
        "--out", str(out / "eos-diverged"))
    run("flow", "--lr", "0.05", "--steps", "60", "--out", str(out / "flow"))
    run("lyapunov", "--system", "lorenz", "--steps", "20000", "--transient", "500", "--out", str(out / "lorenz"))
    run("lyapunov", "--lr", "8", "--k", "4", "--steps", "100", "--out", str(out / "lyapunov-gd"))
    run("connect", "--a", str(out / "seed0.pt"), "--b", str(out / "seed1.pt"), "--align", "--curve", "bezier",
        "--epochs", "5", "--plane", "21", "--out", str(out / "connect"))
    run("hopfield", "--n", "300", "--alpha", "0.02", "0.05", "0.1", "0.138", "0.2", "--out", str(out / "hopfield"))
    run("infoplane", "--epochs", "40", "--every", "5", "--out", str(out / "infoplane-tanh"))
    run("infoplane", "--activation", "relu", "--epochs", "40", "--every", "5", "--out", str(out / "infoplane-relu"))
    run("ntk", "--steps", "60", "--out", str(out / "ntk"))
    run("ntk", "--widths", "16,64,256", "--steps", "40", "--examples", "32", "--problem-arg", "parametrization=ntk",
        "--out", str(out / "ntk-widths"))
    from PIL import Image

    pngs = sorted(out.rglob("*.png"))
    for png in pngs:
        with Image.open(png) as image:
            print(f"{png.relative_to(out)}  {image.size[0]} x {image.size[1]}")
    print(f"{len(pngs)} figures in {out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gallery", help="folder for the figures (default gallery/)")
    main_gallery(Path(parser.parse_args().out))
