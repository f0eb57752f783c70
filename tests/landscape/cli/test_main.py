"""The landscape command as a whole: one-line errors with exit code 2, python -m landscape, the command table,
strict JSON."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from landscape import cli
from landscape.cli import main
from landscape.cli.common import write_json
from tests.landscape.cli.conftest import read_json


@pytest.mark.parametrize("args, message", [
    (["info", "--problem", "resnet"], "unknown problem 'resnet'"),
    (["info", "--problem", "missing.py:make"], "problem file missing.py does not exist"),
    (["info", "--problem", "quadratic", "--checkpoint", "nope.pt"], "checkpoint nope.pt does not exist"),
    (["info", "--problem", "quadratic", "--params", "fc*"], "'fc\\*' matches no trainable parameter"),
    (["info", "--device", "gpu0"], "not a device name"),
])
def test_bad_input_exits_2_with_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err) and err.startswith("landscape info: error: ")


def test_a_checkpoint_for_another_model_exits_2(tmp_path, capsys):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    assert main(["info", "--problem", "quadratic", "--checkpoint", str(tmp_path / "other.pt")]) == 2
    assert "does not fit the model: missing theta, A, center; unexpected weight" in capsys.readouterr().err


def test_the_command_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "landscape", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "info" in done.stdout and "demo" in done.stdout
    done = subprocess.run([sys.executable, "-m", "landscape", "info", "--dtype", "float16"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice: 'float16'" in done.stderr


def test_a_model_that_does_not_fit_its_data_exits_2(tmp_path, capsys):
    (tmp_path / "misfit.py").write_text(
        "import torch\nfrom torch import nn\nfrom torch.nn import functional as F\n"
        "def problem():\n    return nn.Linear(5, 3), F.cross_entropy, (torch.randn(4, 7), torch.zeros(4, dtype=torch.long))\n")
    assert main(["info", "--problem", str(tmp_path / "misfit.py")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the model failed on its data: mat1 and mat2 shapes cannot be multiplied" in err


def test_the_command_table_builds_the_parser_and_the_docstring_names_every_command():
    names = [command.__name__.rsplit(".", 1)[1] for command in cli.COMMANDS]
    assert len(names) == 12 and re.findall(r"^    (\w+)", cli.parser().format_help(), re.M) == names  # in order
    assert all(f"``{name}``" in cli.__doc__ for name in names)


def test_the_json_a_command_writes_is_strict(tmp_path):
    write_json(tmp_path / "x.json", {"nan": float("nan"), "values": np.array([1.0, np.inf, -np.inf]),
                                      "count": np.int64(3), "pair": (0.5, torch.tensor(float("nan")))})
    assert "NaN" not in (tmp_path / "x.json").read_text() and "Infinity" not in (tmp_path / "x.json").read_text()
    assert read_json(tmp_path / "x.json") == {"nan": None, "values": [1.0, None, None], "count": 3, "pair": [0.5, None]}
    (tmp_path / "bare.json").write_text('{"loss": NaN}')  # what json.dumps writes by default
    with pytest.raises(ValueError, match="NaN, which is not JSON"):
        read_json(tmp_path / "bare.json")


HEAD = "import torch\nfrom torch import nn\nfrom torch.nn import functional as F\n"
DATA = "(torch.randn(6, 4), torch.zeros(6, dtype=torch.long))"


@pytest.mark.parametrize("body, message", [
    ("class Two(nn.Linear):\n    def forward(self, x, mask):\n        return super().forward(x) * mask\n"
     f"def problem():\n    return Two(4, 3), F.cross_entropy, {DATA}\n",
     r"the model failed on its data: TypeError: .*forward\(\) missing 1 required positional argument: 'mask'"),
    (f"def problem():\n    return nn.Linear(4, 3), lambda out, y: {{}}['logits'], {DATA}\n",
     r"loss_fn failed: KeyError: 'logits'"),
    ("class Dict(nn.Linear):\n    def forward(self, x):\n        return {'logits': super().forward(x)}\n"
     f"def problem():\n    return Dict(4, 3), F.cross_entropy, {DATA}\n",
     r"loss_fn failed: TypeError: cross_entropy.*argument 'input' .* must be Tensor, not dict"),
    ("class Checked(nn.Linear):\n    def forward(self, x):\n        assert x.shape[1] == 5, 'wants 5 features'\n"
     f"        return super().forward(x)\ndef problem():\n    return Checked(4, 3), F.cross_entropy, {DATA}\n",
     r"the model failed on its data: AssertionError: wants 5 features"),
    ("def problem():\n    raise KeyError('DATA_DIR')\n", r"user.py:problem\(\) failed: KeyError: 'DATA_DIR'"),
    ("import os\nROOT = os.environ['NO_SUCH_VARIABLE']\n", r"problem file .*user.py failed to run: KeyError: 'NO_SUCH"),
])
def test_an_exception_from_user_code_is_one_line_naming_what_failed(body, message, tmp_path, capsys, monkeypatch):
    (tmp_path / "user.py").write_text(HEAD + body)
    monkeypatch.delenv("LANDSCAPE_TRACEBACK", raising=False)
    assert main(["info", "--problem", str(tmp_path / "user.py")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    monkeypatch.setenv("LANDSCAPE_TRACEBACK", "1")  # the whole traceback, for debugging: the exception itself
    with pytest.raises(Exception) as raised:
        main(["info", "--problem", str(tmp_path / "user.py")])
    cause = raised.value.__cause__ or raised.value
    assert re.search(type(cause).__name__, message)
