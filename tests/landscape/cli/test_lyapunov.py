"""landscape lyapunov: spectra of a classic system and of gradient descent against the API and theory."""

import re

import pytest

from landscape.cli import main
from tests.landscape.cli.conftest import field, read_json


def test_lyapunov_of_lorenz_prints_its_spectrum(tmp_path, capsys):
    import numpy as np

    from dynamics.lyapunov import flow_spectrum
    from dynamics.systems import Lorenz

    assert main(["lyapunov", "--system", "lorenz", "--steps", "3000", "--transient", "500", "--out",
                 str(tmp_path)]) == 0
    out = capsys.readouterr().out
    printed = [float(v) for v in re.findall(r"^\s+\d\s+(\S+)\s+spread", out, re.M)]
    api = flow_spectrum(Lorenz(), dt=0.01, steps=3000, transient=500)
    assert printed == pytest.approx(api.exponents, abs=1e-6)
    assert f"{api.n_steps} steps ({api.n_matvecs} tangent products)" in out
    assert float(field(out, "sum")) == pytest.approx(-(10 + 1 + 8 / 3), abs=1e-3)  # the trace of J, exactly
    summary = read_json(tmp_path / "lyapunov.json")
    assert summary["kaplan_yorke"] == pytest.approx(float(field(out, "Kaplan-Yorke")), abs=1e-4)
    assert not summary["truncated"] and not summary["kaplan_yorke_bound"] and "3 of 3;" in out
    tail = api.running[-max(2, len(api.running) // 4):]  # the convergence measure, from the running estimates
    spreads = [float(v) for v in re.findall(r"^\s+\d\s+\S+\s+spread (\S+)", out, re.M)]
    assert spreads == pytest.approx(tail.max(axis=0) - tail.min(axis=0), rel=0.05)  # printed to 2 digits
    spread = tail.max(axis=0) - tail.min(axis=0)
    moving = spread > 0.1 * np.maximum(abs(api.exponents), 0.01 * abs(api.exponents).max())
    assert summary["moving"] == moving.tolist() and len(re.findall(r"spread \S+  still moving", out)) == moving.sum()
    from tests.viz.conftest import assert_drawn

    assert_drawn(tmp_path / "lyapunov.png")


def test_lyapunov_of_gradient_descent_on_a_quadratic(tmp_path, capsys):
    import numpy as np

    # quadratic: eigenvalues 10^linspace(2, -2, 100); at lr 0.025 the top one gives |1 - 2.5| = 1.5 > 1
    assert main(["lyapunov", "--problem", "quadratic", "--lr", "0.025", "--k", "1", "--steps", "100", "--transient", "200",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    top = float(re.search(r"^\s+1\s+(\S+)\s+spread", out, re.M).group(1))
    a = np.logspace(2, -2, 100)
    assert top == pytest.approx(np.log(np.abs(1 - 0.025 * a)).max(), abs=1e-6)
    # one exponent of 100, and it is positive: the dimension is at least 1, not 1
    assert "1 of 100 (truncated" in out and field(out, "Kaplan-Yorke").startswith(">= 1 (")
    summary = read_json(tmp_path / "lyapunov.json")
    assert summary["truncated"] and summary["kaplan_yorke_bound"] and summary["kaplan_yorke"] == 1.0


@pytest.mark.parametrize("extra, message", [
    (["--k", "2"], "--lr is needed"),
    (["--lr", "0.1"], "--k .* is needed"),
])
def test_lyapunov_bad_input_exits_2(extra, message, tmp_path, capsys):
    assert main(["lyapunov", "--problem", "quadratic", "--steps", "3", "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err)
