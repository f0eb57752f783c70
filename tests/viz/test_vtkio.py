"""VTK files read back with VTK's own readers: dimensions, array names and values equal the scan's."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkIOXML import vtkXMLImageDataReader, vtkXMLPolyDataReader, vtkXMLStructuredGridReader

from tests.viz.conftest import TRAJECTORY, synthetic_scan
from viz import vtkio


def read(reader_class, path):
    reader = reader_class()
    reader.SetFileName(str(path))
    reader.Update()
    return reader.GetOutput()


def arrays(data) -> dict:
    point_data = data.GetPointData()
    return {point_data.GetArrayName(i): vtk_to_numpy(point_data.GetArray(i)) for i in range(point_data.GetNumberOfArrays())}


def dimensions(data) -> tuple:
    dims = [0, 0, 0]
    data.GetDimensions(dims)
    return tuple(dims)


def grid_order(values):
    """The scan's (nx, ny[, nz]) array in VTK point order: index i + nx (j + ny l), x fastest."""
    return np.asarray(values).ravel(order="F")


@pytest.mark.parametrize("log, zmax", [(False, None), (True, None), (False, 4.0), (True, 4.0)])
def test_height_field_reads_back_on_a_non_square_grid(scan2d, tmp_path, log, zmax):
    path = vtkio.write_vts(scan2d, tmp_path / "scan.vts", log=log, zmax=zmax)
    assert b'<AppendedData encoding="raw">' in path.read_bytes()  # binary appended, not ASCII or base64
    grid = read(vtkXMLStructuredGridReader, path)
    assert dimensions(grid) == (7, 4, 1)
    got = arrays(grid)
    assert set(got) == {"loss", "accuracy", "valid", "height"}
    loss = scan2d.values["loss"]
    np.testing.assert_array_equal(got["loss"], grid_order(loss))  # raw, NaN kept, untouched by log or clip
    np.testing.assert_array_equal(got["accuracy"], grid_order(scan2d.values["accuracy"]))
    valid = np.isfinite(loss)
    np.testing.assert_array_equal(got["valid"], grid_order(valid.astype(np.uint8)))
    assert got["valid"].sum() == 7 * 4 - 1
    expected = np.minimum(loss, zmax) if zmax is not None else loss
    expected = np.log10(expected) if log else expected
    xyz = vtk_to_numpy(grid.GetPoints().GetData())
    X, Y = np.meshgrid(scan2d.axes[0], scan2d.axes[1], indexing="ij")
    np.testing.assert_array_equal(xyz[:, 0], grid_order(X))
    np.testing.assert_array_equal(xyz[:, 1], grid_order(Y))
    flat_valid = grid_order(valid)
    np.testing.assert_allclose(xyz[flat_valid, 2], grid_order(expected)[flat_valid], rtol=1e-15)
    np.testing.assert_array_equal(got["height"], xyz[:, 2])
    assert xyz[~flat_valid, 2] == pytest.approx(np.nanmax(expected))  # a NaN point sits at the top, flagged


@pytest.mark.parametrize("shape", [(6,), (7, 4), (5, 4, 3)])
def test_image_data_of_1d_2d_and_3d_scans(tmp_path, shape):
    scan = synthetic_scan(shape, nan=((1, 2, 0), (4, 0, 2)))
    image = read(vtkXMLImageDataReader, vtkio.write_vti(scan, tmp_path / "scan.vti"))
    assert dimensions(image) == tuple(shape) + (1,) * (3 - len(shape))
    for a, coords in enumerate(scan.axes):
        assert image.GetOrigin()[a] == coords[0]
        assert image.GetSpacing()[a] == pytest.approx(coords[1] - coords[0], rel=1e-12)
    got = arrays(image)
    for name, values in scan.values.items():
        np.testing.assert_array_equal(got[name], grid_order(values))
    np.testing.assert_array_equal(got["valid"], grid_order(np.isfinite(scan.values["loss"])))
    assert got["valid"].sum() == np.prod(shape) - 2
    # point (i, j, l) of VTK is the scan's values[i, j, l]
    i = (shape[0] - 3,) + tuple(1 for _ in shape[1:])
    point = image.ComputePointId(list(i) + [0] * (3 - len(shape)))
    assert got["loss"][point] == scan.values["loss"][i]


def test_image_data_needs_evenly_spaced_axes(scan2d, tmp_path):
    scan2d.axes[0] = scan2d.axes[0] ** 3
    with pytest.raises(ValueError, match="axis 0 is not evenly spaced"):
        vtkio.write_vti(scan2d, tmp_path / "scan.vti")


def test_a_height_field_needs_a_2d_scan(tmp_path):
    with pytest.raises(ValueError, match="needs a 2D scan, this one has 3 axes"):
        vtkio.write_vts(synthetic_scan((3, 3, 3)), tmp_path / "scan.vts")


def test_trajectory_polyline_lies_on_the_surface(scan2d, tmp_path):
    poly = read(vtkXMLPolyDataReader, vtkio.write_trajectory(scan2d, tmp_path / "trajectory.vtp"))
    m = len(TRAJECTORY)
    assert poly.GetNumberOfPoints() == m and poly.GetNumberOfLines() == 1
    assert poly.GetLines().GetNumberOfConnectivityIds() == m  # one line through all points in order
    xyz = vtk_to_numpy(poly.GetPoints().GetData())
    C = np.array(TRAJECTORY)
    np.testing.assert_array_equal(xyz[:, :2], C)
    # the loss is bilinear in (x, y), so bilinear interpolation of the grid is exact; the NaN point
    # (index (1, 2), at x = -0.5) is not under the trajectory
    exact = 3.0 + C[:, 0] + 2 * C[:, 1] + 0.5 * C[:, 0] * C[:, 1]
    np.testing.assert_allclose(xyz[:, 2], exact, rtol=1e-13)
    got = arrays(poly)
    np.testing.assert_array_equal(got["step"], np.arange(m))
    np.testing.assert_array_equal(got["loss"], scan2d.trajectory["loss"])
    np.testing.assert_array_equal(got["residual"], scan2d.trajectory["residuals"])
    np.testing.assert_array_equal(got["height"], xyz[:, 2])


def test_trajectory_of_a_3d_scan_is_its_coordinates(tmp_path):
    C = [[0.1, 0.0, 0.2], [0.5, -0.1, 0.4]]
    scan = synthetic_scan((4, 3, 3), trajectory=C)
    poly = read(vtkXMLPolyDataReader, vtkio.write_trajectory(scan, tmp_path / "t.vtp"))
    np.testing.assert_array_equal(vtk_to_numpy(poly.GetPoints().GetData()), C)


def test_polyline_rejects_mismatched_arrays(tmp_path):
    with pytest.raises(ValueError, match="array 'loss' has"):
        vtkio.write_polyline(tmp_path / "p.vtp", np.zeros((3, 3)), {"loss": [1.0, 2.0]})
    with pytest.raises(ValueError, match="must be \\[m, 3\\]"):
        vtkio.write_polyline(tmp_path / "p.vtp", np.zeros((3, 4)))


def test_pvd_collection_lists_time_steps_relative_to_itself(tmp_path):
    files = [vtkio.write_vts(synthetic_scan((4, 3)), tmp_path / "series" / f"step_{t}.vts") for t in (0, 50, 100)]
    pvd = vtkio.write_pvd(tmp_path / "series.pvd", list(zip([0, 50, 100], files)))
    rows = ET.parse(pvd).getroot().find("Collection").findall("DataSet")
    assert [float(r.get("timestep")) for r in rows] == [0.0, 50.0, 100.0]
    assert [r.get("file") for r in rows] == ["series/step_0.vts", "series/step_50.vts", "series/step_100.vts"]
    for row in rows:
        assert dimensions(read(vtkXMLStructuredGridReader, tmp_path / row.get("file"))) == (4, 3, 1)


def test_pvd_paths_given_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    vtkio.write_vts(synthetic_scan((4, 3)), "run/series/a.vts")
    pvd = vtkio.write_pvd("run/series.pvd", [(1.5, "run/series/a.vts")])
    (row,) = ET.parse(pvd).getroot().find("Collection").findall("DataSet")
    assert row.get("file") == "series/a.vts" and float(row.get("timestep")) == 1.5


def test_a_trajectory_that_leaves_the_grid_is_flagged_not_invented(tmp_path):
    C = [[5.0, 0.1], [1.5, 0.1], [0.5, -0.2], [0.0, 0.0]]  # starts at x = 5, beyond the grid's 2
    scan = synthetic_scan((7, 4), trajectory=C)
    got = vtkio.trajectory_points(scan)
    assert np.isnan(got[0, 2]) and np.isfinite(got[1:, 2]).all()
    poly = read(vtkXMLPolyDataReader, vtkio.write_trajectory(scan, tmp_path / "t.vtp"))
    a = arrays(poly)
    np.testing.assert_array_equal(a["inside"], [0, 1, 1, 1])
    assert np.isnan(a["height"][0])
    xyz = vtk_to_numpy(poly.GetPoints().GetData())
    assert xyz[0, 2] == pytest.approx(np.nanmax(scan.values["loss"]))  # parked at the top, finite
