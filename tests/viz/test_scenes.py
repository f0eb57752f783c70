"""ParaView scene scripts: their numbers against the scan, and every kind run in a real ParaView (pvbatch)."""

import ast
import os
import shutil
import subprocess
import time

import numpy as np
import pytest
from matplotlib.image import imread

from tests.viz.conftest import TRAJECTORY, synthetic_scan
from viz import scenes, vtkio
from viz.plots import height_title

PVBATCH = shutil.which("pvbatch")
needs_paraview = pytest.mark.skipif(PVBATCH is None, reason="ParaView's pvbatch is not installed here "
                                                            "(apt-get install paraview xvfb, as .ci/run does)")


def scene_of(script) -> dict:
    """The SCENE literal a script starts with."""
    tree = ast.parse(script.read_text())
    (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                and getattr(node.targets[0], "id", None) == "SCENE"]
    return ast.literal_eval(value)


@pytest.fixture(scope="module")
def display():
    """A display for pvbatch: the session's own, else one Xvfb for all the scenes (xvfb-run -a, started per
    script, lost its display now and then: "bad X server connection")."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("pvbatch needs a display and Xvfb is not installed (apt-get install xvfb)")
    number = next(n for n in range(99, 300) if not os.path.exists(f"/tmp/.X{n}-lock"))
    server = subprocess.Popen([xvfb, f":{number}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket = f"/tmp/.X11-unix/X{number}"
    for _ in range(100):
        if os.path.exists(socket) or server.poll() is not None:
            break
        time.sleep(0.1)
    if not os.path.exists(socket):
        server.kill()
        pytest.fail(f"Xvfb :{number} did not start")
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


def run_pvbatch(script, display):
    """``pvbatch script --screenshot`` on ``display``."""
    done = subprocess.run([PVBATCH, str(script), "--screenshot"], capture_output=True, text=True, timeout=180,
                          cwd=script.parent, env={**os.environ, "DISPLAY": display, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]


def coverage(png) -> tuple[float, float, float]:
    """Shares of the frame that are not white, that are coloured (not grey), and that are the tube's red."""
    rgb = imread(png)[..., :3]
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    red = (rgb[..., 0] > 0.6) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)
    return float((rgb.min(axis=-1) < 0.95).mean()), float((spread > 0.15).mean()), float(red.mean())


def test_round_scales_and_titles():
    assert [scenes.round_scale(v) for v in (0.7, 1.0, 1.6, 3.3, 6.0, 7.2, 0.012, 380.0)] == [0.5, 1, 2, 5, 5, 10, 0.01, 500]
    assert scenes.round_scale(0.0) == scenes.round_scale(float("nan")) == 1.0
    assert scenes.exaggeration(width=60.0, relief=4.0) == 10  # 0.5 * 60 / 4 = 7.5, nearer 10 than 5 in log
    assert height_title(True, None) == "log10 loss" and height_title(False, 5.0) == "loss clipped at 5"


def test_scan_scene_holds_the_scans_numbers(tmp_path):
    scan = synthetic_scan((7, 4), trajectory=TRAJECTORY)
    written = scenes.export(scan, tmp_path, log=True)
    assert [f.name for f in written] == ["scan.vti", "scan.vts", "trajectory.vtp", "view.py"]
    scene = scene_of(tmp_path / "view.py")
    h = vtkio.surface_height(scan, log=True)
    relief = h.max() - h.min()
    assert scene["height_range"] == [h.min(), h.max()] and scene["height_title"] == "log10 loss"
    assert scene["z_scale"] == scenes.round_scale(0.5 * 3.0 / relief)  # the grid is 3 wide (x from -1 to 2)
    assert scene["axis_titles"] == ["d1", "d2", f"log10 loss (x{scene['z_scale']:g})"]
    P = vtkio.trajectory_points(scan, log=True)  # the run's ends on the surface, scaled as drawn
    assert np.allclose(scene["start"], P[0] * [1, 1, scene["z_scale"]])
    assert np.allclose(scene["end"], P[-1] * [1, 1, scene["z_scale"]])


def test_export_writes_every_file_and_a_script_that_is_python(tmp_path):
    no_trajectory = synthetic_scan((3, 3, 3))
    assert [f.name for f in scenes.export(no_trajectory, tmp_path)] == ["scan.vti", "view.py"]
    script = (tmp_path / "view.py").read_text()
    compile(script, "view.py", "exec")
    assert scene_of(tmp_path / "view.py")["image"] == "scan.vti" and '"--screenshot" in sys.argv' in script
    assert scene_of(tmp_path / "view.py")["axis_titles"] == ["d1", "d2", "d3"]


def test_a_run_entirely_off_the_grid_is_not_drawn(tmp_path):
    scan = synthetic_scan((5, 4), trajectory=[[5.0, 3.0], [4.0, 2.0]])
    scenes.export(scan, tmp_path)
    assert scene_of(tmp_path / "view.py")["trajectory"] is None


@needs_paraview
@pytest.mark.parametrize("shape, trajectory", [((41,), [[1.5], [0.5], [0.0]]),
                                               ((31, 21), TRAJECTORY + [[3.0, 0.0]]),  # one point beyond the grid
                                               ((15, 11, 9), [[1.5, 0.1, 0.5], [0.5, -0.2, 0.0], [0.0, 0.0, 0.0]])])
def test_scan_scenes_run_in_paraview_and_fill_the_frame(shape, trajectory, tmp_path, display):
    scan = synthetic_scan(shape, nan=((3, 2, 1),), trajectory=trajectory)
    scenes.export(scan, tmp_path, log=len(shape) == 2)
    run_pvbatch(tmp_path / "view.py", display)
    drawn, coloured, red = coverage(tmp_path / "paraview.png")
    least = 0.02 if len(shape) == 1 else 0.1  # a curve, or a surface or contours that fill the frame
    assert drawn > least and coloured > least / 3, (drawn, coloured)
    assert red > 0.0005, red  # the trajectory's tube and its end marker


@needs_paraview
def test_series_scene_runs_in_paraview(tmp_path, display):
    steps = [0, 50, 100]
    scans = [synthetic_scan((21, 15), nan=()) for _ in steps]
    for i, s in enumerate(scans):
        s.values["loss"] = s.values["loss"] * (1 + i)
    files = [vtkio.write_vts(s, tmp_path / "series" / f"step_{t:03d}.vts", log=True) for s, t in zip(scans, steps)]
    vtkio.write_pvd(tmp_path / "series.pvd", list(zip(steps, files)))
    script = scenes.series_script(tmp_path / "view_series.py", "series.pvd", scans, steps, log=True)
    assert scene_of(script)["times"] == [0.0, 50.0, 100.0]
    run_pvbatch(script, display)
    drawn, coloured, _ = coverage(tmp_path / "paraview_series.png")
    assert drawn > 0.1 and coloured > 0.03, (drawn, coloured)


@needs_paraview
def test_paths_scene_runs_in_paraview(tmp_path, display):
    t = np.linspace(0, 1, 25)
    line = (np.c_[t, np.zeros_like(t)], 1 + np.sin(np.pi * t))
    curve = (np.c_[t, 0.4 * np.sin(np.pi * t)], 1 + 0.1 * np.sin(np.pi * t))
    paths = {}
    for name, (coords, loss) in {"line.vtp": line, "bezier.vtp": curve}.items():
        vtkio.write_polyline(tmp_path / name, np.c_[coords, loss], {"t": t, "loss": loss,
                                                                    "valid": np.ones(len(t), dtype=np.uint8)})
        paths[name] = (coords, loss)
    script = scenes.paths_script(tmp_path / "view_paths.py", paths, ends=(1.0, 1.0))
    assert scene_of(script)["a"] == [0.0, 0.0, scene_of(script)["z_scale"]]
    run_pvbatch(script, display)
    drawn, coloured, _ = coverage(tmp_path / "paraview_paths.png")
    assert drawn > 0.03 and coloured > 0.01, (drawn, coloured)
