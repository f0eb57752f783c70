"""landscape infoplane: the information plane against the API and an independently built network."""

import re

import pytest
import torch

from landscape.cli import main
from tests.landscape.cli.conftest import read_json


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
    import numpy as np

    from dynamics.information import layer_information, track
    from landscape import load

    assert main(["infoplane", "--widths", "6,4,3", "--epochs", "7", "--every", "3", "--examples", "300",
                 "--seed", "2", *extra, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = read_json(tmp_path / "infoplane.json")
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
