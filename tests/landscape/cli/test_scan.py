"""landscape scan: the store and summary against the API, resuming, PCA and Hessian directions, bad input."""

import re

import pytest
import torch
from torch.nn import functional as F

import landscape
from landscape.cli import main
from tests.landscape.cli.conftest import field, read_json, scan_args


def test_scan_writes_the_store_and_a_summary_equal_to_the_api(tmp_path, capsys, digits_mlp):
    import numpy as np

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
    summary = read_json(tmp_path / "scan.json")
    assert summary["center_values"]["loss"] == api.values["loss"][2, 1]
    assert summary["minimum"]["loss"] == np.nanmin(api.values["loss"])
    assert summary["points_computed"] == 15 and summary["directions"]["recipe"]["norm"] == "filter"
    assert float(field(out, "centre").split()[1].rstrip(",")) == pytest.approx(api.values["loss"][2, 1], rel=1e-5)


def test_a_compiled_scan_says_so_and_agrees_with_the_uncompiled_one(tmp_path, capsys):
    import numpy as np

    assert main(scan_args(tmp_path / "plain")) == 0
    assert main(scan_args(tmp_path / "compiled") + ["--compile"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^scan .* 15 computed in .*\(loop, compiled\)$", out, re.M)
    assert read_json(tmp_path / "compiled" / "scan.json")["compiled"] is True
    plain, compiled = (landscape.load_scan(tmp_path / f / "scan.h5").values["loss"] for f in ("plain", "compiled"))
    np.testing.assert_allclose(compiled, plain, rtol=1e-6)  # float32 rounding, in another order
    assert main(scan_args(tmp_path / "other") + ["--strategy", "batched", "--compile"]) == 2
    assert "compile applies to the loop strategy" in capsys.readouterr().err


def test_a_channels_last_scan_says_so_and_agrees_with_the_contiguous_one(tmp_path, capsys):
    import numpy as np

    cnn = ["--problem", "digits-cnn"]
    assert main(scan_args(tmp_path / "plain", *cnn, "--strategy", "loop")) == 0
    assert main(scan_args(tmp_path / "last", *cnn, "--channels-last")) == 0
    out = capsys.readouterr().out
    assert re.search(r"^scan .* 15 computed in .*\(loop, channels_last\)$", out, re.M)
    assert read_json(tmp_path / "last" / "scan.json")["channels_last"] is True
    plain, last = (landscape.load_scan(tmp_path / f / "scan.h5").values["loss"] for f in ("plain", "last"))
    np.testing.assert_allclose(last, plain, rtol=1e-6)  # float32 rounding, other kernels
    assert main(scan_args(tmp_path / "mlp", "--channels-last")) == 2
    assert capsys.readouterr().err.strip().endswith("channels_last lays images out for 2D convolutions, and this "
                                                    "model has none")


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
    other_grid = ["scan", "--grid", "-1:1:5", "--grid", "-0.5:0.7:4", "--out", str(tmp_path), "--resume"]
    assert main(other_grid) == 2
    err = capsys.readouterr().err.strip()  # which axis differs and how, not every value of the grid
    assert err.endswith("holds a different scan, refusing to mix them (axis 2: -0.5:0.5:3 in the file, "
                        "-0.5:0.7:4 now); write to another file") and len(err.splitlines()) == 1


def test_the_quadratic_scans_with_default_directions(tmp_path, capsys):
    import h5py

    assert main(["scan", "--problem", "quadratic", "--grid", "-1:1:3", "--grid", "-1:1:3", "--out", str(tmp_path)]) == 0
    summary = read_json(tmp_path / "scan.json")
    problem = landscape.load("quadratic")
    assert summary["directions"]["recipe"]["include_1d"] is True
    assert summary["center_values"]["loss"] == pytest.approx(problem.objective().loss().item(), rel=1e-12)
    with h5py.File(tmp_path / "scan.h5", "r") as f:
        loss = f["values/loss"][()]
    assert loss.min() == loss[1, 1] and loss.max() > 100 * loss[1, 1]  # steps of |theta|: far up the bowl


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
    summary = read_json(tmp_path / "o" / "scan.json")
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
    args = ["scan", "--problem", "quadratic", "--directions", "hessian", "--grid", "-1:1:3", "--out", str(tmp_path)]
    assert main(args) == 0
    capsys.readouterr()
    summary = read_json(tmp_path / "scan.json")
    assert summary["directions"]["recipe"]["eigenvalues"] == pytest.approx([100.0], rel=1e-9)
    assert main(args + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert "not recomputed" in out and re.search(r": 0 computed in \S+ s \(loop\)$", field(out, "scan"))


def test_an_interrupted_cli_scan_says_how_to_continue(tmp_path, capsys):
    import h5py

    flag = tmp_path / "interrupt"
    flag.touch()
    (tmp_path / "problem.py").write_text(f'''
from pathlib import Path
import landscape

calls = [0]


def stop_at_the_fifth_point(outputs, y):  # calls 1 and 2 evaluate the centre (its values, then its time)
    calls[0] += 1
    if calls[0] == 7 and Path({str(flag)!r}).exists():
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
    summary = read_json(tmp_path / "o" / "scan.json")
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


def test_a_grid_the_machine_cannot_hold_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from landscape.core import memory

    monkeypatch.setattr(memory, "host_available", lambda: 100)
    assert main(scan_args(tmp_path, "--directions", "hessian")) == 2  # refused before its Lanczos run
    err = capsys.readouterr().err
    assert err == ("landscape scan: error: the grid's values need 255 B of memory (8 bytes per point and value, 1 for "
                   "its done flag), more than the 100 B available; use fewer points, or force=True (--force) to try "
                   "anyway\n")
    assert not (tmp_path / "scan.h5").exists()
    assert main(scan_args(tmp_path, "--force")) == 0
    assert read_json(tmp_path / "scan.json")["points_computed"] == 15
