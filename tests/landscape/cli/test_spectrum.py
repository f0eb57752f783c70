"""landscape spectrum: the known spectrum of the quadratic, and what it says when it cannot converge."""

import re

import pytest

from landscape.cli import main
from tests.landscape.cli.conftest import read_json


def test_spectrum_writes_the_known_spectrum(tmp_path, capsys):
    import numpy as np

    assert main(["spectrum", "--problem", "quadratic", "--k", "4", "--tol", "1e-10", "--trace", "--trace-budget",
                 "300", "--plot", "--probes", "4", "--steps", "30", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = read_json(tmp_path / "spectrum.json")
    truth = np.logspace(2, -2, 100)
    assert np.allclose(summary["eigenvalues"]["eigenvalues"], truth[:4], rtol=1e-10)
    assert summary["eigenvalues"]["converged"] and "converged at tol 1e-10" in out
    assert summary["trace"]["estimate"] == pytest.approx(truth.sum(), rel=1e-10)  # the sketch spans all 100
    assert summary["density"]["n_matvecs"] == 4 * 30 and (tmp_path / "density.png").stat().st_size > 10_000
    negative = summary["density"]["negative_mass"]  # all 100 eigenvalues are positive
    assert negative["value"] == 0 and negative["verdict"] == "none below the threshold"
    assert negative["threshold"] == -max(1e-3 * negative["scale"], negative["broadening"])
    assert f"negative mass 0.00% +- 0.00% of the spectrum below {negative['threshold']:.3g}" in out
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
