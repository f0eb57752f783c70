"""The landscape command: its numbers against the API, and one-line errors with exit code 2."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from landscape.cli import main


def field(text: str, key: str) -> str:
    return re.search(rf"^{key}\s+(.*)$", text, re.M).group(1)


@pytest.mark.parametrize("name", ["quadratic", "digits-mlp", "digits-cnn"])
def test_info_on_each_builtin(name, capsys, request):
    assert main(["info", "--problem", name]) == 0
    out = capsys.readouterr().out
    assert field(out, "HVP check").endswith(": ok")
    if name == "quadratic":
        assert field(out, "parameters").startswith("100 in 1 tensors, float64")
        return
    problem = request.getfixturevalue(name.replace("-", "_"))  # the same deterministic training
    X, y = problem.data
    with torch.no_grad():
        outputs = problem.model(X)
        loss = F.cross_entropy(outputs, y).item()
        accuracy = (outputs.argmax(-1) == y).float().mean().item()
    assert float(field(out, "loss")) == pytest.approx(loss, rel=1e-5)
    assert float(field(out, "accuracy").split()[0]) == pytest.approx(accuracy, abs=1e-4)
    n = sum(p.numel() for p in problem.model.parameters())
    assert field(out, "parameters").startswith(f"{n:,} in")


def test_info_with_a_checkpoint_and_a_subset(tmp_path, capsys, digits_mlp):
    torch.save(digits_mlp.model.state_dict(), tmp_path / "mlp.pt")
    assert main(["info", "--checkpoint", str(tmp_path / "mlp.pt"), "--params", "2.*", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert field(out, "parameters") == "330 in 2 tensors, float64 on cpu"


@pytest.mark.parametrize("args, message", [
    (["info", "--problem", "resnet"], "unknown problem 'resnet'"),
    (["info", "--problem", "missing.py:make"], "problem file missing.py does not exist"),
    (["info", "--problem", "quadratic", "--checkpoint", "nope.pt"], "checkpoint nope.pt does not exist"),
    (["info", "--problem", "quadratic", "--params", "fc*"], "'fc\\*' matches no trainable parameter"),
    (["info", "--device", "gpu0"], "not a device name"),
])
def test_bad_input_exits_2_with_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err) and err.startswith("landscape info: error: ")


def test_a_checkpoint_for_another_model_exits_2(tmp_path, capsys):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    assert main(["info", "--problem", "quadratic", "--checkpoint", str(tmp_path / "other.pt")]) == 2
    assert "does not fit the model: missing theta, A, center; unexpected weight" in capsys.readouterr().err


def test_demo(tmp_path, capsys, digits_mlp):
    import xml.etree.ElementTree as ET

    import h5py
    import numpy as np

    import landscape
    from tests.viz.conftest import assert_drawn

    assert main(["demo", "--out", str(tmp_path), "--points", "8"]) == 0
    out = capsys.readouterr().out
    announced = [Path(line.strip()) for line in out.split("files in")[1].splitlines()[1:] if line.startswith("  ")]
    names = {str(f.relative_to(tmp_path)) for f in announced}
    for plane in ("random", "pca"):
        assert {f"{plane}/{name}" for name in ("contour.png", "surface.png", "render.png", "scan.vti", "scan.vts",
                                               "trajectory.vtp", "view.py")} <= names
    assert {"density.png", "series.pvd"} <= names
    for f in announced:
        assert f.stat().st_size > 0
        if f.suffix == ".png":
            assert_drawn(f)
    rows = ET.parse(tmp_path / "series.pvd").getroot().find("Collection").findall("DataSet")
    assert [int(float(r.get("timestep"))) for r in rows] == [0, 80, 160, 220, 300]
    assert all((tmp_path / r.get("file")) in announced for r in rows)
    pca = landscape.load_scan(tmp_path / "pca" / "scan.h5")
    assert pca.shape == (9, 9) and pca.done.all() and len(pca.trajectory["names"]) == 16
    assert pca.trajectory["loss"][-1] == pytest.approx(pca.center_values["loss"], rel=1e-6)  # ends at the model
    assert re.search(r"^done\s+\d+ s; \d+ files in", out, re.M)
    assert field(out, "parameters").startswith("2,410 in 4 tensors")
    assert field(out, "HVP check").endswith(": ok")
    obj = digits_mlp.objective(dtype=torch.float64)  # the dense float64 Hessian of the same trained model
    eye = torch.eye(obj.space.n, dtype=torch.float64)
    H = torch.cat([landscape.hessian(obj) @ eye[i:i + 256] for i in range(0, obj.space.n, 256)]).numpy()
    spectrum = np.linalg.eigvalsh((H + H.T) / 2)[::-1]
    printed = [float(v) for v in field(out, "top of H").split(" (")[0].split(", ")]
    assert np.allclose(printed, spectrum[:3], rtol=1e-5) and "converged)" in out
    trace, stderr = map(float, field(out, "trace").split(" (")[0].split(" +- "))
    assert abs(trace - spectrum.sum()) < 4 * stderr
    below, threshold = re.fullmatch(r"(\S+)% of the spectrum below (\S+) .*", field(out, "density")).groups()
    assert float(threshold) == pytest.approx(-1e-3 * spectrum[0], rel=0.01)
    assert float(below) / 100 == pytest.approx((spectrum < float(threshold)).mean(), abs=0.002)  # 8 SLQ probes
    for plane in ("random", "pca"):
        result = landscape.load_scan(tmp_path / plane / "scan.h5")
        line = field(out, f"{plane} plane")
        centre = float(re.search(r"centre loss (\S+?),", line).group(1))
        assert centre == pytest.approx(float(field(out, "loss")), rel=1e-4)
        (x, y), lowest = result.minimum()
        assert re.search(rf"lowest {lowest:.4g} at \({x:.3g}, {y:.3g}\)", line)
    # the checkpoints, read back independently: PCA's explained variance and the random plane's miss
    model = landscape.load("digits-mlp", steps=0).model
    T = []
    for f in sorted((tmp_path / "checkpoints").glob("step_*.pt")):
        model.load_state_dict(torch.load(f, weights_only=True))
        T.append(torch.cat([p.detach().double().reshape(-1) for p in model.parameters()]).numpy())
    T = np.array(T)
    M = (T - T[-1]) - (T - T[-1]).mean(axis=0)
    s = np.linalg.svd(M, compute_uv=False)
    share = re.search(r"explained variance (\d+)%, (\d+)%", field(out, "pca plane")).groups()
    assert [int(v) for v in share] == [round(100 * v) for v in s[:2] ** 2 / (s ** 2).sum()]
    placed = re.findall(r"^trajectory\s+16 checkpoints projected; off-plane distance median (\S+)%, up to (\S+)%",
                        out, re.M)
    X, y = digits_mlp.data
    for plane, (median, most) in zip(("random", "pca"), placed):  # printed in this order
        with h5py.File(tmp_path / plane / "scan.h5") as f:
            D, centre = f["directions"][()].astype(np.float64), f["center"][()].astype(np.float64)
            stored_loss = f["trajectory/loss"][()]
        R = T - centre
        residual = R - np.linalg.lstsq(D.T, R.T, rcond=None)[0].T @ D
        relative = np.linalg.norm(residual, axis=1)[:-1] / np.linalg.norm(R, axis=1)[:-1]  # the last is the centre
        assert float(median) == pytest.approx(100 * np.median(relative), abs=0.05)
        assert float(most) == pytest.approx(100 * relative.max(), abs=0.05)
        with torch.no_grad():  # each checkpoint's own loss
            for i, f in enumerate(sorted((tmp_path / "checkpoints").glob("step_*.pt"))):
                model.load_state_dict(torch.load(f, weights_only=True))
                assert stored_loss[i] == pytest.approx(F.cross_entropy(model(X), y).item(), rel=1e-5)
    assert len(placed) == 2 and float(placed[0][0]) > 99 and float(placed[1][0]) < 50  # PCA holds the run


def test_the_command_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "landscape", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "info" in done.stdout and "demo" in done.stdout
    done = subprocess.run([sys.executable, "-m", "landscape", "info", "--dtype", "float16"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice: 'float16'" in done.stderr


def test_a_model_that_does_not_fit_its_data_exits_2(tmp_path, capsys):
    (tmp_path / "misfit.py").write_text(
        "import torch\nfrom torch import nn\nfrom torch.nn import functional as F\n"
        "def problem():\n    return nn.Linear(5, 3), F.cross_entropy, (torch.randn(4, 7), torch.zeros(4, dtype=torch.long))\n")
    assert main(["info", "--problem", str(tmp_path / "misfit.py")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the model failed on its data: mat1 and mat2 shapes cannot be multiplied" in err


def test_spectrum_writes_the_known_spectrum(tmp_path, capsys):
    import json

    import numpy as np

    assert main(["spectrum", "--problem", "quadratic", "--k", "4", "--tol", "1e-10", "--trace", "--trace-budget",
                 "300", "--plot", "--probes", "4", "--steps", "30", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "spectrum.json").read_text())
    truth = np.logspace(2, -2, 100)
    assert np.allclose(summary["eigenvalues"]["eigenvalues"], truth[:4], rtol=1e-10)
    assert summary["eigenvalues"]["converged"] and "converged at tol 1e-10" in out
    assert summary["trace"]["estimate"] == pytest.approx(truth.sum(), rel=1e-10)  # the sketch spans all 100
    assert summary["density"]["n_matvecs"] == 4 * 30 and (tmp_path / "density.png").stat().st_size > 10_000
    assert "0.00% of the spectrum below -0.1 (-1e-3 of the largest |eigenvalue|)" in out  # all 100 are positive
    printed = [float(line.split()[1]) for line in out.splitlines() if re.match(r"\s+\d+\s", line)]
    assert np.allclose(printed, truth[:4], rtol=1e-8)


def test_spectrum_bad_k_exits_2(tmp_path, capsys):
    assert main(["spectrum", "--problem", "quadratic", "--k", "0", "--out", str(tmp_path)]) == 2
    assert "--k must be at least 1" in capsys.readouterr().err
    assert main(["spectrum", "--problem", "quadratic", "--k", "60", "--which", "both", "--out", str(tmp_path)]) == 2
    assert "asked for 120 eigenvalues of a 100 x 100 operator" in capsys.readouterr().err


def test_spectrum_says_when_float32_products_limit_the_tolerance(tmp_path, capsys):
    assert main(["spectrum", "--problem", "quadratic", "--dtype", "float32", "--k", "1", "--tol", "1e-12",
                 "--out", str(tmp_path)]) == 0
    assert "NOT converged: the measured residuals stay above tol" in capsys.readouterr().out


# -- landscape scan ------------------------------------------------------------------------

def scan_args(out, *extra):
    return ["scan", "--grid", "-1:1:5", "--grid", "-0.5:0.5:3", "--out", str(out), *extra]


def test_scan_writes_the_store_and_a_summary_equal_to_the_api(tmp_path, capsys, digits_mlp):
    import json

    import numpy as np

    import landscape
    from landscape.scans import directions

    assert main(scan_args(tmp_path)) == 0
    out = capsys.readouterr().out
    obj = digits_mlp.objective()
    api = landscape.scan(obj, directions.random(obj, seed=0), ["-1:1:5", "-0.5:0.5:3"], metrics=digits_mlp.metrics,
                         progress=False)
    stored = landscape.load_scan(tmp_path / "scan.h5")
    assert stored.values["loss"].shape == (5, 3)
    for name in ("loss", "accuracy"):
        assert np.array_equal(stored.values[name], api.values[name])
    summary = json.loads((tmp_path / "scan.json").read_text())
    assert summary["center_values"]["loss"] == api.values["loss"][2, 1]
    assert summary["minimum"]["loss"] == np.nanmin(api.values["loss"])
    assert summary["points_computed"] == 15 and summary["directions"]["recipe"]["norm"] == "filter"
    assert float(field(out, "centre").split()[1].rstrip(",")) == pytest.approx(api.values["loss"][2, 1], rel=1e-5)


def test_scan_resumes_a_cut_off_store_and_refuses_to_overwrite(tmp_path, capsys):
    import h5py
    import numpy as np

    assert main(scan_args(tmp_path, "--chunk", "3")) == 0
    with h5py.File(tmp_path / "scan.h5", "r+") as f:  # as if killed after the first chunk (one row of 3)
        whole = f["values/loss"][()]
        f["done"][1:] = False
        f["values/loss"][1:] = np.nan
    capsys.readouterr()
    assert main(scan_args(tmp_path)) == 2
    assert "exists: pass --resume" in capsys.readouterr().err
    assert main(scan_args(tmp_path, "--resume")) == 0
    out = capsys.readouterr().out
    assert field(out, "resuming").endswith("3 of 15 points done")
    assert field(out, "scan").startswith("5 x 3 points along random directions: 12 computed")
    with h5py.File(tmp_path / "scan.h5", "r") as f:
        assert np.array_equal(f["values/loss"][()], whole) and f["done"][()].all()
    assert main(scan_args(tmp_path, "--resume", "--seed", "1")) == 2
    assert "holds a different scan" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--grid", "-1:1"], "grid axis '-1:1' is not start:stop:num"),
    (["--grid", "1:-1:0"], "num must be at least 2"),
    (["--grid", "-1:1:3", "--grid", "-1:1:3", "--grid", "-1:1:3"], "a scan has 1, 2 or 3 axes"),
    (["--directions", "pca"], "--directions pca needs --trajectory"),
    (["--trajectory", "nowhere"], "--trajectory nowhere is not a directory"),
    (["--chunk", "0"], "--chunk must be at least 1"),
])
def test_scan_bad_input_exits_2_with_one_line(extra, message, tmp_path, capsys):
    assert main(scan_args(tmp_path / "o", *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("landscape scan: error: ")


def test_scan_with_a_checkpoint_for_another_model_exits_2(tmp_path, capsys):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    assert main(scan_args(tmp_path / "o", "--checkpoint", str(tmp_path / "other.pt"))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit the model" in err


def test_scan_along_pca_directions_places_the_trajectory_on_its_plane(tmp_path, capsys):
    import json

    import landscape

    problem = landscape.load("digits-mlp", steps=0)
    optimizer = torch.optim.SGD(problem.model.parameters(), lr=0.5)
    X, y = problem.data
    folder = tmp_path / "run"
    folder.mkdir()
    for step in range(12):  # natural order: step2 before step10
        if step in (2, 7, 11):
            torch.save(problem.model.state_dict(), folder / f"step{step}.pt")
        optimizer.zero_grad()
        F.cross_entropy(problem.model(X), y).backward()
        optimizer.step()
    assert main(["scan", "--problem", "digits-mlp", "--directions", "pca", "--trajectory", str(folder),
                 "--grid", "-1:1:3", "--grid", "-1:1:3", "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "scan.json").read_text())
    assert summary["trajectory"]["names"] == ["step2.pt", "step7.pt", "step11.pt"]
    # three checkpoints span a plane through the last one: every one lies on it, the last at the origin
    assert max(summary["trajectory"]["relative"]) < 1e-5
    assert summary["trajectory"]["coords"][-1] == pytest.approx([0, 0], abs=1e-6)
    assert sum(summary["directions"]["explained_variance"]) == pytest.approx(1.0)
    stored = landscape.load_scan(tmp_path / "o" / "scan.h5")
    state = torch.load(folder / "step11.pt", weights_only=True)
    assert torch.equal(stored.center, torch.cat([state[k].reshape(-1) for k in ("0.weight", "0.bias", "2.weight",
                                                                                  "2.bias")]))


def test_scan_along_hessian_directions_reuses_them_on_resume(tmp_path, capsys):
    import json

    args = ["scan", "--problem", "quadratic", "--directions", "hessian", "--grid", "-1:1:3", "--out", str(tmp_path)]
    assert main(args) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "scan.json").read_text())
    assert summary["directions"]["recipe"]["eigenvalues"] == pytest.approx([100.0], rel=1e-9)
    assert main(args + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert "not recomputed" in out and field(out, "scan").endswith("0 computed in 0.00 s (loop)")


def test_an_interrupted_cli_scan_says_how_to_continue(tmp_path, capsys):
    import h5py

    flag = tmp_path / "interrupt"
    flag.touch()
    (tmp_path / "problem.py").write_text(f'''
from pathlib import Path
import landscape

calls = [0]


def stop_at_the_fifth_point(outputs, y):  # call 1 evaluates the centre
    calls[0] += 1
    if calls[0] == 6 and Path({str(flag)!r}).exists():
        raise KeyboardInterrupt
    return outputs.mean()


def problem():
    made = landscape.load("quadratic", n=4)
    made.metrics = {{"q": stop_at_the_fifth_point}}
    return made
''')
    args = ["scan", "--problem", f"{tmp_path / 'problem.py'}:problem", "--directions", "hessian", "--grid", "-1:1:9",
            "--chunk", "2", "--out", str(tmp_path / "o")]
    assert main(args) == 130
    last = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert last == (f"landscape scan: interrupted; 4 of 9 points are saved in {tmp_path / 'o' / 'scan.h5'}: "
                    f"the same command with --resume continues")
    flag.unlink()
    assert main(args + ["--resume"]) == 0
    with h5py.File(tmp_path / "o" / "scan.h5", "r") as f:
        assert f["done"][()].all() and abs(f["values/q"][4] - f["values/loss"][4]) < 1e-12  # the centre


def test_pca_scan_of_a_batchnorm_run_is_centred_on_its_last_checkpoint(tmp_path):
    import json

    import landscape

    problem = landscape.load("digits-cnn", steps=0)
    model = problem.model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    X, y = problem.data
    folder = tmp_path / "run"
    folder.mkdir()
    for step in range(4):  # train mode: the running statistics move with every step
        optimizer.zero_grad()
        F.cross_entropy(model(X[:256]), y[:256]).backward()
        optimizer.step()
        torch.save(model.state_dict(), folder / f"epoch{step}.pt")
    assert main(["scan", "--problem", "digits-cnn", "--directions", "pca", "--trajectory", str(folder),
                 "--grid", "-1:1:3", "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "scan.json").read_text())
    last = landscape.load("digits-cnn", steps=0).model
    last.load_state_dict(torch.load(folder / "epoch3.pt", weights_only=True))
    with torch.no_grad():
        expected = F.cross_entropy(last.eval()(X), y).item()
    assert summary["center_values"]["loss"] == pytest.approx(expected, rel=1e-5)
    for i, own in enumerate(summary["trajectory"]["loss"]):  # each with its own running statistics
        model = landscape.load("digits-cnn", steps=0).model
        model.load_state_dict(torch.load(folder / f"epoch{i}.pt", weights_only=True))
        with torch.no_grad():
            assert own == pytest.approx(F.cross_entropy(model.eval()(X), y).item(), rel=1e-5)


def test_scan_output_that_is_not_a_folder_or_too_large_a_grid_exits_2(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(scan_args(tmp_path / "file")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("landscape scan: error: ") and "file" in err
    assert main(["scan", "--grid", "-1:1:100000", "--grid", "-1:1:100000", "--out", str(tmp_path / "o")]) == 2
    assert "10,000,000,000 points, more than the 100,000,000" in capsys.readouterr().err


# -- landscape render, --plot ----------------------------------------------------------------

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


# -- landscape eos, --problem-arg ------------------------------------------------------------

def test_eos_tracks_sharpness_to_two_over_lr(tmp_path, capsys):
    import json

    import numpy as np

    assert main(["eos", "--lr", "0.1", "--lr", "0.15", "--problem-arg", "examples=256", "--steps", "2500",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(examples=256, loss=mse)" in out
    summary = json.loads((tmp_path / "eos.json").read_text())
    assert summary["problem_args"] == {"examples": 256, "loss": "mse"}
    for lr, run in zip((0.1, 0.15), summary["runs"]):
        last = run["sharpness"]["sharpness"][-1][0]
        assert last == pytest.approx(2 / lr, rel=0.15) and not run["diverged"]
        assert re.search(rf"^lr {lr:<9g} 2/lr {2 / lr:.4g}: sharpness \S+ at step 0, {last:.4g} at step 2500 "
                         rf"\({last * lr / 2:.2f} x 2/lr\)", out, re.M)
        assert len(run["loss"]) == 2501 and run["loss"][-1] < run["loss"][0]
    from tests.viz.conftest import assert_drawn

    assert_drawn(tmp_path / "eos.png")
    # the same numbers from the API: the CLI adds nothing of its own
    import landscape
    from dynamics.descent import gradient_descent
    from dynamics.edge_of_stability import SharpnessTracker

    obj = landscape.load("digits-mlp", steps=0, loss="mse", examples=256).objective()
    run = gradient_descent(obj, 0.1, 2500, tracker=SharpnessTracker(obj, lr=0.1, every=100), progress=False)
    assert np.allclose(run.sharpness.sharpness[:, 0], [row[0] for row in summary["runs"][0]["sharpness"]["sharpness"]])
    assert f"loss {run.loss[0]:.4g} -> {run.loss[2500]:.4g}; {run.sharpness.n_matvecs.mean():.1f} HVPs per estimate" in out


@pytest.mark.parametrize("extra, message", [
    (["--problem-arg", "loss"], "--problem-arg 'loss' is not KEY=VALUE"),
    (["--problem-arg", "colour=red"], "--problem-arg: .*unexpected keyword argument 'colour'"),
    (["--problem-arg", "loss=hinge"], "loss must be one of cross-entropy, mse"),
    (["--lr", "-1"], "--lr must be positive"),
])
def test_eos_bad_input_exits_2_with_one_line(extra, message, tmp_path, capsys):
    args = ["eos", "--steps", "3", "--out", str(tmp_path), *extra]
    assert main(args if "--lr" in extra else args + ["--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err) and err.startswith("landscape eos: error: ")


# -- landscape lyapunov, flow ----------------------------------------------------------------

def test_lyapunov_of_lorenz_prints_its_spectrum(tmp_path, capsys):
    import json

    from dynamics.lyapunov import flow_spectrum
    from dynamics.systems import Lorenz

    assert main(["lyapunov", "--system", "lorenz", "--steps", "3000", "--transient", "500", "--out",
                 str(tmp_path)]) == 0
    out = capsys.readouterr().out
    printed = [float(v) for v in re.findall(r"^\s+\d\s+(\S+)$", out, re.M)]
    api = flow_spectrum(Lorenz(), dt=0.01, steps=3000, transient=500)
    assert printed == pytest.approx(api.exponents, abs=1e-6)
    assert f"{api.n_steps} steps ({api.n_matvecs} tangent products)" in out
    assert float(field(out, "sum")) == pytest.approx(-(10 + 1 + 8 / 3), abs=1e-3)  # the trace of J, exactly
    summary = json.loads((tmp_path / "lyapunov.json").read_text())
    assert summary["kaplan_yorke"] == pytest.approx(float(field(out, "Kaplan-Yorke")), abs=1e-4)
    from tests.viz.conftest import assert_drawn

    assert_drawn(tmp_path / "lyapunov.png")


def test_lyapunov_of_gradient_descent_on_a_quadratic(tmp_path, capsys):
    import numpy as np

    # quadratic: eigenvalues 10^linspace(2, -2, 100); at lr 0.025 the top one gives |1 - 2.5| = 1.5 > 1
    assert main(["lyapunov", "--problem", "quadratic", "--lr", "0.025", "--k", "1", "--steps", "100", "--transient", "200",
                 "--out", str(tmp_path)]) == 0
    top = float(re.search(r"^\s+1\s+(\S+)$", capsys.readouterr().out, re.M).group(1))
    a = np.logspace(2, -2, 100)
    assert top == pytest.approx(np.log(np.abs(1 - 0.025 * a)).max(), abs=1e-6)


@pytest.mark.parametrize("extra, message", [
    (["--k", "2"], "--lr is needed"),
    (["--lr", "0.1"], "--k .* is needed"),
])
def test_lyapunov_bad_input_exits_2(extra, message, tmp_path, capsys):
    assert main(["lyapunov", "--problem", "quadratic", "--steps", "3", "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err)


def test_flow_compares_gd_with_both_flows(tmp_path, capsys):
    import json

    import numpy as np

    from dynamics.flow import compare_gd

    assert main(["flow", "--problem", "quadratic", "--lr", "0.004", "--steps", "50", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "flow.json").read_text())
    import landscape

    api = compare_gd(landscape.load("quadratic").objective(), 0.004, 50, every=10, progress=False)
    np.testing.assert_allclose(summary["to_flow"], api.to_flow, rtol=1e-9)
    gf, mf = map(float, re.search(r"GD to gradient flow (\S+), GD to the modified flow (\S+) ", out).groups())
    assert gf == pytest.approx(api.to_flow[-1], rel=1e-3) and mf == pytest.approx(api.to_modified[-1], rel=1e-3)
    assert mf < gf / 10  # O(lr^2) against O(lr)
    assert f"{api.flow.n_gradients + api.modified.n_gradients} gradients and {api.modified.n_matvecs} HVPs" in out
    assert float(re.search(r"gradient descent (\S+),", out).group(1)) == pytest.approx(api.gd_loss[-1], rel=1e-5)
    from tests.viz.conftest import assert_drawn

    assert_drawn(tmp_path / "flow.png")


@pytest.fixture(scope="module")
def mlp_checkpoints(tmp_path_factory, digits_mlp):
    import landscape

    folder = tmp_path_factory.mktemp("ends")
    torch.save(digits_mlp.model.state_dict(), folder / "a.pt")
    torch.save(landscape.load("digits-mlp", seed=1).model.state_dict(), folder / "b.pt")
    return folder / "a.pt", folder / "b.pt"


def test_connect_reports_the_barriers_alignment_and_curve_of_the_api(mlp_checkpoints, tmp_path, capsys):
    import copy
    import json

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
    summary = json.loads((tmp_path / "connect.json").read_text())
    assert list(summary["paths"]) == ["line", "aligned line", "bezier, aligned"]
    problem = landscape.load("digits-mlp", steps=0)
    model_a, model_b = (landscape.load_checkpoint(copy.deepcopy(problem.model), f) for f in (a, b))
    obj = Objective(model_a, problem.loss_fn, problem.data)
    line = curves.interpolate(obj, model_a, model_b, progress=False)
    aligned = weight_matching(model_a, model_b).apply(model_b)
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
    import json

    import landscape

    for seed in (0, 1):
        torch.save(landscape.load("digits-cnn", seed=seed, steps=20).model.state_dict(), tmp_path / f"{seed}.pt")
    assert main(["connect", "--problem", "digits-cnn", "--a", str(tmp_path / "0.pt"), "--b", str(tmp_path / "1.pt"),
                 "--range", "-0.5:1.5", "--points", "9", "--curve", "polychain", "--bends", "2", "--epochs", "2",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "connect.json").read_text())
    line, chain = summary["paths"]["line"], summary["paths"]["polychain"]
    assert line["statistics"] == "interpolated" and chain["statistics"] == "recomputed"
    assert line["t"][0] == -0.5 and line["t"][-1] == 1.5 and 0.0 in line["t"] and 1.0 in line["t"]
    assert all(v is not None for v in line["values"]["loss"])  # statistics held at the ends' past them: no NaN
    assert chain["bends"] == 2 and len(chain["t"]) == 9
    assert "BatchNorm statistics interpolated" in out and "BatchNorm recomputed" in out


def test_hopfield_prints_the_capacity_of_the_api_and_the_ags_theory(tmp_path, capsys):
    import json

    from dynamics.systems import hopfield

    assert main(["hopfield", "--n", "400", "--alpha", "0.05", "0.1", "0.2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    api = hopfield.capacity(400, [0.05, 0.1, 0.2])
    rows = re.findall(r"^\s+(0\.05|0\.1|0\.2)\s+(\d+)\s+(\S+)%", out, re.M)
    assert [float(r[2]) / 100 for r in rows] == pytest.approx(api.flipped_mean, abs=5e-6)  # printed to 0.001%
    assert [int(r[1]) for r in rows] == [20, 40, 80]
    alpha_c = float(re.search(r"critical load (\S+) with", out).group(1))
    assert alpha_c == pytest.approx(0.138, abs=5e-4)  # Amit, Gutfreund and Sompolinsky's value
    summary = json.loads((tmp_path / "hopfield.json").read_text())
    assert summary["flipped_mean"] == pytest.approx(list(api.flipped_mean))
    from tests.viz.conftest import assert_drawn

    assert_drawn(tmp_path / "hopfield.png")


def infoplane_network(widths, activation, seed):
    """The command's network built independently: 64-widths-10, Linear fc{i} then T{i}, init drawn from seed."""
    from collections import OrderedDict

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules, width = OrderedDict(), 64
        for i, w in enumerate(widths, 1):
            modules[f"fc{i}"] = torch.nn.Linear(width, w)
            modules[f"T{i}"] = torch.nn.Tanh() if activation == "tanh" else torch.nn.ReLU()
            width = w
        modules["out"] = torch.nn.Linear(width, 10)
        return torch.nn.Sequential(modules)


@pytest.mark.parametrize("extra, activation, optimizer, batch_size, method, settings", [
    ([], "tanh", "adam", 64, "binning", {"bins": 30, "range_": (-1.0, 1.0)}),
    (["--activation", "relu", "--optimizer", "sgd", "--lr", "0.1", "--batch-size", "0", "--bins", "12"],
     "relu", "sgd", None, "binning", {"bins": 12, "range_": None}),
    (["--method", "kde", "--noise-variance", "0.05"], "tanh", "adam", 64, "kde",
     {"noise_variance": 0.05}),
])
def test_infoplane_writes_the_plane_of_the_api(extra, activation, optimizer, batch_size, method, settings,
                                               tmp_path, capsys):
    import json

    import numpy as np

    from dynamics.information import layer_information, track
    from landscape import load

    assert main(["infoplane", "--widths", "6,4,3", "--epochs", "7", "--every", "3", "--examples", "300",
                 "--seed", "2", *extra, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "infoplane.json").read_text())
    X, y = load("digits-mlp", steps=0).data
    X, y = X[:300], y[:300]
    model = infoplane_network([6, 4, 3], activation, 2)
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(
        model.parameters(), lr=0.1 if optimizer == "sgd" else 0.01)
    plane = track(model, X, y, opt, epochs=7, every=3, batch_size=batch_size, seed=2, method=method, **settings)
    assert summary["epochs"] == [0, 3, 6, 7] and summary["layers"] == ["T1", "T2", "T3"] == plane.layers
    np.testing.assert_allclose(np.array(summary["I_XT"], dtype=float), plane.I_XT, rtol=1e-12)
    np.testing.assert_allclose(np.array(summary["I_TY"], dtype=float), plane.I_TY, rtol=1e-12)
    np.testing.assert_allclose(summary["loss"], plane.loss, rtol=1e-6)
    # the last row again, from the trained model's activations computed here (no hooks)
    h, final = X, {}
    with torch.no_grad():
        for name, module in model.named_children():
            h = module(h)
            if name.startswith("T"):
                final[name] = h
    again = layer_information(final, y, method=method, **settings)
    assert [again[name].I_XT for name in plane.layers] == pytest.approx(summary["I_XT"][-1], abs=1e-9)
    assert [again[name].I_TY for name in plane.layers] == pytest.approx(summary["I_TY"][-1], abs=1e-9)
    assert summary["H_Y"] == pytest.approx(-sum(p * np.log2(p) for p in np.bincount(y.numpy()) / 300 if p > 0))
    assert summary["method"] == method and summary["model"]["architecture"] == "64-6-4-3-10"
    assert summary["model"]["activation"] == activation and summary["model"]["examples"] == 300
    assert summary["arguments"]["widths"] == "6,4,3" and summary["arguments"]["seed"] == 2
    for key, value in settings.items():
        assert summary["settings"][key] == (list(value) if isinstance(value, tuple) else value)
    assert (summary["ranges"] is not None) == (method == "binning" and settings["range_"] is None)
    # the printed table: start, peak (epoch), end of I(X;T), start and end of I(T;Y), to 3 decimals
    rows = re.findall(r"^(T\d)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)$", out, re.M)
    assert [r[0] for r in rows] == ["T1", "T2", "T3"] and [int(r[1]) for r in rows] == [6, 4, 3]
    I_XT, I_TY = np.array(summary["I_XT"], dtype=float), np.array(summary["I_TY"], dtype=float)
    for j, row in enumerate(rows):
        peak = int(np.argmax(I_XT[:, j]))
        assert [float(v) for v in row[2:4]] == pytest.approx([I_XT[0, j], I_XT[peak, j]], abs=5e-4)
        assert int(row[4]) == summary["epochs"][peak]
        assert [float(v) for v in row[5:]] == pytest.approx([I_XT[-1, j], I_TY[0, j], I_TY[-1, j]], abs=5e-4)
    assert f"H(Y) = {summary['H_Y']:.3f} bits" in out and "log2 m = 8.229 bits" in out
    from tests.viz.conftest import assert_drawn

    assert_drawn(tmp_path / "infoplane.png")


@pytest.mark.parametrize("extra, message", [
    (["--widths", "0"], "--widths 0: every hidden layer needs at least 1 unit"),
    (["--widths", "10,x"], "--widths '10,x' is not a comma-separated list of integers"),
    (["--range", "1:0"], "--range 1:0: LO and HI must be finite with LO < HI"),
    (["--range", "-1"], "--range '-1' is not LO:HI"),
    (["--epochs", "-1"], "--epochs must be at least 0, got -1"),
    (["--every", "0"], "--every must be at least 1"),
    (["--examples", "5000"], "--examples must be at most 1437"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--bins", "0"], "--bins must be at least 1"),
    (["--noise-variance", "0.1"], "--noise-variance is a setting of --method kde"),
    (["--method", "kde", "--bins", "30"], "--bins and --range are settings of --method binning"),
    (["--method", "kde", "--noise-variance", "-1"], "--noise-variance must be a positive number"),
])
def test_infoplane_bad_input_exits_2_with_one_line(extra, message, tmp_path, capsys):
    assert main(["infoplane", "--epochs", "1", *extra, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("landscape infoplane: error: ") and message in err
    assert not (tmp_path / "out").exists()  # refused before anything was trained or written


def test_ntk_prints_the_kernel_and_the_training_of_a_hand_written_reference(tmp_path, capsys):
    """The kernel against J J^T from torch.autograd.functional.jacobian, training against plain SGD."""
    import copy
    import json

    import numpy as np

    from landscape import problems

    assert main(["ntk", "--problem-arg", "hidden=8", "--examples", "16", "--steps", "20", "--every", "10",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "ntk.json").read_text())
    model = problems.digits_mlp(hidden=8, steps=0, loss="mse", examples=16).model.double()
    X, y = problems.digits(images=False)[0]
    X, y = X[:16].double(), y[:16]
    def kernel(net):
        J = torch.autograd.functional.jacobian(
            lambda *ps: torch.func.functional_call(net, dict(zip([n for n, _ in net.named_parameters()], ps)),
                                                   (X,)).reshape(-1), tuple(p.detach() for p in net.parameters()))
        J = torch.cat([j.reshape(160, -1) for j in J], dim=1)
        return J @ J.T

    start = kernel(model)
    reference = np.linalg.eigvalsh(start.numpy())[::-1]
    comparison = summary["comparison"]
    np.testing.assert_allclose(comparison["eigenvalues"], np.clip(reference, 0, None), rtol=1e-9, atol=1e-9)
    printed = [float(v) for v in field(out, "top").split()]
    np.testing.assert_allclose(printed, reference[:10], rtol=1e-4)
    assert float(re.search(r"trace (\S+),", field(out, "kernel")).group(1)) == pytest.approx(reference.sum(), rel=1e-5)
    lr = comparison["lr"]
    assert lr == pytest.approx(0.5 * 2 * 16 / reference[0], rel=1e-9)
    real = copy.deepcopy(model)
    optimizer = torch.optim.SGD(real.parameters(), lr=lr)
    losses = []
    for step in range(21):
        loss = problems.square_loss(real(X), y)
        losses.append(loss.item())
        if step == 20:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    np.testing.assert_allclose(comparison["loss"], [losses[0], losses[10], losses[20]], rtol=1e-9)
    flat = [torch.cat([p.detach().reshape(-1) for p in net.parameters()]) for net in (model, real)]
    moved = float((flat[1] - flat[0]).norm() / flat[0].norm())
    assert comparison["movement"][-1] == pytest.approx(moved, rel=1e-9)
    assert comparison["kernel_change"] == pytest.approx(float((kernel(real) - start).norm() / start.norm()), rel=1e-9)
    assert float(re.search(r"= (\S+); max gap", out).group(1)) == pytest.approx(comparison["kernel_change"], rel=1e-3)
    assert float(re.search(r"lambda_min (\S+);", out).group(1)) == pytest.approx(max(reference[-1], 0), abs=1e-3)
    rows = re.findall(r"^\s+(\d+)\s+\S+\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", out, re.M)
    assert [int(r[0]) for r in rows] == [0, 10, 20]
    np.testing.assert_allclose([float(r[1]) for r in rows], comparison["loss"], rtol=1e-3)
    np.testing.assert_allclose([float(r[3]) for r in rows][1:], comparison["gap"][1:], rtol=1e-2)
    np.testing.assert_allclose([float(r[4]) for r in rows], [0, comparison["movement"][1], moved], rtol=1e-2)
    from tests.viz.conftest import assert_drawn

    assert_drawn(tmp_path / "ntk.png")


def test_ntk_widths_fit_the_printed_rate(tmp_path, capsys):
    import json

    import numpy as np

    assert main(["ntk", "--widths", "8,32", "--seeds", "0,1", "--examples", "16", "--steps", "10", "--every", "5",
                 "--problem-arg", "parametrization=ntk", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    sweep = json.loads((tmp_path / "ntk.json").read_text())["sweep"]
    gaps = np.array(sweep["max_gap"]).mean(1)
    assert sweep["rate"] == pytest.approx(-np.log(gaps[1] / gaps[0]) / np.log(32 / 8), rel=1e-9)
    assert float(re.search(r"max gap ~ width\^-(\S+),", out).group(1)) == pytest.approx(sweep["rate"], abs=1e-3)
    rows = re.findall(r"^\s+(8|32)\s+(\d+)\s+\S+\s+(\S+)", out, re.M)
    assert [int(r[1]) for r in rows] == [64 * 8 + 8 + 8 * 10 + 10, 64 * 32 + 32 + 32 * 10 + 10]
    np.testing.assert_allclose([float(r[2]) for r in rows], gaps, rtol=1e-3)
    assert (tmp_path / "ntk_widths.png").stat().st_size > 20_000


@pytest.mark.parametrize("args, message", [
    (["--widths", "16"], "--widths '16' must name two or more different widths"),
    (["--widths", "8,x"], "--widths '8,x' is not a comma-separated list of integers"),
    (["--widths", "4,8", "--seeds", "-1"], "--seeds -1: each must be at least 0"),
    (["--widths", "4,8", "--problem", "quadratic"], "--widths needs a built-in problem whose builder takes hidden="),
    (["--steps", "0"], "--steps and --every must be at least 1"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--examples", "0"], "--examples must be at least 1"),
    (["--problem-arg", "loss=cross-entropy"], "needs the square loss"),
])
def test_ntk_bad_input_exits_2_with_one_line(args, message, tmp_path, capsys):
    assert main(["ntk", "--out", str(tmp_path), "--steps", "2", "--examples", "8", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
