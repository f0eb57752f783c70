"""VTK XML files of scans, trajectories and paths, for ParaView (binary, appended, zlib-compressed).

- ``write_vts``: a 2D scan as a structured grid height field: point (x_i, y_j, h_ij) with
  h = ``height(loss, log, zmax)`` (clipped at ``zmax``, then log10 when ``log``);
- ``write_vti``: any scan (1D, 2D, 3D) as image data, origin and spacing from its axes, so a
  3D scan is a volume (contours, slices, volume rendering);
- ``write_polyline``: a trajectory or a path as one polyline with arrays per point
  (``write_trajectory`` for a scan's own);
- ``write_pvd``: a time series (``.pvd`` collection) of any of these files.

:mod:`viz.scenes` writes the ParaView scripts that open them (and ``export`` writes a scan's files and its script).

Every point array of a scan is there as it is (``loss``, ``accuracy``, ...; NaN kept), plus
``valid`` (1 where the loss is finite, 0 where it is NaN or not computed: threshold on it
in ParaView) and ``height`` (the drawn value; invalid points get the top of the range so
the geometry stays finite). Points are in VTK order, x fastest: index i + nx (j + ny l) holds
``values[i, j, l]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
from vtkmodules.util.numpy_support import numpy_to_vtk
from vtkmodules.vtkCommonCore import vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkImageData, vtkPolyData, vtkStructuredGrid
from vtkmodules.vtkIOXML import vtkXMLImageDataWriter, vtkXMLPolyDataWriter, vtkXMLStructuredGridWriter, vtkXMLWriter

from landscape.scans.scan import Scan
from viz.plots import height


def _vtk_order(values: np.ndarray) -> np.ndarray:
    """(nx[, ny[, nz]]) -> flat, x fastest (Fortran order)."""
    return np.ascontiguousarray(np.asarray(values).ravel(order="F"))


def _array(name: str, values: np.ndarray):
    array = numpy_to_vtk(np.ascontiguousarray(values), deep=True)
    array.SetName(name)
    return array


def _write(writer: vtkXMLWriter, data, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.SetFileName(str(path))
    writer.SetInputData(data)
    writer.SetDataModeToAppended()
    writer.EncodeAppendedDataOff()  # raw binary, not base64
    if not writer.Write():
        raise OSError(f"VTK could not write {path}")
    return path


def surface_height(scan: Scan, log: bool = False, zmax: float | None = None, metric: str = "loss") -> np.ndarray:
    """``height`` of the scan's ``metric`` with the invalid points raised to the top finite height."""
    h = height(scan.values[metric], log, zmax)
    finite = np.isfinite(h)
    return np.where(finite, h, h[finite].max() if finite.any() else 0.0)


def _point_data(target, scan: Scan, log: bool, zmax: float | None) -> None:
    data = target.GetPointData()
    for name, v in scan.values.items():
        data.AddArray(_array(name, _vtk_order(np.asarray(v, dtype=np.float64))))
    data.AddArray(_array("valid", _vtk_order(np.isfinite(scan.values["loss"]).astype(np.uint8))))
    data.AddArray(_array("height", _vtk_order(surface_height(scan, log, zmax))))
    data.SetActiveScalars("height")


def structured_grid(scan: Scan, log: bool = False, zmax: float | None = None,
                    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> vtkStructuredGrid:
    """A 2D scan's height field: points (x_i, y_j, height_ij) times ``scale``, dimensions (nx, ny, 1), every array."""
    if len(scan.axes) != 2:
        raise ValueError(f"a height field (.vts) needs a 2D scan, this one has {len(scan.axes)} axes; use write_vti")
    nx, ny = scan.shape
    X, Y = np.meshgrid(scan.axes[0], scan.axes[1], indexing="ij")
    xyz = np.stack([_vtk_order(X), _vtk_order(Y), _vtk_order(surface_height(scan, log, zmax))], axis=1) * scale
    points = vtkPoints()
    points.SetData(numpy_to_vtk(np.ascontiguousarray(xyz), deep=True))
    grid = vtkStructuredGrid()
    grid.SetDimensions(nx, ny, 1)
    grid.SetPoints(points)
    _point_data(grid, scan, log, zmax)
    return grid


def write_vts(scan: Scan, path: str | Path, *, log: bool = False, zmax: float | None = None) -> Path:
    """A 2D scan as a height field (``structured_grid``) in a ``.vts`` file: z is the height itself."""
    return _write(vtkXMLStructuredGridWriter(), structured_grid(scan, log, zmax), path)


def write_vti(scan: Scan, path: str | Path, *, log: bool = False, zmax: float | None = None) -> Path:
    """Any scan as image data: dimensions (nx, ny or 1, nz or 1), origin the first coordinates, spacing the step."""
    dims, origin, spacing = [1, 1, 1], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    for a, coords in enumerate(scan.axes):
        dims[a], origin[a] = len(coords), float(coords[0])
        if len(coords) > 1:
            steps = np.diff(coords)
            if not np.allclose(steps, steps.mean(), rtol=1e-9, atol=0):
                raise ValueError(f"axis {a} is not evenly spaced, which image data (.vti) needs")
            spacing[a] = float(steps.mean())
    image = vtkImageData()
    image.SetDimensions(*dims)
    image.SetOrigin(*origin)
    image.SetSpacing(*spacing)
    _point_data(image, scan, log, zmax)
    return _write(vtkXMLImageDataWriter(), image, path)


def polyline(points, arrays: Mapping[str, Sequence] | None = None, pieces: Sequence[int] | None = None) -> vtkPolyData:
    """Points ``[m, 3]`` (or ``[m, 2]``, z = 0) joined in order as one polyline, with ``arrays`` ``{name: [m]}``.

    ``pieces`` (one label per point) cuts it into one polyline cell per run of equal labels, so that a
    threshold on the label keeps whole runs (a polyline cell goes when any of its points fails).
    """
    P = np.asarray(points, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] not in (2, 3) or len(P) == 0:
        raise ValueError(f"polyline points must be [m, 3] or [m, 2] with m >= 1, got {P.shape}")
    if P.shape[1] == 2:
        P = np.c_[P, np.zeros(len(P))]
    vtk_points = vtkPoints()
    vtk_points.SetData(numpy_to_vtk(np.ascontiguousarray(P), deep=True))
    labels = np.zeros(len(P), dtype=np.int64) if pieces is None else np.asarray(pieces)
    if labels.shape != (len(P),):
        raise ValueError(f"pieces has {labels.shape[:1]} labels for {len(P)} points")
    line = vtkCellArray()
    for run in np.split(np.arange(len(P)), np.flatnonzero(np.diff(labels)) + 1):
        line.InsertNextCell(len(run))
        for i in run:
            line.InsertCellPoint(int(i))
    poly = vtkPolyData()
    poly.SetPoints(vtk_points)
    poly.SetLines(line)
    for name, values in (arrays or {}).items():
        v = np.asarray(values)
        if v.shape[:1] != (len(P),):
            raise ValueError(f"array {name!r} has {v.shape[:1]} entries for {len(P)} points")
        poly.GetPointData().AddArray(_array(name, v if v.dtype.kind in "iu" else v.astype(np.float64)))
    return poly


def write_polyline(path: str | Path, points, arrays: Mapping[str, Sequence] | None = None,
                   pieces: Sequence[int] | None = None) -> Path:
    """A ``polyline`` written as a ``.vtp`` file (a trajectory, a path between minima)."""
    return _write(vtkXMLPolyDataWriter(), polyline(points, arrays, pieces), path)


def inside(scan: Scan, coords) -> np.ndarray:
    """Which rows of ``coords [m, k]`` lie within the scan's grid (on every axis, ends included)."""
    C = np.asarray(coords, dtype=np.float64)
    return np.all([(C[:, a] >= axis[0]) & (C[:, a] <= axis[-1]) for a, axis in enumerate(scan.axes)], axis=0)


def trajectory_points(scan: Scan, log: bool = False, zmax: float | None = None) -> np.ndarray:
    """The scan's trajectory ``[m, 3]`` in the coordinates of its files: on a 2D scan (x, y, h) with h
    the surface height under the point (bilinear), on a 1D scan (x, 0, h), on a 3D scan (x, y, z).
    A point outside the grid has no surface under it: its h is NaN."""
    if scan.trajectory is None:
        raise ValueError("this scan has no trajectory (scan with --trajectory DIR to place checkpoints)")
    C = np.asarray(scan.trajectory["coords"], dtype=np.float64)
    if len(scan.axes) == 3:
        return C
    h = surface_height(scan, log, zmax)
    if len(scan.axes) == 1:
        P = np.c_[C[:, 0], np.zeros(len(C)), np.interp(C[:, 0], scan.axes[0], h)]
    else:
        P = np.c_[C[:, :2], _bilinear(scan.axes[0], scan.axes[1], h, C[:, 0], C[:, 1])]
    P[~inside(scan, C), 2] = np.nan
    return P


def _bilinear(x: np.ndarray, y: np.ndarray, v: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """v (nx, ny) on the grid x x y, interpolated at the points (px, py) (clamped to the grid's edge)."""
    def locate(axis, p):
        p = np.clip(p, axis[0], axis[-1])
        i = np.clip(np.searchsorted(axis, p) - 1, 0, max(len(axis) - 2, 0))
        w = (p - axis[i]) / (axis[i + 1] - axis[i]) if len(axis) > 1 else np.zeros_like(p)
        return i, w
    (i, u), (j, w) = locate(x, px), locate(y, py)
    i1, j1 = np.minimum(i + 1, len(x) - 1), np.minimum(j + 1, len(y) - 1)
    return (v[i, j] * (1 - u) * (1 - w) + v[i1, j] * u * (1 - w) + v[i, j1] * (1 - u) * w + v[i1, j1] * u * w)


def write_trajectory(scan: Scan, path: str | Path, *, log: bool = False, zmax: float | None = None) -> Path:
    """The scan's trajectory as a polyline with ``step`` (checkpoint index), ``loss`` (each checkpoint's
    own, NaN when unknown), ``residual`` (distance off the plane), ``height`` (of the surface under it)
    and ``inside`` (1 on the grid; a point beyond it is drawn at the top of the surface's range, flagged 0).
    Each run of points on the grid, and each beyond it, is its own cell: a threshold on ``inside`` keeps
    the runs over the grid."""
    P = trajectory_points(scan, log, zmax)
    t = scan.trajectory
    own = t.get("loss")
    on_grid = inside(scan, t["coords"])
    arrays = {"step": np.arange(len(P), dtype=np.int64),
              "loss": np.full(len(P), np.nan) if own is None else np.asarray(own, dtype=np.float64),
              "residual": np.asarray(t["residuals"], dtype=np.float64), "height": P[:, 2].copy(),
              "inside": on_grid.astype(np.uint8)}
    if len(scan.axes) < 3:
        P[~on_grid, 2] = surface_height(scan, log, zmax).max()
    return write_polyline(path, P, arrays, pieces=on_grid)


def write_pvd(path: str | Path, entries: Sequence[tuple[float, str | Path]]) -> Path:
    """A ParaView collection: ``entries`` ``[(time, file), ...]`` (paths as the caller names them: absolute
    or relative to the working directory), written relative to the .pvd's folder, as ParaView reads them."""
    path = Path(path)
    rows = []
    for time, file in entries:
        relative = Path(os.path.relpath(Path(file).resolve(), path.parent.resolve()))
        rows.append(f'    <DataSet timestep="{float(time)!r}" group="" part="0" file={quoteattr(relative.as_posix())}/>')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('<?xml version="1.0"?>\n<VTKFile type="Collection" version="1.0" byte_order="LittleEndian">\n'
                    "  <Collection>\n" + "\n".join(rows) + "\n  </Collection>\n</VTKFile>\n")
    return path
