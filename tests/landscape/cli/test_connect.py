"""landscape connect: barriers, alignment and curves against the API; checkpoints that do not fit."""

import re

import pytest
import torch

from landscape.cli import main
from tests.landscape.cli.conftest import read_json


@pytest.fixture(scope="module")
def mlp_checkpoints(tmp_path_factory, digits_mlp):
    import landscape

    folder = tmp_path_factory.mktemp("ends")
    torch.save(digits_mlp.model.state_dict(), folder / "a.pt")
    torch.save(landscape.load("digits-mlp", seed=1).model.state_dict(), folder / "b.pt")
    return folder / "a.pt", folder / "b.pt"


def test_connect_reports_the_barriers_alignment_and_curve_of_the_api(mlp_checkpoints, tmp_path, capsys):
    import copy

    import numpy as np

    import landscape
    from landscape.core.objective import Objective
    from landscape.paths import curves
    from landscape.paths.align import weight_matching
    from tests.viz.conftest import assert_drawn

    a, b = mlp_checkpoints
    assert main(["connect", "--a", str(a), "--b", str(b), "--align", "--curve", "bezier", "--epochs", "5",
                 "--plane", "9", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = read_json(tmp_path / "connect.json")
    assert list(summary["paths"]) == ["line", "aligned line", "bezier, aligned"]
    problem = landscape.load("digits-mlp", steps=0)
    model_a, model_b = (landscape.load_checkpoint(copy.deepcopy(problem.model), f) for f in (a, b))
    obj = Objective(model_a, problem.loss_fn, problem.data)
    line = curves.interpolate(obj, model_a, model_b, progress=False)
    aligned = weight_matching(model_a, model_b, problem.data[0][:4]).apply(model_b)
    straight = curves.interpolate(obj, model_a, aligned, progress=False)
    for label, api in (("line", line), ("aligned line", straight)):
        printed = re.search(rf"^{label}\s+barrier (\S+) \(linear, Entezari\) at t = \S+, (\S+) \(mean", out,
                            re.M).groups()
        assert [float(v) for v in printed] == pytest.approx([api.barrier_linear, api.barrier_mean], rel=1e-3)
        np.testing.assert_allclose(summary["paths"][label]["values"]["loss"], api.values["loss"], rtol=1e-6)
    assert straight.barrier_linear < 0.5 * line.barrier_linear  # alignment lowers the barrier
    curve = curves.Curve.load(tmp_path / "curve.pt")
    assert curve.kind == "bezier" and torch.equal(curve.points[-1], obj.space.flatten(dict(aligned.named_parameters())))
    api = curves.evaluate_curve(obj, curve, progress=False)
    assert summary["paths"]["bezier, aligned"]["barrier_linear"] == pytest.approx(api.barrier_linear, rel=1e-9)
    assert float(re.search(r"outputs unchanged to (\S+) ", out).group(1)) < 1e-5
    for name in ("paths.png", "plane/contour.png", "plane/render.png"):
        assert_drawn(tmp_path / name)
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOXML import vtkXMLPolyDataReader

    from tests.viz.test_vtkio import arrays, read

    poly = read(vtkXMLPolyDataReader, tmp_path / "bezier_aligned.vtp")  # (x, y) in the curve's plane, z the loss
    points = vtk_to_numpy(poly.GetPoints().GetData())
    np.testing.assert_allclose(points[:, 2], api.values["loss"], rtol=1e-6)
    np.testing.assert_allclose(points[[0, -1], :2], [[0, 0], [1, 0]], atol=1e-6)
    assert set(arrays(poly)) == {"t", "loss", "accuracy", "valid", "off_plane"} and arrays(poly)["off_plane"].max() < 1e-6 * curve.length()


def test_connect_refuses_checkpoints_that_do_not_fit_naming_the_tensor(mlp_checkpoints, tmp_path, capsys):
    import landscape

    a, b = mlp_checkpoints
    torch.save(landscape.load("digits-mlp", hidden=16, steps=0).model.state_dict(), tmp_path / "narrow.pt")
    state = torch.load(b)
    state["2.bias"][3] = float("inf")
    torch.save(state, tmp_path / "broken.pt")
    cases = [(["--b", str(tmp_path / "narrow.pt")], r"--b: checkpoint .*narrow.pt does not fit the model: "
                                                    r"0.weight has shape \(16, 64\) in the checkpoint but \(32, 64\)"),
             (["--b", str(tmp_path / "broken.pt")], "--b: checkpoint .*broken.pt has non-finite values in 2.bias"),
             (["--b", str(b), "--range", "0.2:1"], "START must be at most 0"),
             (["--b", str(b), "--plane", "9"], "--plane draws the plane through a curve: give --curve too"),
             (["--b", str(tmp_path / "nope.pt")], "--b: checkpoint .*nope.pt does not exist"),
             (["--b", str(a), "--curve", "bezier"], "models a and b are identical"),
             (["--b", str(b), "--curve", "bezier", "--lr", "inf"], "--lr must be a positive number")]
    for extra, message in cases:
        assert main(["connect", "--a", str(a), *extra, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and re.search(message, err), err


def test_connect_on_batchnorm_networks_past_the_ends_and_along_a_chain(tmp_path, capsys):
    import landscape

    for seed in (0, 1):
        torch.save(landscape.load("digits-cnn", seed=seed, steps=20).model.state_dict(), tmp_path / f"{seed}.pt")
    assert main(["connect", "--problem", "digits-cnn", "--a", str(tmp_path / "0.pt"), "--b", str(tmp_path / "1.pt"),
                 "--range", "-0.5:1.5", "--points", "9", "--curve", "polychain", "--bends", "2", "--epochs", "2",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    summary = read_json(tmp_path / "out" / "connect.json")
    line, chain = summary["paths"]["line"], summary["paths"]["polychain"]
    assert line["statistics"] == "interpolated" and chain["statistics"] == "recomputed"
    assert line["t"][0] == -0.5 and line["t"][-1] == 1.5 and 0.0 in line["t"] and 1.0 in line["t"]
    assert all(v is not None for v in line["values"]["loss"])  # statistics held at the ends' past them: no NaN
    assert chain["bends"] == 2 and len(chain["t"]) == 9
    assert "BatchNorm statistics interpolated" in out and "BatchNorm recomputed" in out


BRANCHES = '''
import torch
from torch import nn
from torch.nn import functional as F


class Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.hidden, self.out = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(6, 5), nn.Linear(5, 2)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(torch.cat([self.a(x), self.b(x)], 1))))


def problem(seed: int = 0):
    torch.manual_seed(seed)
    X = torch.randn(32, 4, generator=torch.Generator().manual_seed(9))
    return Branches(), F.cross_entropy, (X, (X[:, 0] > 0).long())
'''


def test_connect_says_which_units_align_left_in_place_and_why(tmp_path, capsys):
    import landscape

    (tmp_path / "branches.py").write_text(BRANCHES)
    spec = f"{tmp_path / 'branches.py'}:problem"
    for seed in (0, 1):
        torch.save(landscape.load(spec, seed=seed).model.state_dict(), tmp_path / f"{seed}.pt")
    assert main(["connect", "--problem", spec, "--a", str(tmp_path / "0.pt"), "--b", str(tmp_path / "1.pt"),
                 "--align", "--points", "5", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    # the concatenated branches' units stay (a's and b's rows, hidden's columns); hidden's own 5 units move
    assert ("align        5 parameter dims left in place, e.g. a.weight dim 0: cat in forward (operations align "
            "does not follow keep their units)") in out
    alignment = read_json(tmp_path / "out" / "connect.json")["alignment"]
    assert alignment["units"] == {"hidden": 5}
    assert set(alignment["pinned"]) == {"a.weight dim 0", "a.bias dim 0", "b.weight dim 0", "b.bias dim 0",
                                        "hidden.weight dim 1"}
