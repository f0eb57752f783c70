"""``landscape render``: a scan's figures, offscreen rendering and ParaView files (``common.draw``)."""

from __future__ import annotations

import argparse
from pathlib import Path


from landscape.cli.common import draw, scale_arguments
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
    draw(result, Path(args.out) if args.out else path.parent, png=png, vtk=vtk, log=args.log, zmax=args.zmax,
         to_scale=not args.stretch)
    return 0


