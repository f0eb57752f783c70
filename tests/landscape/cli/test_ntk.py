"""landscape ntk: the kernel and the training against hand-written references, and the width sweep."""

import re

import pytest
import torch

from landscape.cli import main
from tests.landscape.cli.conftest import field, read_json


def test_ntk_prints_the_kernel_and_the_training_of_a_hand_written_reference(tmp_path, capsys):
    """The kernel against J J^T from torch.autograd.functional.jacobian, training against plain SGD."""
    import copy

    import numpy as np

    from landscape import problems

    assert main(["ntk", "--problem-arg", "hidden=8", "--examples", "16", "--steps", "20", "--every", "10",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = read_json(tmp_path / "ntk.json")
    model = problems.digits_mlp(hidden=8, steps=0, loss="mse", examples=16).model.double()
    X, y = problems.digits(images=False)[0]
    X, y = X[:16].double(), y[:16]
    def kernel(net):
        J = torch.autograd.functional.jacobian(
            lambda *ps: torch.func.functional_call(net, dict(zip([n for n, _ in net.named_parameters()], ps)),
                                                   (X,)).reshape(-1), tuple(p.detach() for p in net.parameters()))
        J = torch.cat([j.reshape(160, -1) for j in J], dim=1)
        return J @ J.T

    start = kernel(model)
    reference = np.linalg.eigvalsh(start.numpy())[::-1]
    comparison = summary["comparison"]
    np.testing.assert_allclose(comparison["eigenvalues"], np.clip(reference, 0, None), rtol=1e-9, atol=1e-9)
    printed = [float(v) for v in field(out, "top").split()]
    np.testing.assert_allclose(printed, reference[:10], rtol=1e-4)
    assert float(re.search(r"trace (\S+),", field(out, "kernel")).group(1)) == pytest.approx(reference.sum(), rel=1e-5)
    lr = comparison["lr"]
    assert lr == pytest.approx(0.5 * 2 * 16 / reference[0], rel=1e-9)
    real = copy.deepcopy(model)
    optimizer = torch.optim.SGD(real.parameters(), lr=lr)
    losses = []
    for step in range(21):
        loss = problems.square_loss(real(X), y)
        losses.append(loss.item())
        if step == 20:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    np.testing.assert_allclose(comparison["loss"], [losses[0], losses[10], losses[20]], rtol=1e-9)
    flat = [torch.cat([p.detach().reshape(-1) for p in net.parameters()]) for net in (model, real)]
    moved = float((flat[1] - flat[0]).norm() / flat[0].norm())
    assert comparison["movement"][-1] == pytest.approx(moved, rel=1e-9)
    assert comparison["kernel_change"] == pytest.approx(float((kernel(real) - start).norm() / start.norm()), rel=1e-9)
    assert float(re.search(r"= (\S+); max gap", out).group(1)) == pytest.approx(comparison["kernel_change"], rel=1e-3)
    assert float(re.search(r"lambda_min (\S+);", out).group(1)) == pytest.approx(max(reference[-1], 0), abs=1e-3)
    rows = re.findall(r"^\s+(\d+)\s+\S+\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", out, re.M)
    assert [int(r[0]) for r in rows] == [0, 10, 20]
    np.testing.assert_allclose([float(r[1]) for r in rows], comparison["loss"], rtol=1e-3)
    np.testing.assert_allclose([float(r[3]) for r in rows][1:], comparison["gap"][1:], rtol=1e-2)
    np.testing.assert_allclose([float(r[4]) for r in rows], [0, comparison["movement"][1], moved], rtol=1e-2)
    from tests.viz.conftest import assert_drawn

    assert_drawn(tmp_path / "ntk.png")


def test_ntk_widths_fit_the_printed_rate(tmp_path, capsys):
    import numpy as np

    assert main(["ntk", "--widths", "8,32", "--seeds", "0,1", "--examples", "16", "--steps", "10", "--every", "5",
                 "--problem-arg", "parametrization=ntk", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    sweep = read_json(tmp_path / "ntk.json")["sweep"]
    gaps = np.array(sweep["max_gap"]).mean(1)
    assert sweep["rate"] == pytest.approx(-np.log(gaps[1] / gaps[0]) / np.log(32 / 8), rel=1e-9)
    assert float(re.search(r"max gap ~ width\^-(\S+),", out).group(1)) == pytest.approx(sweep["rate"], abs=1e-3)
    rows = re.findall(r"^\s+(8|32)\s+(\d+)\s+\S+\s+(\S+)", out, re.M)
    assert [int(r[1]) for r in rows] == [64 * 8 + 8 + 8 * 10 + 10, 64 * 32 + 32 + 32 * 10 + 10]
    np.testing.assert_allclose([float(r[2]) for r in rows], gaps, rtol=1e-3)
    assert (tmp_path / "ntk_widths.png").stat().st_size > 20_000


@pytest.mark.parametrize("args, message", [
    (["--widths", "16"], "--widths '16' must name two or more different widths"),
    (["--widths", "8,x"], "--widths '8,x' is not a comma-separated list of integers"),
    (["--widths", "4,8", "--seeds", "-1"], "--seeds -1: each must be at least 0"),
    (["--widths", "4,8", "--problem", "quadratic"], "--widths needs a built-in problem whose builder takes hidden="),
    (["--steps", "0"], "--steps and --every must be at least 1"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--examples", "0"], "--examples must be at least 1"),
    (["--problem-arg", "loss=cross-entropy"], "needs the square loss"),
])
def test_ntk_bad_input_exits_2_with_one_line(args, message, tmp_path, capsys):
    assert main(["ntk", "--out", str(tmp_path), "--steps", "2", "--examples", "8", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
