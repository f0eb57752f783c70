"""ParaView scene scripts: small pvpython programs that open the toolkit's VTK files as a figure.

    pvpython view.py                     # opens the scene (also: ParaView, Tools > Python Shell > Run Script)
    pvbatch view.py --screenshot         # writes paraview.png beside it (xvfb-run -a pvbatch ... without a display)

Each script is written next to its files and finds them relative to itself. It uses only
the stable ``paraview.simple`` API (ParaView 5.10 through 5.13; tested with Debian's 5.11 in
tests/viz/test_scenes.py), and starts with the numbers it was written with (file names, the
height scale, titles), so it can be edited freely.

- ``scan_script``: a 1D scan as a curve, a 2D scan as a surface warped by its height, a 3D
  scan as contour surfaces; coloured by height with a scalar bar named for what it shows
  ("log10 loss", "loss clipped at 5"); a grid of axes in the scan's coordinates (d1, d2, d3);
  the trajectory over the grid as a red tube, its start a white sphere and its end a red one.
- ``series_script``: the ``.pvd`` time series of height fields, with the time slider, the
  step written on the scene, one colour scale for all steps.
- ``paths_script``: paths between two models (their ``.vtp`` files: x, y in the plane of the
  path, z the loss) as tubes coloured by the loss, with a and b marked.

Heights are drawn exaggerated so the relief is visible: z is the height times a round factor
(1, 2 or 5 times a power of ten) that makes it about half as tall as the scene is wide. The
axis title says so ("log10 loss (x5)"): the axis reads the height times that factor, and the
scalar bar gives the height itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from landscape.scans.scan import Scan
from viz import vtkio
from viz.plots import height_title

AXIS_TITLES = ("d1", "d2", "d3")

_HEAD = '''"""{doc}

Written by landscape-dynamics for ParaView 5.10+: `pvpython {name}` opens it, `pvbatch {name} --screenshot`
writes {shot} beside it (under `xvfb-run -a` where there is no display). Edit freely.
"""
import os
import sys

from paraview.simple import *  # noqa: F401,F403

HERE = os.path.dirname(os.path.abspath(__file__))
SCENE = {scene!r}


def here(name):
    return os.path.join(HERE, name)


def style(view):
    try:
        LoadPalette("WhiteBackground")  # black text on white, as a figure
    except Exception:  # a ParaView without that palette keeps its own colours
        pass
    view.OrientationAxesVisibility = 0
    view.ViewSize = [1200, 900]  # the screenshot's size, so fonts keep their size in it


def colour(display, view, array, title, lo, hi):
    """Colour ``display`` by ``array`` on a viridis scale from lo to hi, with a scalar bar named ``title``."""
    ColorBy(display, ("POINTS", array))
    lut = GetColorTransferFunction(array)
    lut.ApplyPreset("Viridis (matplotlib)", True)
    lut.RescaleTransferFunction(lo, hi)
    GetOpacityTransferFunction(array).RescaleTransferFunction(lo, hi)
    bar = GetScalarBar(lut, view)
    bar.Title, bar.ComponentTitle = title, ""
    bar.AddRangeLabels = 0  # round ticks only, not the data range's odd ends
    bar.TitleFontSize, bar.LabelFontSize, bar.ScalarBarLength = 16, 14, 0.4
    bar.WindowLocation = "Any Location"
    bar.Position = [0.92, 0.1]
    display.SetScalarBarVisibility(view, True)


def axes(display, titles):
    grid = display.DataAxesGrid
    grid.GridAxesVisibility = 1
    grid.XTitle, grid.YTitle, grid.ZTitle = titles
    grid.XTitleFontSize = grid.YTitleFontSize = grid.ZTitleFontSize = 15
    grid.XLabelFontSize = grid.YLabelFontSize = grid.ZLabelFontSize = 13
    grid.AxesToLabel = 10  # labels on the faces min-y and max-x: x in front, y and z at the right, not all twelve


def keep(source, array):
    """The cells of ``source`` whose points all have ``array`` = 1 (valid, or over the grid)."""
    kept = Threshold(Input=source, Scalars=["POINTS", array])
    kept.LowerThreshold, kept.UpperThreshold = 1, 1
    return kept


def tube_of(source, radius):
    return Tube(Input=ExtractSurface(Input=source), Radius=radius, NumberofSides=16)


def solid(source, view, rgb):
    display = Show(source, view)
    display.ColorArrayName = ["POINTS", ""]  # a solid colour: no array (ColorBy(display, None) fails in 5.11)
    display.AmbientColor = display.DiffuseColor = rgb
    return display


def marker(view, center, radius, rgb):
    return solid(Sphere(Center=center, Radius=radius, ThetaResolution=24, PhiResolution=24), view, rgb)


def frame(view, position):
    """Look at everything shown from ``position`` (a direction), z up, filling the frame."""
    view.CameraFocalPoint = [0, 0, 0]
    view.CameraPosition = position
    view.CameraViewUp = [0, 0, 1]
    view.ResetCamera()
    GetActiveCamera().Dolly(1.3)


def finish(view, shot):
    Render(view)
    if "--screenshot" in sys.argv:
        SaveScreenshot(here(shot), view, ImageResolution=[1200, 900])
'''

_SCAN = '''
view = GetActiveViewOrCreate("RenderView")
style(view)
image = XMLImageDataReader(FileName=[here(SCENE["image"])])
lo, hi = SCENE["height_range"]
if SCENE["dims"] <= 2:
    shown = WarpByScalar(Input=keep(image, "valid"), Scalars=["POINTS", "height"], ScaleFactor=SCENE["z_scale"])
    if SCENE["dims"] == 1:
        shown = tube_of(shown, SCENE["radius"])
else:
    shown = Contour(Input=image, ContourBy=["POINTS", "height"], Isosurfaces=SCENE["levels"], ComputeScalars=1)
display = Show(shown, view)
if SCENE["dims"] == 3:
    display.Opacity = 0.8  # the contours in front let the ones behind and the run show through
colour(display, view, "height", SCENE["height_title"], lo, hi)
axes(display, SCENE["axis_titles"])
if SCENE["trajectory"]:
    path = Transform(Input=keep(XMLPolyDataReader(FileName=[here(SCENE["trajectory"])]), "inside"))  # over the grid
    path.Transform.Scale = [1, 1, SCENE["z_scale"] if SCENE["dims"] <= 2 else 1]
    path.Transform.Translate = [0, 0, 1.5 * SCENE["radius"] if SCENE["dims"] <= 2 else 0]  # on the surface
    solid(tube_of(path, 1.4 * SCENE["radius"]), view, [0.85, 0.1, 0.1])  # over a 1D scan's curve, a sleeve
    marker(view, SCENE["start"], 2.5 * SCENE["radius"], [1, 1, 1])
    marker(view, SCENE["end"], 2.5 * SCENE["radius"], [0.85, 0.1, 0.1])
frame(view, SCENE["camera"])
finish(view, "paraview.png")
'''

_SERIES = '''
view = GetActiveViewOrCreate("RenderView")
style(view)
series = PVDReader(FileName=here(SCENE["pvd"]))
lo, hi = SCENE["height_range"]
shown = Transform(Input=keep(series, "valid"))
shown.Transform.Scale = [1, 1, SCENE["z_scale"]]
display = Show(shown, view)
colour(display, view, "height", SCENE["height_title"], lo, hi)
axes(display, SCENE["axis_titles"])
label = Show(AnnotateTimeFilter(Input=series, Format="step {time:.0f}"), view)
label.FontSize, label.WindowLocation = 20, "Upper Center"
scene = GetAnimationScene()
scene.UpdateAnimationUsingDataTimeSteps()
scene.AnimationTime = SCENE["times"][-1]  # the slider goes through every step; the screenshot shows the last
frame(view, [1, -1.6, 1.2])
finish(view, "paraview_series.png")
'''

_PATHS = '''
view = GetActiveViewOrCreate("RenderView")
style(view)
lo, hi = SCENE["loss_range"]
for name in SCENE["paths"]:
    path = Transform(Input=keep(XMLPolyDataReader(FileName=[here(name)]), "valid"))
    path.Transform.Scale = [1, 1, SCENE["z_scale"]]
    display = Show(tube_of(path, SCENE["radius"]), view)
    colour(display, view, "loss", "loss", lo, hi)
    axes(display, SCENE["axis_titles"])
marker(view, SCENE["a"], 2.5 * SCENE["radius"], [1, 1, 1])
marker(view, SCENE["b"], 2.5 * SCENE["radius"], [0.85, 0.1, 0.1])
frame(view, [0.3, -1.6, 0.8])
finish(view, "paraview_paths.png")
'''


def round_scale(raw: float) -> float:
    """The 1, 2 or 5 times a power of ten nearest ``raw`` (on a log scale); 1 for a non-positive or non-finite one."""
    if not (math.isfinite(raw) and raw > 0):
        return 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return min((m * power for m in (1, 2, 5, 10)), key=lambda v: abs(math.log(v / raw)))


def exaggeration(width: float, relief: float) -> float:
    """The round height factor that makes ``relief`` about half as tall as ``width``."""
    return round_scale(0.5 * width / relief) if relief > 0 else 1.0


def _z_title(title: str, scale: float) -> str:
    return title if scale == 1 else f"{title} (x{scale:g})"


def _write(path: str | Path, doc: str, shot: str, scene: dict, body: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_HEAD.format(doc=doc, name=path.name, shot=shot, scene=scene) + body)
    return path


def scan_script(path: str | Path, scan: Scan, image: str, trajectory: str | None = None, *, log: bool = False,
                zmax: float | None = None) -> Path:
    """``view.py`` for a scan whose image data is ``image`` (and trajectory polyline ``trajectory``) in the same folder."""
    dims = len(scan.axes)
    h = vtkio.surface_height(scan, log, zmax)
    lo, hi = float(h.min()), float(h.max())
    width = extent(scan)
    scale = exaggeration(width, hi - lo) if dims <= 2 else 1.0
    title = height_title(log, zmax)
    titles = {1: ("d1", "", _z_title(title, scale)), 2: ("d1", "d2", _z_title(title, scale)), 3: AXIS_TITLES}[dims]
    depth = (hi - lo) * scale if dims <= 2 else 0.0
    scene = {"image": image, "dims": dims, "z_scale": scale, "height_title": title, "height_range": [lo, hi],
             "axis_titles": list(titles), "levels": np.quantile(h, [0.2, 0.5, 0.8]).tolist(),
             "radius": 0.008 * math.hypot(width, depth), "trajectory": trajectory,
             "camera": [0, -1, 0.25] if dims == 1 else [1, -1.6, 1.2]}
    if trajectory is not None:
        points = vtkio.trajectory_points(scan, log, zmax)[vtkio.inside(scan, scan.trajectory["coords"])]
        if len(points):
            if dims <= 2:
                points[:, 2] *= scale
            scene["start"], scene["end"] = points[0].tolist(), points[-1].tolist()
        else:
            scene["trajectory"] = None  # the whole run lies beyond the grid
    return _write(path, f"The scan in {image} as a ParaView scene.", "paraview.png", scene, _SCAN)


def series_script(path: str | Path, pvd: str, scans: Sequence[Scan], times: Sequence[float], *, log: bool = False,
                  zmax: float | None = None) -> Path:
    """``view_series.py`` for the ``.pvd`` time series ``pvd`` (beside it) of the 2D ``scans`` at ``times``."""
    heights = [vtkio.surface_height(s, log, zmax) for s in scans]
    lo, hi = float(min(h.min() for h in heights)), float(max(h.max() for h in heights))
    width = max(extent(s) for s in scans)
    scale = exaggeration(width, hi - lo)
    title = height_title(log, zmax)
    scene = {"pvd": pvd, "times": [float(t) for t in times], "z_scale": scale, "height_title": title,
             "height_range": [lo, hi], "axis_titles": ["d1", "d2", _z_title(title, scale)]}
    return _write(path, f"The time series {pvd} as a ParaView scene with its time slider.", "paraview_series.png",
                  scene, _SERIES)


def paths_script(path: str | Path, paths: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 ends: tuple[float, float]) -> Path:
    """``view_paths.py`` for paths between two models a and b: ``paths`` maps each ``.vtp`` file beside the
    script (points (x, y, loss) in the plane of the path, a at (0, 0), b at (1, 0)) to its ``(coords [T, 2],
    loss [T])``; ``ends`` are L(a) and L(b)."""
    coords = np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1, 2) for c, _ in paths.values()])
    losses = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for _, v in paths.values()] + [ends])
    finite = losses[np.isfinite(losses)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    width = max(float(np.ptp(coords[:, 0])), float(np.ptp(coords[:, 1])), 1.0)
    scale = exaggeration(width, hi - lo)
    at = [float(v) * scale if math.isfinite(v) else 0.0 for v in ends]
    scene = {"paths": list(paths), "z_scale": scale, "loss_range": [lo, hi],
             "axis_titles": ["x (units of |b - a|)", "y", _z_title("loss", scale)],
             "radius": 0.006 * math.hypot(width, (hi - lo) * scale), "a": [0.0, 0.0, at[0]], "b": [1.0, 0.0, at[1]]}
    return _write(path, "Paths between two models as a ParaView scene.", "paraview_paths.png", scene, _PATHS)


def extent(scan: Scan) -> float:
    """The widest side of the grid (1 for a single point)."""
    return max(float(a[-1] - a[0]) for a in scan.axes) or 1.0


def export(scan: Scan, out: str | Path, *, log: bool = False, zmax: float | None = None,
           stem: str = "scan") -> list[Path]:
    """Everything ParaView needs for a scan, in ``out``: ``{stem}.vti``, ``{stem}.vts`` (2D),
    ``trajectory.vtp`` (when the scan has one) and ``view.py``. Returns the paths written."""
    out = Path(out)
    written = [vtkio.write_vti(scan, out / f"{stem}.vti", log=log, zmax=zmax)]
    if len(scan.axes) == 2:
        written.append(vtkio.write_vts(scan, out / f"{stem}.vts", log=log, zmax=zmax))
    trajectory = None
    if scan.trajectory is not None:
        written.append(vtkio.write_trajectory(scan, out / "trajectory.vtp", log=log, zmax=zmax))
        trajectory = written[-1].name
    written.append(scan_script(out / "view.py", scan, written[0].name, trajectory, log=log, zmax=zmax))
    return written
