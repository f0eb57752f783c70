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


def test_lyapunov_example(tmp_path):
    out = run_example("lyapunov.py", "--out", str(tmp_path), "--steps", "20", "--time", "100")
    lorenz = [float(v) for v in re.search(r"exponents\s+(\S+), (\S+), (\S+)", out).groups()]
    assert lorenz[0] == pytest.approx(0.9056, abs=0.08) and lorenz[2] == pytest.approx(-14.5723, abs=0.1)  # T = 100
    assert float(re.search(r"sum\s+(\S+)", out).group(1)) == pytest.approx(-13.6667, abs=1e-3)
    top = float(re.search(r"top Hessian eigenvalues (\S+),", out).group(1))
    obj = landscape.load("digits-mlp").objective()
    lam = landscape.eigenvalues(landscape.hessian(obj), k=1).eigenvalues[0]
    assert top == pytest.approx(lam, abs=5e-5)  # printed to 4 decimals
    rows = re.findall(r"lr\s+(1|8): exponents\s+(\S+),.*lambda_max\| at the start\s+(\S+)", out)
    assert [r[0] for r in rows] == ["1", "8"]
    for lr, first, predicted in rows:
        assert float(predicted) == pytest.approx(np.log(abs(1 - float(lr) * lam)), abs=5e-5)
    assert abs(float(rows[0][1])) < 0.01 < 0.3 < float(rows[1][1])  # lr 1: about 0; lr 8 (> 2 / lambda_max): unstable
    for name in ("lyapunov_lorenz.png", "lyapunov_gd_lr1.png", "lyapunov_gd_lr8.png"):
        assert (tmp_path / name).stat().st_size > 20_000


def test_mode_connectivity_example(tmp_path):
    from landscape.paths import curves

    out = run_example("mode_connectivity.py", "--out", str(tmp_path), "--epochs", "10", "--points", "11")
    rows = {label.strip(): [float(v) for v in values.split()]
            for label, values in re.findall(r"^((?:line|bezier|polychain|cnn)[^\d]*?)\s+(-?\d\.\d{4}.*)$", out, re.M)}
    a, b = landscape.load("digits-mlp", seed=0), landscape.load("digits-mlp", seed=1)
    line = curves.interpolate(a.objective(), a.model, b.model, metrics=a.metrics, progress=False)
    assert rows["line a -> b"] == pytest.approx([line.barrier_linear, line.barrier_mean, line.max_loss,
                                                 line.values["accuracy"].min(), line.length], abs=6e-3)
    assert rows["line a -> shuffled a, aligned"][0] == 0 and rows["line a -> shuffled a, aligned"][4] == 0
    assert rows["line a -> shuffled a"][0] > 0.1  # the same function, unaligned: a barrier as high as another seed's
    assert rows["line a -> b aligned"][0] < 0.2 * rows["line a -> b"][0]
    assert rows["bezier a -> b"][0] < 0.2 * rows["line a -> b"][0]
    interpolated, recomputed = rows["cnn line, statistics interpolated"], rows["cnn line, statistics recomputed"]
    assert abs(recomputed[0] - interpolated[0]) > 0.05 * interpolated[0]  # the statistics matter on this path
    for name in ("mode_connectivity_paths.png", "mode_connectivity_plane.png"):
        assert (tmp_path / name).stat().st_size > 20_000


def test_hopfield_capacity_example(tmp_path):
    out = run_example("hopfield_capacity.py", "--out", str(tmp_path), "--n", "500", "--trials", "1")
    rows = {float(a): float(f) / 100 for a, f in re.findall(r"^\s*(0\.\d+)\s+(\S+)%", out, re.M)}
    assert rows[0.04] == 0 and rows[0.1] < 0.005 and rows[0.2] > 0.05  # AGS: 0, 0.1%, no retrieval state
    modern, classical = map(float, re.search(r"modern .* (\S+)%, classical (\S+)%", out).groups())
    assert modern == 0 and classical > 10
    assert (tmp_path / "hopfield_capacity.png").stat().st_size > 20_000


def test_information_plane_example(tmp_path):
    from matplotlib.image import imread

    from dynamics.information import mlp, track

    out = run_example("information_plane.py", "--out", str(tmp_path), "--epochs", "30", "--every", "10")
    X, y = landscape.load("digits-mlp", steps=0).data
    p = np.bincount(y.numpy()) / len(y)
    assert f"log2 m = {np.log2(len(y)):.2f} bits" in out and f"H(Y) = {-(p * np.log2(p)).sum():.2f} bits" in out
    blocks = out.split("\n\n")[1:5]  # one per network and estimator
    assert [b.split(":")[0] for b in blocks] == ["tanh, binning, 30 bins over (-1, 1)", "tanh, KDE, noise variance 0.1",
                                                 "relu, binning, 30 bins over the observed range",
                                                 "relu, KDE, noise variance 0.1"]
    for block, (activation, method, settings) in zip(blocks, [
            ("tanh", "binning", {"bins": 30, "range_": (-1.0, 1.0)}), ("tanh", "kde", {"noise_variance": 0.1}),
            ("relu", "binning", {"bins": 30, "range_": None}), ("relu", "kde", {"noise_variance": 0.1})]):
        model = mlp([10, 7, 5, 4, 3], activation, seed=0)  # the example's network
        plane = track(model, X, y, torch.optim.Adam(model.parameters(), lr=0.01), epochs=30, every=10,
                      batch_size=64, seed=0, method=method, **settings)
        loss = [float(v) for v in re.search(r"loss (\S+) -> (\S+) ", block).groups()]
        assert loss == pytest.approx([plane.loss[0], plane.loss[-1]], abs=5e-4)
        rows = re.findall(r"^(T\d)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)$", block, re.M)
        assert [r[0] for r in rows] == plane.layers == ["T1", "T2", "T3", "T4", "T5"]
        compressed, fell = [], []
        for j, row in enumerate(rows):
            peak = int(np.argmax(plane.I_XT[:, j]))
            fall = plane.I_XT[peak, j] - plane.I_XT[-1, j]
            assert int(row[3]) == plane.epochs[peak]
            assert [float(v) for v in row[1:3] + row[4:]] == pytest.approx(
                [plane.I_XT[0, j], plane.I_XT[peak, j], plane.I_XT[-1, j], fall, plane.I_TY[-1, j]], abs=0.0051)
            if fall >= 0.5:
                (compressed if plane.epochs[peak] > 0 else fell).append(row[0])
        verdict = re.search(rf"^{activation}, {method}: (.*)$", block, re.M).group(1)
        assert verdict.startswith(f"compression in {', '.join(compressed)}:" if compressed else "no compression")
        assert (f"; {', '.join(fell)} fell >= 0.5 bits from epoch 0 on" in verdict) == bool(fell)
        if method == "binning" and activation == "relu":  # the observed ranges it printed
            tops = [float(v) for v in re.search(r"start -> end\): T1 (\S+) -> ([^,\s]+),", block).groups()]
            assert tops == pytest.approx([plane.ranges[0, 0, 1], plane.ranges[-1, 0, 1]], rel=5e-3)
    for activation in ("tanh", "relu"):
        for method in ("binning", "kde"):
            assert (tmp_path / f"information_plane_{activation}_{method}.png").stat().st_size > 20_000
    assert imread(tmp_path / "information_plane.png").shape[:2] == (2 * 552, 2 * 864)  # four 7.2 x 4.6 in planes


def test_ntk_regime_example(tmp_path):
    from dynamics import linearized
    from landscape import problems

    out = run_example("ntk_regime.py", "--out", str(tmp_path))
    ggn, ntk_max = map(float, re.search(r"top GGN eigenvalue (\S+) = lambda_max\(NTK\)/m (\S+)", out).groups())
    assert ggn == pytest.approx(ntk_max, rel=1e-8)  # the exact identity under (1/2m)||f - y||^2
    rows = re.findall(r"^\s+(16|64|256|1024)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    gaps = [float(r[3]) for r in rows]
    assert [int(r[0]) for r in rows] == [16, 64, 256, 1024] and all(np.diff(gaps) < 0)
    rate = float(re.search(r"max gap ~ width\^-(\S+),", out).group(1))
    assert rate == pytest.approx(linearized.power_law([16, 64, 256, 1024], gaps)[0], abs=0.02)  # printed to 4 digits
    assert 0.7 < rate < 1.1
    # the narrowest row against the API, network by network
    narrow = [linearized.compare(problems.digits_mlp(hidden=16, steps=0, loss="mse", examples=64, seed=s,
                                                     parametrization="ntk").objective(dtype=torch.float64),
                                 200, every=5).max_gap for s in (0, 1)]
    assert gaps[0] == pytest.approx(np.mean(narrow), abs=5e-5)
    largest = float(re.search(r"arc-cosine kernel (\S+) standard errors", out).group(1))
    assert largest < 3
    assert (tmp_path / "ntk_regime.png").stat().st_size > 20_000 and (tmp_path / "ntk_widths.png").stat().st_size > 20_000


def test_gpt2_problem_file_trains_two_models_that_connect_reads(tmp_path):
    transformers = pytest.importorskip("transformers")
    from landscape.cli import main

    run_example("gpt2_problem.py", "--out", str(tmp_path), "--steps", "3", "--width", "32", "--layers", "1")
    spec = f"{ROOT / 'examples' / 'gpt2_problem.py'}:problem"
    args = ["--problem-arg", "width=32", "--problem-arg", "layers=1"]
    assert main(["connect", "--problem", spec, *args, "--a", str(tmp_path / "seed0"), "--b", str(tmp_path / "seed1"),
                 "--points", "3", "--out", str(tmp_path / "connect")]) == 0
    import json

    ends = json.loads((tmp_path / "connect" / "connect.json").read_text())["paths"]["line"]["values"]["loss"]
    data = landscape.load(spec, width=32, layers=1).data
    for file, value in ((tmp_path / "seed0", ends[0]), (tmp_path / "seed1", ends[-1])):
        model = transformers.GPT2LMHeadModel.from_pretrained(file).eval()
        with torch.no_grad():  # 64 windows of 64 characters in two batches of 32: the mean of the batch means
            own = np.mean([model(**{k: v[i:i + 32] for k, v in data.items()}).loss.item() for i in (0, 32)])
        assert value == pytest.approx(own, rel=1e-5)


def test_my_model_is_the_readme_s_problem_file_and_its_checkpoints_serve_the_commands(tmp_path, capsys):
    from landscape.cli import main

    readme = (ROOT / "README.md").read_text()
    shown = readme[readme.index("class Net(nn.Module):"):]
    assert shown[:shown.index("```")].strip() in (ROOT / "examples" / "my_model.py").read_text()  # no drift
    out = run_example("my_model.py", "--out", str(tmp_path / "run"), "--epochs", "5")
    assert re.findall(r"seed (\d): loss (\S+)", out)[1][0] == "1"
    assert sorted(p.name for p in (tmp_path / "run" / "trajectory").iterdir()) == ["epoch05.pt"]
    problem = f"{ROOT / 'examples' / 'my_model.py'}:make_problem"
    assert main(["info", "--problem", problem, "--checkpoint", str(tmp_path / "run" / "seed0.pt"),
                 "--params", "fc.*", "--dtype", "float64"]) == 0
    printed = capsys.readouterr().out
    assert "parameters   330 in 2 tensors" in printed  # the README's "fc.*" selects the head: 32 x 10 + 10
    model, loss_fn, (X, y) = __import__("runpy").run_path(str(ROOT / "examples" / "my_model.py"))["make_problem"]()
    model.load_state_dict(torch.load(tmp_path / "run" / "seed0.pt", weights_only=True))
    with torch.no_grad():
        loss = loss_fn(model(X), y).item()
    assert float(re.search(r"^loss\s+(\S+)", printed, re.M).group(1)) == pytest.approx(loss, rel=1e-5)
