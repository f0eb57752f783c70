"""landscape hopfield: the capacity of the API and the AGS theory."""

import re

import pytest

from landscape.cli import main
from tests.landscape.cli.conftest import read_json


def test_hopfield_prints_the_capacity_of_the_api_and_the_ags_theory(tmp_path, capsys):
    from dynamics.systems import hopfield

    assert main(["hopfield", "--n", "400", "--alpha", "0.05", "0.1", "0.2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    api = hopfield.capacity(400, [0.05, 0.1, 0.2])
    rows = re.findall(r"^\s+(0\.05|0\.1|0\.2)\s+(\d+)\s+(\S+)%", out, re.M)
    assert [float(r[2]) / 100 for r in rows] == pytest.approx(api.flipped_mean, abs=5e-6)  # printed to 0.001%
    assert [int(r[1]) for r in rows] == [20, 40, 80]
    alpha_c = float(re.search(r"critical load (\S+) with", out).group(1))
    assert alpha_c == pytest.approx(0.138, abs=5e-4)  # Amit, Gutfreund and Sompolinsky's value
    summary = read_json(tmp_path / "hopfield.json")
    assert summary["flipped_mean"] == pytest.approx(list(api.flipped_mean))
    from tests.viz.conftest import assert_drawn

    assert_drawn(tmp_path / "hopfield.png")
