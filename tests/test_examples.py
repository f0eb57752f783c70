"""The scripts in examples/ run and print what they claim (at a reduced size)."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import landscape

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_edge_of_stability_example(tmp_path):
    out = run_example("edge_of_stability.py", "--out", str(tmp_path), "--steps", "200")
    rows = re.findall(r"^\s+(0\.1|0\.15)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    assert [r[0] for r in rows] == ["0.1", "0.15"]
    # the sharpness at the start, against a dense float64 Hessian of the same untrained model
    obj = landscape.load("digits-mlp", steps=0, loss="mse").objective(dtype=torch.float64)
    H = landscape.hessian(obj)
    eye = torch.eye(obj.space.n, dtype=torch.float64)
    dense = torch.cat([H @ eye[i:i + 512] for i in range(0, obj.space.n, 512)]).numpy()
    top = np.linalg.eigvalsh((dense + dense.T) / 2)[-1]
    for row in rows:
        assert float(row[1]) == pytest.approx(2 / float(row[0]), rel=5e-3)  # printed to 3 digits
        assert float(row[2]) == pytest.approx(top, rel=5e-3)
    assert (tmp_path / "edge_of_stability.png").stat().st_size > 20_000
