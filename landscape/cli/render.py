"""``landscape render``: a scan's figures, offscreen rendering and ParaView files; ``draw`` also serves scan,
connect and demo."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from landscape.cli.common import check_scale, scale_arguments
from landscape.scans.scan import Scan
from landscape.scans.scan import load as load_scan


def add_parser(subparsers) -> None:
    sub = subparsers.add_parser(
        "render", help="figures, a 3D rendering and ParaView files of a scan",
        description="Draw a scan written by `landscape scan` (finished or not: points not computed are gaps): PNG"
                    " figures (curve, contour with the trajectory, surface, and a VTK rendering of a 2D scan, "
                    "made offscreen) and VTK files for ParaView (scan.vti for any scan, scan.vts height field for"
                    " 2D, trajectory.vtp, and view.py, which `pvpython view.py` opens). Without --png or --vtk, "
                    "both.")
    sub.add_argument("run_dir", metavar="RUN_DIR", help="the scan's folder (or its scan.h5)")
    sub.add_argument("--png", action="store_true", help="write the PNG figures")
    sub.add_argument("--vtk", action="store_true", help="write the VTK files and view.py")
    scale_arguments(sub)
    sub.add_argument("--out", metavar="DIR", help="where to write (default: RUN_DIR)")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    folder = Path(args.run_dir)
    path = folder / "scan.h5" if folder.is_dir() else folder
    if not path.is_file():
        raise FileNotFoundError(f"{args.run_dir} holds no scan.h5 (a folder written by landscape scan)")
    result = load_scan(path)
    shape = " x ".join(str(n) for n in result.shape)
    done = int(result.done.sum())
    print(f"scan         {path}: {shape}, {done} of {result.done.size} points computed"
          + ("" if done == result.done.size else " (the rest are drawn as gaps)"), flush=True)
    png, vtk = (args.png, args.vtk) if args.png or args.vtk else (True, True)
    draw(result, Path(args.out) if args.out else path.parent, png=png, vtk=vtk, log=args.log, zmax=args.zmax)
    return 0


def draw(result: Scan, out: Path, *, png: bool, vtk: bool, log: bool, zmax: float | None,
         title: str | None = None, announce: bool = True) -> list[Path]:
    """Write a scan's figures (curve, contour, surface, and a VTK rendering of a 2D one) and its VTK
    files to ``out``; print each file (``announce``). A rendering VTK cannot make here is skipped with a note."""
    check_scale(log, zmax)
    loss = result.values["loss"]
    if not np.isfinite(loss).any():
        raise ValueError("nothing to draw: " + ("no computed point has a finite loss" if result.done.any()
                                                 else "no point of this scan is computed yet"))
    if zmax is not None and zmax <= np.nanmin(np.where(np.isfinite(loss), loss, np.nan)):
        raise ValueError(f"--zmax {zmax:g} is at or below the lowest loss, {np.nanmin(loss[np.isfinite(loss)]):.4g}: "
                         f"everything would be one flat sheet")
    if log and not (loss[np.isfinite(loss)] > 0).any():
        raise ValueError("--log needs a positive loss somewhere; this scan has none")
    written = []
    if png:
        from viz import plots, render

        written += plots.scan_figures(result, out, log=log, zmax=zmax)
        if len(result.axes) == 2:
            try:
                written.append(render.render(result, out / "render.png", log=log, zmax=zmax, title=title))
            except RuntimeError as error:
                print(f"render       skipped: {error}", flush=True)
    if vtk:
        from viz import scenes

        written += scenes.export(result, out, log=log, zmax=zmax)
    for f in written if announce else []:
        print(f"wrote        {f}", flush=True)
    return written
