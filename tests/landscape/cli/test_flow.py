"""landscape flow: gradient descent against gradient flow and the modified flow, as the API computes them."""

import re

import pytest

from landscape.cli import main
from tests.landscape.cli.conftest import read_json


def test_flow_compares_gd_with_both_flows(tmp_path, capsys):
    import numpy as np

    from dynamics.flow import compare_gd

    assert main(["flow", "--problem", "quadratic", "--lr", "0.004", "--steps", "50", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = read_json(tmp_path / "flow.json")
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
