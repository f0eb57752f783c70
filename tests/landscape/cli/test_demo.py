"""landscape demo: the whole tour, its printed numbers against dense references and the files it announces."""

import re
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from landscape.cli import main
from tests.landscape.cli.conftest import field


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
    below, stderr, threshold = re.fullmatch(r"negative mass (\S+)% \+- (\S+)% of the spectrum below (\S+) .*",
                                            field(out, "density")).groups()
    assert float(threshold) <= -1e-3 * spectrum[0] * 0.99  # at least 1e-3 of lambda_max, or SLQ's broadening
    assert float(below) / 100 == pytest.approx((spectrum < float(threshold)).mean(),
                                              abs=0.002 + 3 * float(stderr) / 100)  # 8 SLQ probes
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
