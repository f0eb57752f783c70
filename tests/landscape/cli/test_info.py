"""landscape info: a problem's size, loss, metrics and HVP check against the model itself."""

import re

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


def test_info_checks_the_hvps_on_the_first_examples(capsys, digits_mlp):
    assert main(["info", "--problem", "digits-mlp", "--check-examples", "100"]) == 0
    line = field(capsys.readouterr().out, "HVP check")
    check = digits_mlp.objective().check_hvp(examples=100)
    assert f"relative error {check.rel_error:.1e} " in line and "the first 100 of 1,437 examples" in line
    assert main(["info", "--problem", "digits-mlp", "--check-examples", "0"]) == 0
    assert "examples" not in field(capsys.readouterr().out, "HVP check")  # all of them
    assert main(["info", "--problem", "digits-mlp", "--check-examples", "-1"]) == 2
    assert "--check-examples must be 0 (all) or a positive number" in capsys.readouterr().err


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


def test_a_trained_builtin_comes_from_the_cache_unless_no_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp_path))
    args = ["info", "--problem", "digits-mlp", "--problem-arg", "steps=30"]
    assert main(args + ["--no-cache"]) == 0
    assert not (tmp_path / "builtins").exists()
    assert main(args) == 0 and main(args) == 0
    first, second = capsys.readouterr().out.split("problem      ")[2:]
    assert "read from the cache" not in first and f"(read from the cache {tmp_path})" in second
    assert field(first, "loss") == field(second, "loss")  # the same weights


def test_info_checks_the_products_in_their_own_precision(tmp_path, capsys):
    (tmp_path / "sloppy.py").write_text(
        "import torch\nfrom torch import nn\nfrom torch.nn import functional as F\n"
        "class Cube(torch.autograd.Function):  # a float32-only kernel whose second derivative is wrong\n"
        "    @staticmethod\n    def forward(ctx, x):\n        ctx.save_for_backward(x)\n        return x**3\n"
        "    @staticmethod\n    def backward(ctx, g):\n        (x,) = ctx.saved_tensors\n"
        "        return g * 3 * (x.detach() if x.dtype == torch.float32 else x) ** 2\n"
        "class Model(nn.Linear):\n    def forward(self, x):\n        return Cube.apply(super().forward(x))\n"
        "def problem():\n    torch.manual_seed(0)\n"
        "    return Model(4, 3), F.cross_entropy, (torch.randn(40, 4), torch.randint(0, 3, (40,)))\n")
    assert main(["info", "--problem", f"{tmp_path / 'sloppy.py'}:problem"]) == 0
    lines = capsys.readouterr().out.splitlines()
    check = next(i for i, line in enumerate(lines) if line.startswith("HVP check"))
    assert lines[check].endswith("(float64, 3 random unit vectors, cached mode): ok")
    own = re.fullmatch(r" +relative error (\S+) of the products in float32, their own precision, against those "
                       r"\(tolerance 3.5e-04\): WRONG: a float32 kernel or autodiff rule in this model differs from "
                       r"its float64 one", lines[check + 1])
    assert own and float(own.group(1)) > 0.1


def test_a_warning_is_one_line_that_says_where_it_came_from(tmp_path, capsys):
    (tmp_path / "noisy.py").write_text(
        "import warnings\nimport torch\nfrom torch import nn\nfrom torch.nn import functional as F\n"
        "class Model(nn.Linear):\n    def forward(self, x):\n"
        "        warnings.warn('this layer is deprecated\\nuse another one\\nsee the docs', FutureWarning)\n"
        "        return super().forward(x)\n"
        "def problem():\n    return Model(4, 3), F.cross_entropy, (torch.randn(8, 4), torch.zeros(8, dtype=torch.long))\n")
    assert main(["info", "--problem", f"{tmp_path / 'noisy.py'}:problem"]) == 0
    assert capsys.readouterr().err == ("landscape info: warning: this layer is deprecated (FutureWarning, noisy.py:7)\n")
