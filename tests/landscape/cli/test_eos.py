"""landscape eos, --problem-arg: sharpness settles at 2/lr, the same numbers as the API."""

import re

import pytest

from landscape.cli import main
from tests.landscape.cli.conftest import read_json


def test_eos_tracks_sharpness_to_two_over_lr(tmp_path, capsys):
    import numpy as np

    assert main(["eos", "--lr", "0.1", "--lr", "0.15", "--problem-arg", "examples=256", "--steps", "2500",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(examples=256, loss=mse)" in out
    summary = read_json(tmp_path / "eos.json")
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
    (["--problem-arg", "colour=red"], "has no argument 'colour'; its arguments: hidden=32"),
    (["--problem-arg", "loss=hinge"], "loss must be one of cross-entropy, mse"),
    (["--lr", "-1"], "--lr must be positive"),
])
def test_eos_bad_input_exits_2_with_one_line(extra, message, tmp_path, capsys):
    args = ["eos", "--steps", "3", "--out", str(tmp_path), *extra]
    assert main(args if "--lr" in extra else args + ["--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err) and err.startswith("landscape eos: error: ")
