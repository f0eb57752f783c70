"""landscape info: a problem's size, loss, metrics and HVP check against the model itself."""

import pytest
import torch
from torch.nn import functional as F

from landscape.cli import main
from tests.landscape.cli.conftest import field


@pytest.mark.parametrize("name", ["quadratic", "digits-mlp", "digits-cnn"])
def test_info_on_each_builtin(name, capsys, request):
    assert main(["info", "--problem", name]) == 0
    out = capsys.readouterr().out
    assert field(out, "HVP check").endswith(": ok")
    if name == "quadratic":
        assert field(out, "parameters").startswith("100 in 1 tensors, float64")
        return
    problem = request.getfixturevalue(name.replace("-", "_"))  # the same deterministic training
    X, y = problem.data
    with torch.no_grad():
        outputs = problem.model(X)
        loss = F.cross_entropy(outputs, y).item()
        accuracy = (outputs.argmax(-1) == y).float().mean().item()
    assert float(field(out, "loss")) == pytest.approx(loss, rel=1e-5)
    assert float(field(out, "accuracy").split()[0]) == pytest.approx(accuracy, abs=1e-4)
    n = sum(p.numel() for p in problem.model.parameters())
    assert field(out, "parameters").startswith(f"{n:,} in")


def test_info_with_a_checkpoint_and_a_subset(tmp_path, capsys, digits_mlp):
    torch.save(digits_mlp.model.state_dict(), tmp_path / "mlp.pt")
    assert main(["info", "--checkpoint", str(tmp_path / "mlp.pt"), "--params", "2.*", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert field(out, "parameters") == "330 in 2 tensors, float64 on cpu"


def test_a_loss_that_is_nan_everywhere_is_its_own_diagnosis(tmp_path, capsys):
    (tmp_path / "nan.py").write_text(
        "import torch\nfrom torch import nn\nfrom torch.nn import functional as F\n"
        "def problem():\n    model = nn.Linear(4, 3)\n    with torch.no_grad():\n        model.weight.fill_(float('nan'))\n"
        "    return model, F.cross_entropy, (torch.randn(8, 4), torch.zeros(8, dtype=torch.long))\n")
    assert main(["info", "--problem", f"{tmp_path / 'nan.py'}:problem"]) == 2
    captured = capsys.readouterr()
    assert field(captured.out, "loss") == "nan" and "HVP check" not in captured.out and "WRONG" not in captured.out
    assert captured.err.count("\n") == 1 and "the loss is not finite at the model's parameters" in captured.err
