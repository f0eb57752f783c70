"""landscape render and scan --plot: figures and VTK files of finished and partial scans."""

import pytest
import torch

from landscape.cli import main
from tests.landscape.cli.conftest import scan_args


def test_scan_plot_draws_the_figures_and_the_rendering(tmp_path, capsys):
    from tests.viz.conftest import assert_drawn

    assert main(scan_args(tmp_path, "--plot", "--log")) == 0
    out = capsys.readouterr().out
    for name in ("curve.png", "contour.png", "surface.png", "render.png"):
        assert f"wrote        {tmp_path / name}" in out
        assert_drawn(tmp_path / name)
    assert not (tmp_path / "scan.vti").exists()  # --plot draws pictures; render --vtk writes files


def test_render_a_partial_scan_into_vtk_files_that_match_it(tmp_path, capsys):
    import h5py
    import numpy as np
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOXML import vtkXMLImageDataReader

    import landscape

    assert main(scan_args(tmp_path)) == 0
    with h5py.File(tmp_path / "scan.h5", "r+") as f:  # as if cut off after the first two rows of x
        f["done"][2:] = False
        f["values/loss"][2:] = np.nan
        f["values/accuracy"][2:] = np.nan
    capsys.readouterr()
    assert main(["render", str(tmp_path), "--vtk", "--out", str(tmp_path / "drawn")]) == 0
    out = capsys.readouterr().out
    assert "6 of 15 points computed (the rest are drawn as gaps)" in out
    assert sorted(f.name for f in (tmp_path / "drawn").iterdir()) == ["scan.vti", "scan.vts", "view.py"]
    reader = vtkXMLImageDataReader()
    reader.SetFileName(str(tmp_path / "drawn" / "scan.vti"))
    reader.Update()
    data = reader.GetOutput().GetPointData()
    partial = landscape.load_scan(tmp_path / "scan.h5")
    np.testing.assert_array_equal(vtk_to_numpy(data.GetArray("loss")), partial.values["loss"].ravel(order="F"))
    np.testing.assert_array_equal(vtk_to_numpy(data.GetArray("valid")), partial.done.ravel(order="F"))
    assert main(["render", str(tmp_path / "scan.h5"), "--png", "--zmax", "3", "--out", str(tmp_path / "png")]) == 0
    assert sorted(f.name for f in (tmp_path / "png").iterdir()) == ["contour.png", "curve.png", "render.png",
                                                                    "surface.png"]


@pytest.mark.parametrize("extra, message", [
    ([], "holds no scan.h5"),
    (["--zmax", "inf"], "--zmax must be a finite number"),
    (["--zmax", "-1", "--log"], "--zmax -1 with --log: the clip must be positive"),
    (["--zmax", "1e-9"], "--zmax 1e-09 is at or below the lowest loss"),
])
def test_render_bad_input_exits_2_with_one_line(extra, message, tmp_path, capsys):
    if extra:
        assert main(scan_args(tmp_path)) == 0
        capsys.readouterr()
    assert main(["render", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("landscape render: error: ")


def test_scan_checks_its_drawing_options_before_scanning(tmp_path, capsys):
    assert main(scan_args(tmp_path, "--plot", "--log", "--zmax", "0")) == 2
    assert "--zmax 0 with --log" in capsys.readouterr().err and not (tmp_path / "scan.h5").exists()


def test_scan_says_when_the_run_reaches_beyond_the_grid(tmp_path, capsys, digits_mlp):
    folder = tmp_path / "run"
    folder.mkdir()
    state = digits_mlp.model.state_dict()
    g = torch.Generator().manual_seed(0)
    for i, (a, b) in enumerate([(1.0, 0.0), (0.0, 1.0), (0.0, 0.0)]):  # a triangle: two PCA directions
        torch.save({k: v + a * torch.randn(v.shape, generator=g) + b * torch.randn(v.shape, generator=g)
                    for k, v in state.items()}, folder / f"step{i}.pt")
    assert main(["scan", "--directions", "pca", "--trajectory", str(folder), "--grid", "-0.1:0.1:3", "--grid",
                 "-0.1:0.1:3", "--out", str(tmp_path / "o"), "--plot"]) == 0
    out = capsys.readouterr().out
    assert "the run reaches beyond the grid (x from" in out and "widen --grid" in out
    assert (tmp_path / "o" / "render.png").exists()
