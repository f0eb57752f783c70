"""Offscreen 3D rendering of a 2D scan to PNG with VTK: no display, no GPU needed.

The surface is the scan's height field (``viz.vtkio``: the loss, clipped at ``zmax``, log10
when ``log``), drawn on a square with the relief half as tall as it is wide, coloured by
height with a scalar bar; NaN points are cut out. The scan's trajectory, if it has one, is a
red tube lying on the surface (white sphere at its start, dark one at its end); the part of a
run beyond the grid has no surface under it and is left out.

Without a display (``DISPLAY`` unset) VTK is pointed at its EGL window, which Mesa provides
on CPU-only machines; with a display it uses the default one, offscreen.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonCore import vtkLookupTable
from vtkmodules.vtkCommonDataModel import vtkDataObject
from vtkmodules.vtkFiltersCore import vtkPolyDataNormals, vtkThreshold, vtkTubeFilter
from vtkmodules.vtkFiltersGeometry import vtkDataSetSurfaceFilter
from vtkmodules.vtkFiltersSources import vtkSphereSource
from vtkmodules.vtkIOImage import vtkPNGWriter
from vtkmodules.vtkRenderingAnnotation import vtkScalarBarActor
from vtkmodules.vtkRenderingCore import (
    vtkActor,
    vtkLightKit,
    vtkPolyDataMapper,
    vtkRenderer,
    vtkRenderWindow,
    vtkTextActor,
    vtkWindowToImageFilter,
)

from landscape.scans.scan import Scan
from viz import vtkio
from viz.plots import flatness, height_title, not_finite, off_plane, titled

for _backend in ("vtkRenderingOpenGL2", "vtkRenderingFreeType"):  # the render window and text; imported to register
    importlib.import_module(f"vtkmodules.{_backend}")

CAMERAS = {"iso": (-60.0, 45.0), "top": (-90.0, 89.0), "side": (-90.0, 5.0)}  # (azimuth, elevation) in degrees


def _lookup_table(lo: float, hi: float) -> vtkLookupTable:
    table = vtkLookupTable()
    table.SetNumberOfTableValues(256)
    if hi <= lo:  # a flat surface: its one value mid-scale, the bar's labels distinct
        pad = max(0.05 * abs(lo), 1e-12)
        lo, hi = lo - pad, hi + pad
    table.SetRange(lo, hi)
    for i, rgba in enumerate(colormaps["viridis"](np.linspace(0, 1, 256))):
        table.SetTableValue(i, *rgba)
    table.Build()
    return table


def _tube(points: np.ndarray) -> vtkActor:
    tube = vtkTubeFilter()
    tube.SetInputData(vtkio.polyline(points))
    tube.SetRadius(0.007)
    tube.SetNumberOfSides(16)
    tube.CappingOn()
    mapper = vtkPolyDataMapper()
    mapper.SetInputConnection(tube.GetOutputPort())
    mapper.ScalarVisibilityOff()
    actor = vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(0.85, 0.1, 0.1)
    return actor


def _sphere(center, radius: float, color) -> vtkActor:
    source = vtkSphereSource()
    source.SetCenter(*center)
    source.SetRadius(radius)
    source.SetThetaResolution(24)
    source.SetPhiResolution(24)
    mapper = vtkPolyDataMapper()
    mapper.SetInputConnection(source.GetOutputPort())
    actor = vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*color)
    return actor


def caption_of(scan: Scan, title: str | None = None, trajectory: bool = True) -> str:
    """The picture's caption: ``title`` (default "loss surface, nx x ny points"), then what is missing from
    the surface (points not computed, not finite), whether it is flat, and, with the ``trajectory`` drawn, how
    far off the plane the run lies when that is more than 1% (``viz.plots.off_plane``)."""
    loss = scan.values["loss"]
    off = off_plane(scan) if trajectory else None
    return titled(title or f"loss surface, {scan.shape[0]} x {scan.shape[1]} points", scan,
                  not_finite(loss, scan.done), flatness(loss),
                  f"the run: {off:.1%} of its distance off this plane, median" if off is not None and off > 0.01 else "")


def render(scan: Scan, path: str | Path, *, log: bool = False, zmax: float | None = None, trajectory: bool = True,
           camera: str = "iso", size: tuple[int, int] = (1200, 900), title: str | None = None) -> Path:
    """Render a 2D scan's loss surface (and its trajectory as a tube) to the PNG ``path``.

    Both horizontal axes are drawn the same length and the relief half that tall, whatever the
    grid's units (the caption and the scalar bar carry the numbers).
    ``camera``: ``"iso"`` (from the front left, 45 degrees up), ``"top"`` or ``"side"``.
    Raises ``RuntimeError`` when VTK cannot render offscreen here (the image comes back blank).
    """
    if len(scan.axes) != 2:
        raise ValueError(f"render draws a 2D scan's surface; this scan has {len(scan.axes)} axes "
                         f"(open its .vti in ParaView instead)")
    if camera not in CAMERAS:
        raise ValueError(f"camera must be one of {', '.join(CAMERAS)}, got {camera!r}")
    if not np.isfinite(scan.values["loss"]).any():
        raise ValueError("the scan has no finite loss to draw")
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h = vtkio.surface_height(scan, log, zmax)
    valid = np.isfinite(scan.values["loss"])
    lo, hi = float(h[valid].min()), float(h[valid].max())
    # both axes drawn 1 wide (a PCA plane can be 5 times longer than wide), the relief 0.5 tall
    scale = np.array([1 / float(a[-1] - a[0]) if len(a) > 1 and a[-1] > a[0] else 1.0 for a in scan.axes]
                     + [0.5 / (hi - lo) if hi > lo else 1.0])

    grid = vtkio.structured_grid(scan, log, zmax, scale=scale)
    keep = vtkThreshold()
    keep.SetInputData(grid)
    keep.SetInputArrayToProcess(0, 0, 0, vtkDataObject.FIELD_ASSOCIATION_POINTS, "valid")
    keep.SetThresholdFunction(vtkThreshold.THRESHOLD_UPPER)
    keep.SetUpperThreshold(0.5)
    keep.SetAllScalars(True)  # a cell goes when any of its corners is NaN
    outer = vtkDataSetSurfaceFilter()
    outer.SetInputConnection(keep.GetOutputPort())
    normals = vtkPolyDataNormals()  # smooth shading
    normals.SetInputConnection(outer.GetOutputPort())
    normals.SplittingOff()
    mapper = vtkPolyDataMapper()
    mapper.SetInputConnection(normals.GetOutputPort())
    mapper.SetScalarModeToUsePointFieldData()
    mapper.SelectColorArray("height")
    mapper.SetLookupTable(_lookup_table(lo, hi))
    mapper.SetUseLookupTableScalarRange(True)
    surface = vtkActor()
    surface.SetMapper(mapper)
    surface.GetProperty().SetInterpolationToGouraud()
    surface.GetProperty().SetAmbient(0.25)
    surface.GetProperty().SetDiffuse(0.8)

    renderer = vtkRenderer()
    renderer.SetBackground(1, 1, 1)
    renderer.RemoveAllLights()
    vtkLightKit().AddLightsToRenderer(renderer)
    renderer.AddActor(surface)
    bar = vtkScalarBarActor()
    bar.SetLookupTable(mapper.GetLookupTable())
    bar.SetTitle(height_title(log, zmax))
    bar.UnconstrainedFontSizeOn()  # the title's size should not depend on its length
    bar.SetNumberOfLabels(5)
    bar.SetLabelFormat("%.3g")
    bar.SetPosition(0.88, 0.1)
    bar.SetWidth(0.1)
    bar.SetHeight(0.72)
    bar.SetVerticalTitleSeparation(8)
    for text in (bar.GetTitleTextProperty(), bar.GetLabelTextProperty()):
        text.SetColor(0, 0, 0)
        text.SetFontSize(14)
        text.ShadowOff()
        text.ItalicOff()
    renderer.AddViewProp(bar)
    caption = vtkTextActor()
    caption.SetInput(caption_of(scan, title, trajectory))
    caption.GetTextProperty().SetColor(0, 0, 0)
    caption.GetTextProperty().SetFontSize(20)
    caption.SetPosition(16, size[1] - 36)
    renderer.AddViewProp(caption)

    if trajectory and scan.trajectory is not None and len(scan.trajectory["coords"]):
        P = vtkio.trajectory_points(scan, log, zmax) * scale
        P[:, 2] += 0.012  # on the surface, lifted a little so it is not buried
        over = np.isfinite(P[:, 2])  # the part of the run over the grid: each stretch its own tube
        for run in np.split(np.arange(len(P)), np.flatnonzero(np.diff(over)) + 1):
            if over[run[0]] and len(run) > 1:
                renderer.AddActor(_tube(P[run]))
        for end, color in ((0, (1, 1, 1)), (-1, (0.45, 0, 0))):
            if over[end]:
                renderer.AddActor(_sphere(P[end], 0.018, color))

    azimuth, elevation = CAMERAS[camera]
    view = renderer.GetActiveCamera()
    view.SetFocalPoint(0, 0, 0)
    view.SetPosition(0, -1, 0)
    view.SetViewUp(0, 0, 1)
    view.Azimuth(azimuth + 90)
    view.Elevation(elevation)
    view.OrthogonalizeViewUp()
    renderer.ResetCamera()
    view.Zoom(1.15)

    window = vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    window.AddRenderer(renderer)
    window.Render()
    grab = vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    image = grab.GetOutput()
    pixels = vtk_to_numpy(image.GetPointData().GetScalars())
    window.Finalize()
    if pixels.size == 0 or pixels.std() < 1.0:
        raise RuntimeError(f"VTK could not render offscreen here (blank image from {type(window).__name__})")
    writer = vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(image)
    writer.Write()
    return path
