"""Benchmark: VTK export of a 2D loss surface against loss-landscape's h52vtp.py.

The peer is tomgoldstein/loss-landscape's ``h52vtp.py`` (``h5_to_vtp``), the usual way to get a
loss surface into ParaView: ASCII VTK polydata (.vtp), one quad per grid cell. It cannot be
pip-installed and reads an HDF5 file, so ``peer_write_vtp`` below re-implements only its
file-writing part, from the arrays its h5 file holds, byte for byte the same layout.

Same synthetic loss surface (a bowl plus ripples, float64, on -1:1 x -1:1) as a
``landscape.scans.scan.Scan`` with the one metric ``loss``, square grids 51x51, 201x201 and 501x501:

  - ours: ``viz.vtkio.write_vts`` (structured-grid height field, binary appended, zlib) and
    ``viz.vtkio.write_vti`` (image data, same encoding);
  - the peer: ``peer_write_vtp`` (ASCII polydata).

For each: write seconds and read-back seconds with VTK's own XML readers
(vtkXMLStructuredGridReader / vtkXMLImageDataReader / vtkXMLPolyDataReader: ``Update`` and the
loss array as numpy), the fastest of interleaved repeats (on a shared machine other work only
slows a run down), the file size, and the largest absolute error of the loss read back (ours:
``loss``, the peer: ``zvalue``) and of the x, y coordinates read back, against the numpy values.
Ratios are the peer's over ours. Then, on 51x51 (tested, not asserted), what each does with a
non-square grid (51x31), NaN points, a 3D scan and ``log``.

    python scripts/bench_vtk.py [--repeats 5] [--grids 51 201 501] [--out DIR]

prints a table and writes DIR/bench_vtk.json (default: out/).
"""

from __future__ import annotations

import argparse
import math
import re
import tempfile
import time
from pathlib import Path

import benchlib
import numpy as np
import torch
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonCore import vtkOutputWindow, vtkStringOutputWindow
from vtkmodules.vtkIOXML import vtkXMLImageDataReader, vtkXMLPolyDataReader, vtkXMLStructuredGridReader

from landscape.scans.directions import Directions
from landscape.scans.grid import parse_axis
from landscape.scans.scan import Scan
from viz import vtkio

PEER = "tomgoldstein/loss-landscape h52vtp.py @ 030eff9"
METHODS = ("ours .vts", "ours .vti", "peer .vtp")


# --- the peer ---------------------------------------------------------------------------------------------------

def peer_surface(scan: Scan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What loss-landscape's surface file holds for this scan: ``xcoordinates``, ``ycoordinates`` and the loss
    dataset. Its plot_surface.py allocates the dataset (nx, ny) but fills it through ``.ravel()`` in the order of
    ``np.meshgrid(x, y)``, x fastest; so its flat order is VTK's (for a square grid: the transpose of ours)."""
    loss = scan.values["loss"]  # (a 3D scan: its x, y and the whole (nx, ny, nz) array, to see what the peer does)
    return scan.axes[0].copy(), scan.axes[1].copy(), loss.ravel(order="F").reshape(loss.shape)


def _ascii_rows(out, items, per_row: int) -> None:
    """The peer's ASCII array body: ``per_row`` items a line, each line indented 10 spaces, items separated by one
    space, the last line ended even when short; nothing at all for no items."""
    count = 0
    for count, item in enumerate(items, 1):
        if count % per_row == 1 or per_row == 1:
            out.write("          ")
        out.write(item)
        out.write("\n" if count % per_row == 0 else " ")
    if count % per_row:
        out.write("\n")


def peer_write_vtp(path, xcoordinates, ycoordinates, surface, *, log: bool = False, zmax: float = -1,
                   show_points: bool = False, show_polys: bool = True) -> Path:
    """The file-writing part of tomgoldstein/loss-landscape's h52vtp.py (``h5_to_vtp``, commit 030eff9),
    re-implemented to write the same bytes from the arrays its h5 file holds.

    Left out: reading the h5 file, ``--interp`` (scipy's ``interp2d``, removed in scipy 1.14), the file name it
    builds (``<h5>_<surf>[_zmax=..][_log].vtp``; here ``path``) and its progress prints. Kept as it is:
    ``zmax`` (clip when > 0), then ``log`` (natural log of z + 0.1); the grid side taken as
    ``int(sqrt(number of points))``; one ``Float32`` point array ``zvalue``, one cell array ``averaged zvalue``
    (mean of each quad's 4 corners, only when polygons without vertices), points ``(x, y, z)`` as ``Float32``,
    empty ``Lines`` and ``Strips``, vertices only when ``show_points`` (False in h52vtp.py), quads (i, i+1,
    i+m+1, i+m) when ``show_polys`` (True); every number written with ``'{}'.format`` (Python's shortest
    round-trip repr of the float64), 6 a line (points and quads 2 a line), with its RangeMin/RangeMax attributes.
    """
    x_grid, y_grid = np.meshgrid(xcoordinates, ycoordinates)
    x_array, y_array = x_grid.ravel(), y_grid.ravel()
    z_array = np.array(surface).ravel()  # h5py's vals[:] is a fresh copy, which zmax then clips in place
    if zmax > 0:
        z_array[z_array > zmax] = zmax
    if log:
        z_array = np.log(z_array + 0.1)

    number_points = len(z_array)
    side = int(math.sqrt(number_points))  # the peer assumes a square grid
    poly_side = side - 1
    number_polys = poly_side * poly_side
    # Python's min/max over numpy scalars, as the peer does (so NaN handling is whatever their order gives)
    min_xyz = [min(x_array), min(y_array), min(z_array)]
    max_xyz = [max(x_array), max(y_array), max(z_array)]
    corners = [c * side + r for c in range(poly_side) for r in range(poly_side)]
    averaged = [(z_array[k] + z_array[k + 1] + z_array[k + side] + z_array[k + side + 1]) / 4.0 for k in corners]

    def array_open(out, kind, name, low, high, components=None):
        ncomp = "" if components is None else f' NumberOfComponents="{components}"'
        out.write(f'        <DataArray type="{kind}" Name="{name}"{ncomp} format="ascii" '
                  f'RangeMin="{low}" RangeMax="{high}">\n')

    path = Path(path)
    with open(path, "w") as out:
        out.write('<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">\n')
        out.write("  <PolyData>\n")
        verts = number_points if show_points else 0
        polys = number_polys if show_polys else ""
        out.write(f'    <Piece NumberOfPoints="{number_points}" NumberOfVerts="{verts}" NumberOfLines="0" '
                  f'NumberOfStrips="0" NumberOfPolys="{polys}">\n')
        out.write("      <PointData>\n")
        array_open(out, "Float32", "zvalue", min_xyz[2], max_xyz[2], 1)
        _ascii_rows(out, ("{}".format(z) for z in z_array), 6)
        out.write("        </DataArray>\n      </PointData>\n")
        out.write("      <CellData>\n")
        if show_polys and not show_points:
            array_open(out, "Float32", "averaged zvalue", min(averaged), max(averaged), 1)
            _ascii_rows(out, ("{}".format(a) for a in averaged), 6)
            out.write("        </DataArray>\n")
        out.write("      </CellData>\n")
        out.write("      <Points>\n")
        array_open(out, "Float32", "Points", min(min_xyz), max(max_xyz), 3)
        # indexed by point, not zipped: x_array and y_array are shorter than z_array when the surface is not 2D
        _ascii_rows(out, ("{} {} {}".format(x_array[i], y_array[i], z_array[i]) for i in range(number_points)), 2)
        out.write("        </DataArray>\n      </Points>\n")
        out.write("      <Verts>\n")
        array_open(out, "Int64", "connectivity", 0, number_points - 1)
        _ascii_rows(out, ("{}".format(i) for i in range(number_points)) if show_points else (), 6)
        out.write("        </DataArray>\n")
        array_open(out, "Int64", "offsets", 1, number_points)
        _ascii_rows(out, ("{}".format(i + 1) for i in range(number_points)) if show_points else (), 6)
        out.write("        </DataArray>\n      </Verts>\n")
        for section in ("Lines", "Strips"):  # declared, always empty
            out.write(f"      <{section}>\n")
            array_open(out, "Int64", "connectivity", 0, number_polys - 1)
            out.write("        </DataArray>\n")
            array_open(out, "Int64", "offsets", 1, number_polys)
            out.write(f"        </DataArray>\n      </{section}>\n")
        out.write("      <Polys>\n")
        array_open(out, "Int64", "connectivity", 0, number_polys - 1)
        _ascii_rows(out, ("{} {} {} {}".format(k, k + 1, k + side + 1, k + side) for k in corners)
                    if show_polys else (), 2)
        out.write("        </DataArray>\n")
        array_open(out, "Int64", "offsets", 1, number_polys)
        _ascii_rows(out, ("{}".format(4 * (p + 1)) for p in range(number_polys)) if show_polys else (), 6)
        out.write("        </DataArray>\n      </Polys>\n")
        out.write("    </Piece>\n  </PolyData>\n</VTKFile>\n")
    return path


# --- the surface and reading back ------------------------------------------------------------------------------

def make_scan(axes: list[np.ndarray], nan=()) -> Scan:
    """A float64 loss surface: a tilted bowl plus ripples (positive everywhere), NaN at the ``nan`` indices."""
    grids = np.meshgrid(*axes, indexing="ij")
    x, y = grids[0], grids[1]
    loss = 0.3 + 1.7 * x**2 + 0.9 * y**2 + 0.4 * x * y + 0.15 * np.sin(9 * x) * np.cos(7 * y) + 0.05 * x
    if len(axes) == 3:
        loss = loss + 0.6 * grids[2] ** 2
    loss = np.asarray(loss, dtype=np.float64)
    for index in nan:
        loss[index] = np.nan
    k = len(axes)
    return Scan(axes=axes, values={"loss": loss}, done=np.ones(loss.shape, dtype=bool),
                directions=Directions(torch.eye(k, dtype=torch.float64), {"kind": "given"}),
                center=torch.zeros(k, dtype=torch.float64), strategy="loop", chunk=64)


READERS = {".vts": vtkXMLStructuredGridReader, ".vti": vtkXMLImageDataReader, ".vtp": vtkXMLPolyDataReader}
LOSS_ARRAY = {".vts": "loss", ".vti": "loss", ".vtp": "zvalue"}


def read_back(path: Path):
    """VTK's XML reader for the file's kind: (data set, loss array as float64 or None)."""
    reader = READERS[path.suffix]()
    reader.SetFileName(str(path))
    reader.Update()
    data = reader.GetOutput()
    array = data.GetPointData().GetArray(LOSS_ARRAY[path.suffix])
    return data, None if array is None else vtk_to_numpy(array).astype(np.float64)


def xy_read_back(data) -> np.ndarray:
    """The points' x, y as VTK has them ([n, 2]); image data has implicit points: origin + index * spacing."""
    if hasattr(data, "GetPoints") and data.GetPoints() is not None:
        return vtk_to_numpy(data.GetPoints().GetData())[:, :2].astype(np.float64)
    nx, ny, _ = data.GetDimensions()
    (ox, oy, _), (sx, sy, _) = data.GetOrigin(), data.GetSpacing()
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    return np.stack([(ox + i * sx).ravel(order="F"), (oy + j * sy).ravel(order="F")], axis=1)


def dimensions(data) -> list[int] | None:
    """Points along x, y, z of structured data (from its extent); None for polydata."""
    if not hasattr(data, "GetExtent"):
        return None
    e = data.GetExtent()
    return [e[1] - e[0] + 1, e[3] - e[2] + 1, e[5] - e[4] + 1]


def max_abs(a, b) -> float | None:
    """Largest |a - b| over the points where b is finite; NaN where a is NaN there; None if shapes differ."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return None
    finite = np.isfinite(b)
    return float(np.max(np.abs(a[finite] - b[finite]), initial=0.0))


def writers(scan: Scan, log: bool = False) -> dict:
    x, y, surface = peer_surface(scan)
    return {"ours .vts": lambda path: vtkio.write_vts(scan, path, log=log),
            "ours .vti": lambda path: vtkio.write_vti(scan, path, log=log),
            "peer .vtp": lambda path: peer_write_vtp(path, x, y, surface, log=log)}


def suffix(method: str) -> str:
    return method.split()[-1]


class VTKMessages:
    """VTK's warnings and errors, caught as text instead of printed (a reader that cannot parse says so here)."""

    def __init__(self):
        self.window = vtkStringOutputWindow()
        vtkOutputWindow.SetInstance(self.window)
        self.seen = 0

    def take(self) -> str:
        """What VTK said since the last call, on one line."""
        text = self.window.GetOutput()
        new, self.seen = text[self.seen:], len(text)
        return " ".join(new.split())


def ascii_zvalue(path: Path) -> np.ndarray:
    """The peer's zvalue numbers as written in the text, parsed as float64 (what the file holds, before VTK's
    Float32)."""
    text = path.read_text()
    body = re.search(r'Name="zvalue"[^>]*>(.*?)</DataArray>', text, re.S).group(1)
    return np.array(body.split(), dtype=np.float64)


# --- the runs --------------------------------------------------------------------------------------------------

def timed(steps: int, repeats: int, folder: Path, messages: VTKMessages) -> dict:
    axis = parse_axis(f"-1:1:{steps}")
    scan = make_scan([axis, axis])
    loss = scan.values["loss"].ravel(order="F")
    X, Y = np.meshgrid(axis, axis, indexing="ij")
    xy = np.stack([X.ravel(order="F"), Y.ravel(order="F")], axis=1)
    write = writers(scan)
    times = {m: {"write": [], "read": []} for m in METHODS}
    said = {m: "" for m in METHODS}
    last = {}
    for _ in range(repeats):  # interleaved, so drifts in the machine's speed hit every method alike
        for m in METHODS:
            path = folder / f"surface_{steps}{suffix(m)}"
            start = time.perf_counter()
            write[m](path)
            times[m]["write"].append(time.perf_counter() - start)
            start = time.perf_counter()
            data, values = read_back(path)
            times[m]["read"].append(time.perf_counter() - start)
            said[m] += messages.take()
            last[m] = (path, data, values)
    rows = {}
    for m in METHODS:
        path, data, values = last[m]
        rows[m] = {"write_seconds": min(times[m]["write"]), "read_seconds": min(times[m]["read"]),
                   "all_write_seconds": times[m]["write"], "all_read_seconds": times[m]["read"],
                   "bytes": path.stat().st_size, "points_read": int(data.GetNumberOfPoints()),
                   "max_abs_error_loss": max_abs(values, loss), "max_abs_error_xy": max_abs(xy_read_back(data), xy),
                   "vtk_messages": said[m]}
    peer = rows["peer .vtp"]
    peer["max_abs_error_loss_in_text"] = max_abs(ascii_zvalue(last["peer .vtp"][0]), loss)
    peer["cells_read"] = int(last["peer .vtp"][1].GetNumberOfCells())
    for row in rows.values():
        for key in ("write_seconds", "read_seconds", "bytes"):
            row[f"peer_over_this_{key}"] = peer[key] / row[key]
    return rows


def quad_check(poly, nx: int, ny: int) -> dict:
    """The polydata's quads against the grid's (nx - 1) (ny - 1) cells (points x fastest)."""
    cells = poly.GetPolys()
    quads = vtk_to_numpy(cells.GetConnectivityArray()).reshape(-1, 4) if cells.GetNumberOfCells() else np.zeros((0, 4))
    a = quads[:, 0]
    proper = ((quads[:, 1] == a + 1) & (quads[:, 2] == a + nx + 1) & (quads[:, 3] == a + nx)
              & (a % nx < nx - 1) & (a // nx < ny - 1))
    return {"cells_expected": (nx - 1) * (ny - 1), "cells_written": int(len(quads)),
            "cells_that_are_grid_cells": int(proper.sum()),
            "grid_cells_covered": int(len(np.unique(a[proper])))}


def attempt(fn):
    """fn()'s result, or the exception it raised as text (these checks record, they do not assert)."""
    try:
        return fn()
    except Exception as error:  # noqa: BLE001 - recording what the peer (or we) cannot do is the point
        return f"{type(error).__name__}: {error}"


def capabilities(folder: Path, messages: VTKMessages) -> dict:
    """What each writer does with a 51x31 grid, NaN points, a 3D scan and log, read back by VTK."""
    out = {}

    def check(name, scan, method, log=False, expect=None):
        path = folder / f"{name}{suffix(method)}"
        messages.take()
        written = attempt(lambda: writers(scan, log)[method](path))
        if isinstance(written, str):
            return {"written": False, "error": written}
        data, values = read_back(path)
        truth = scan.values["loss"].ravel(order="F") if expect is None else expect
        row = {"written": True, "bytes": path.stat().st_size, "points_read": int(data.GetNumberOfPoints()),
               "dimensions": dimensions(data),
               "max_abs_error_loss": max_abs(values, truth), "vtk_messages": messages.take()}
        if data.GetNumberOfPoints() and hasattr(data, "GetPoints") and data.GetPoints() is not None:
            row["points_not_finite"] = int((~np.isfinite(vtk_to_numpy(data.GetPoints().GetData()))).any(axis=1).sum())
        if path.suffix == ".vtp":
            row["zvalue_range_attributes"] = re.search(r'Name="zvalue"[^>]*(RangeMin="[^"]*" RangeMax="[^"]*")',
                                                       path.read_text()).group(1)
        if values is not None and values.shape == truth.shape:
            row["nan_expected"] = int(np.isnan(truth).sum())
            row["nan_read"] = int(np.isnan(values).sum())
            row["nan_where_expected"] = bool(np.array_equal(np.isnan(values), np.isnan(truth)))
        if method.startswith("peer"):
            row.update(quad_check(data, *scan.shape[:2]))
        return row, data, values

    def result(row):
        return row if isinstance(row, dict) else row[0]

    wide = make_scan([parse_axis("-1:1:51"), parse_axis("-0.5:0.5:31")])
    out["51x31"] = {m: result(check("wide", wide, m)) for m in METHODS}
    axis = parse_axis("-1:1:51")
    holes = make_scan([axis, axis], nan=[(0, 0), (10, 20), (25, 25), (50, 50)])
    out["51x51 with 4 NaN"] = {m: result(check("nan", holes, m)) for m in METHODS}
    cube = make_scan([parse_axis("-1:1:21")] * 3)
    out["21x21x21 (3D)"] = {"ours .vts": result(check("cube", cube, "ours .vts")),
                            "ours .vti": result(check("cube", cube, "ours .vti")),
                            # the peer's h5 has x and y coordinates and a loss array; give it the 3D one
                            "peer .vtp": result(check("cube", cube, "peer .vtp",
                                                      expect=cube.values["loss"].ravel(order="F")))}
    # log: ours keep the loss as it is (height = log10 loss); the peer's zvalue is ln(loss + 0.1), its only array
    square = make_scan([axis, axis])
    loss = square.values["loss"].ravel(order="F")
    logs = {}
    for m in METHODS:
        checked = check("log", square, m, log=True)
        row, data, values = checked
        if m.startswith("peer"):
            row["zvalue_is"] = "ln(loss + 0.1)"
            row["max_abs_error_loss"] = None  # the loss itself is not in the file
            row["max_abs_error_zvalue_vs_ln(loss+0.1)"] = max_abs(values, np.log(loss + 0.1))
            row["max_abs_error_loss_recovered_exp(z)-0.1"] = max_abs(np.exp(values) - 0.1, loss)
        else:
            h = vtk_to_numpy(data.GetPointData().GetArray("height")).astype(np.float64)
            row["max_abs_error_height_vs_log10(loss)"] = max_abs(h, np.log10(loss))
        logs[m] = row
    out["51x51 log"] = logs
    return out


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per grid (the fastest counts)")
    parser.add_argument("--grids", nargs="+", type=int, default=[51, 201, 501], metavar="STEPS")
    parser.add_argument("--out", default="out", help="directory for bench_vtk.json (default out/)")
    args = parser.parse_args()
    messages = VTKMessages()
    report = benchlib.header(torch.device("cpu"), peer=PEER, repeats=args.repeats, results={})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"VTK export of a float64 loss surface: ours (binary appended, zlib) vs {PEER} (ASCII)")
        print(f"fastest of {args.repeats} interleaved repeats; x = peer / ours\n")
        print(f"{'grid':<9} {'method':<10} {'write s':>9} {'x':>6} {'read s':>9} {'x':>6} {'bytes':>11} {'x':>6} "
              f"{'max|err| loss':>14} {'max|err| x,y':>13}")
        for steps in args.grids:
            rows = timed(steps, args.repeats, folder, messages)
            report["results"][f"{steps}x{steps}"] = rows
            for m, row in rows.items():
                print(f"{steps}x{steps:<5} {m:<10} {row['write_seconds']:>9.4f} {row['peer_over_this_write_seconds']:>6.1f}"
                      f" {row['read_seconds']:>9.4f} {row['peer_over_this_read_seconds']:>6.1f} {row['bytes']:>11,}"
                      f" {row['peer_over_this_bytes']:>6.1f} {fmt(row['max_abs_error_loss'], '14.1e')}"
                      f" {fmt(row['max_abs_error_xy'], '13.1e')}")
            peer = rows["peer .vtp"]
            print(f"{'':<9} (peer: its text holds the loss to {peer['max_abs_error_loss_in_text']:.1e}; "
                  f"the error is its Float32 type; {peer['cells_read']:,} quads)")
        report["capabilities"] = capabilities(folder, messages)
    print("\nwhat each does with other scans (51x51 unless said; read back with VTK's readers)")
    for case, rows in report["capabilities"].items():
        for m, row in rows.items():
            if not row.get("written"):
                print(f"{case:<17} {m:<10} not written: {row['error']}")
                continue
            parts = [f"points {row['points_read']:,}", f"max|err| loss {fmt(row['max_abs_error_loss'], '.1e')}"]
            if row.get("dimensions") is not None:
                parts.append(f"dims {tuple(row['dimensions'])}")
            if "cells_written" in row:
                parts.append(f"quads {row['cells_written']:,} of {row['cells_expected']:,} cells, "
                             f"{row['cells_that_are_grid_cells']:,} real cells")
            if row.get("points_not_finite"):
                parts.append(f"{row['points_not_finite']} points with non-finite coordinates")
            if row.get("nan_expected") and "zvalue_range_attributes" in row:
                parts.append(row["zvalue_range_attributes"])
            if row.get("nan_expected"):
                parts.append(f"NaN {row['nan_read']} read of {row['nan_expected']}, "
                             f"in place: {row['nan_where_expected']}")
            for key in ("max_abs_error_zvalue_vs_ln(loss+0.1)", "max_abs_error_loss_recovered_exp(z)-0.1",
                        "max_abs_error_height_vs_log10(loss)"):
                if key in row:
                    parts.append(f"{key.removeprefix('max_abs_error_')} {row[key]:.1e}")
            if row["vtk_messages"]:
                parts.append(f"VTK says: {row['vtk_messages'][:120]}")
            print(f"{case:<17} {m:<10} " + "; ".join(parts))
    benchlib.write(report, args.out, "bench_vtk.json")


if __name__ == "__main__":
    main()
