"""Built-in problems, user problem files and checkpoints."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import landscape
from landscape.problems import BUILTIN
from tests.reference import dense_hessian, rel


def test_quadratic_has_exactly_its_spectrum():
    eigenvalues = [7.5, 3.0, 3.0, 1e-3, 0.0, -0.25, -4.0]
    problem = landscape.load("quadratic", eigenvalues=eigenvalues, seed=3)
    obj = problem.objective()
    H = (landscape.hessian(obj) @ torch.eye(obj.space.n, dtype=torch.float64)).numpy()
    assert np.allclose(np.linalg.eigvalsh(H), sorted(eigenvalues), rtol=0, atol=1e-13)
    A, c, theta = problem.model.A, problem.model.center, obj.theta0
    assert abs(obj.loss().item() - 0.5 * (theta - c) @ A @ (theta - c)) < 1e-13
    assert rel(obj.grad(), A @ (theta - c)) < 1e-13


def test_quadratic_default_spectrum():
    obj = landscape.load("quadratic").objective()
    H = landscape.hessian(obj) @ torch.eye(100, dtype=torch.float64)
    assert np.allclose(np.linalg.eigvalsh(H.numpy())[::-1], np.logspace(2, -2, 100), rtol=1e-12, atol=0)


@pytest.mark.parametrize("fixture", ["digits_mlp", "digits_cnn"])
def test_digits_problems_are_trained_and_deterministic(fixture, request):
    problem = request.getfixturevalue(fixture)
    obj = problem.objective()
    X, y = problem.data
    assert len(y) == 1437 and len(problem.test_data[1]) == 360
    assert not problem.model.training
    with torch.no_grad():
        assert abs(obj.loss().item() - F.cross_entropy(problem.model(X), y).item()) < 1e-6
        test_acc = (problem.model(problem.test_data[0]).argmax(-1) == problem.test_data[1]).float().mean()
    assert obj.evaluate(metrics=problem.metrics)["accuracy"] > 0.98 and test_acc > 0.95
    state = torch.random.get_rng_state()
    again = landscape.load(problem.name, cache=False)  # trained again, not read back
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    assert torch.equal(again.objective().theta0, obj.theta0)


def test_digits_cnn_hvp_is_exact_despite_relu_kinks(digits_cnn):
    check = digits_cnn.objective().check_hvp()
    assert check.ok and check.rel_error < 1e-7
    assert sum(isinstance(m, nn.BatchNorm2d) for m in digits_cnn.model.modules()) == 2


def test_digits_mlp_hvp_equals_the_dense_hessian_block(digits_mlp):
    """The last layer (330 parameters) of the real problem, against the module's own dense Hessian."""
    obj = digits_mlp.objective(params="2.*", dtype=torch.float64)
    model = digits_mlp.model.double()
    try:
        X, y = digits_mlp.data
        H = dense_hessian(model, F.cross_entropy, X.double(), y, names=["2.weight", "2.bias"])
    finally:
        model.float()
    V = torch.randn(3, obj.space.n, dtype=torch.float64)
    assert rel(obj.hvp(V), V @ H) < 1e-10


def write(tmp_path, text, name="myproblem.py"):
    path = tmp_path / name
    path.write_text(text)
    return path


PROBLEM_FILE = """
import torch
from torch import nn
from torch.nn import functional as F
from landscape import Problem

def make(width=3):
    model = nn.Linear(4, width)
    X, y = torch.randn(10, 4), torch.randint(0, width, (10,))
    return model, F.cross_entropy, (X, y)

def problem():
    model, loss, data = make()
    return Problem("mine", model, loss, data)

def broken():
    raise RuntimeError("no GPU here")

def wrong():
    return 42
"""


def test_load_a_problem_file(tmp_path):
    path = write(tmp_path, PROBLEM_FILE)
    assert landscape.load(str(path)).name == "mine"
    made = landscape.load(f"{path}:make", width=5)
    assert made.model.out_features == 5 and made.name == "myproblem.py:make"
    assert made.objective().space.n == 25


@pytest.mark.parametrize("suffix, message", [
    (":nothere", "has no function nothere()"),
    (":broken", r"myproblem.py:broken\(\) failed: RuntimeError: no GPU here"),
    (":wrong", "must return a landscape Problem or a tuple"),
])
def test_bad_problem_files_say_why(tmp_path, suffix, message):
    path = write(tmp_path, PROBLEM_FILE)
    with pytest.raises(ValueError, match=message):
        landscape.load(f"{path}{suffix}")


def test_unknown_problems_and_files(tmp_path):
    with pytest.raises(ValueError, match="unknown problem 'digits-mpl': built-in problems are " + ", ".join(BUILTIN)):
        landscape.load("digits-mpl")
    with pytest.raises(FileNotFoundError, match="problem file .*nope.py does not exist"):
        landscape.load(str(tmp_path / "nope.py"))
    with pytest.raises(ValueError, match="failed to run: SyntaxError"):
        landscape.load(str(write(tmp_path, "def problem(:\n", "bad.py")))


def mlp():
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def test_checkpoint_round_trip(tmp_path):
    source, target = mlp(), mlp()
    torch.save({"model_state_dict": source.state_dict(), "epoch": 3}, tmp_path / "ck.pt")
    landscape.load_checkpoint(target, tmp_path / "ck.pt")
    assert all(torch.equal(a, b) for a, b in zip(source.parameters(), target.parameters()))
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "dp.pt")
    landscape.load_checkpoint(mlp(), tmp_path / "dp.pt")


class Pickled:
    pass


class System:
    """Pickles as a call to os.system, which a safe loader must refuse without running it."""

    def __reduce__(self):
        import os

        return os.system, ("touch ran",)


def test_bad_checkpoints_say_why(tmp_path):
    torch.save(nn.Sequential(nn.Linear(4, 7), nn.Tanh(), nn.Linear(7, 3)).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match=r"does not fit the model: 0.weight has shape \(7, 4\) in the checkpoint "
                                         r"but \(6, 4\) in the model"):
        landscape.load_checkpoint(mlp(), tmp_path / "wide.pt")
    torch.save({"0.weight": torch.zeros(6, 4)}, tmp_path / "part.pt")
    with pytest.raises(ValueError, match="missing 0.bias, 2.weight, 2.bias"):
        landscape.load_checkpoint(mlp(), tmp_path / "part.pt")
    torch.save({"net": Pickled()}, tmp_path / "obj.pt")
    with pytest.raises(ValueError, match=r"holds a tests.landscape.test_problems.Pickled object, "
                                         r"which torch.load\(weights_only=True\) refuses"):
        landscape.load_checkpoint(mlp(), tmp_path / "obj.pt")
    torch.save({"run": System()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"holds a posix.system object, which torch.load\(weights_only=True\) refuses "
                                         r"to unpickle \(.*GLOBAL posix.system.*\); save model.state_dict\(\) instead"):
        landscape.load_checkpoint(mlp(), tmp_path / "evil.pt")  # torch's reason kept, and nothing ran
    whole = (tmp_path / "part.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ValueError, match="cut.pt is truncated: it starts as torch.save's zip archive but its end is "
                                         "missing"):
        landscape.load_checkpoint(mlp(), tmp_path / "cut.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a file torch.load can read"):
        landscape.load_checkpoint(mlp(), tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        landscape.load_checkpoint(mlp(), tmp_path / "missing.pt")


def test_a_problem_file_can_import_its_neighbours_and_use_dataclasses(tmp_path):
    write(tmp_path, "WIDTH = 5\n", "helpers.py")
    write(tmp_path, """
from __future__ import annotations
from dataclasses import dataclass
import torch
from torch import nn
from torch.nn import functional as F
from helpers import WIDTH

@dataclass
class Config:
    width: int = WIDTH

def problem():
    model = nn.Linear(4, Config().width)
    return model, F.cross_entropy, (torch.randn(6, 4), torch.randint(0, 5, (6,)))
""", "withimports.py")
    assert landscape.load(str(tmp_path / "withimports.py")).model.out_features == 5


def test_trained_builtins_are_read_back_from_the_cache_bit_for_bit(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp_path))
    fresh = landscape.load("digits-cnn", steps=20, cache=False)  # BatchNorm: buffers are part of the weights
    assert not (tmp_path / "builtins").exists()
    first = landscape.load("digits-cnn", steps=20)
    entries = list((tmp_path / "builtins").glob("digits-cnn-*.safetensors"))
    assert len(entries) == 1 and "cache" not in first.description
    again = landscape.load("digits-cnn", steps=20)
    assert again.description.endswith(f"(read from the cache {tmp_path})")
    for problem in (first, again):
        state = problem.model.state_dict()
        assert state.keys() == fresh.model.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in fresh.model.state_dict().items())
        assert not problem.model.training
    landscape.load("digits-cnn", steps=20, seed=1)  # another argument, another entry
    landscape.load("digits-cnn", steps=0)  # nothing trained, nothing kept
    landscape.load("digits-cnn", steps=20, callback=lambda step, model: None)  # a callback must see the training
    assert len(list((tmp_path / "builtins").iterdir())) == 2
    entries[0].write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="cannot be read .*training it again"):
        repaired = landscape.load("digits-cnn", steps=20)
    assert torch.equal(repaired.objective().theta0, fresh.objective().theta0)
    assert "cache" not in landscape.load("digits-cnn", steps=20, cache=False).description


def test_the_cache_key_follows_the_code_of_the_builder_and_of_the_model(monkeypatch):
    import inspect

    from landscape import cache, language, problems

    small = dict(examples=8, context=16, width=16, heads=4, layers=1, steps=2, lr=3e-3, seed=0)
    model = landscape.load("tiny-gpt", steps=0, examples=8, context=16, width=16, layers=1).model
    key = cache.entry("tiny-gpt", problems.tiny_gpt, small, model)
    assert cache.entry("tiny-gpt", problems.tiny_gpt, small, model) == key
    assert cache.entry("tiny-gpt", problems.tiny_gpt, {**small, "seed": 1}, model) != key
    real = inspect.getsource
    for edited in (language, problems):  # the model's class (landscape.language) and the training loop
        monkeypatch.setattr(inspect, "getsource", lambda obj, edited=edited: real(obj) + ("#" if obj is edited else ""))
        assert cache.entry("tiny-gpt", problems.tiny_gpt, small, model) != key
        monkeypatch.setattr(inspect, "getsource", real)


def test_the_cache_keeps_tied_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp_path))
    fresh = landscape.load("tiny-gpt", steps=2, examples=8, context=16, width=16, layers=1)
    again = landscape.load("tiny-gpt", steps=2, examples=8, context=16, width=16, layers=1)
    assert "read from the cache" in again.description
    assert torch.equal(again.objective().theta0, fresh.objective().theta0)


@pytest.mark.parametrize("name, kwargs, message", [
    ("digits-mlp", {"steps": "abc"}, "the built-in problem digits-mlp: steps must be an integer \\(default 300\\), "
                                     "got 'abc'"),
    ("digits-mlp", {"hidden": -5}, "digits-mlp: hidden must be an integer of at least 1, got -5"),
    ("digits-mlp", {"hidden": 2.5}, "hidden must be an integer"),
    ("digits-mlp", {"colour": "red"}, "digits-mlp has no argument 'colour'; its arguments: hidden=32, steps=300"),
    ("digits-mlp", {"loss": 3}, "loss must be a string"),
    ("digits-cnn", {"channels": 0}, "digits-cnn: channels must be an integer of at least 1, got 0"),
    ("tiny-gpt", {"lr": "fast"}, "tiny-gpt: lr must be a number"),
    ("tiny-gpt", {"width": 30, "heads": 4}, "tiny-gpt: width 30 must be a multiple of heads 4"),
    ("quadratic", {"eigenvalues": [1, None]}, "the built-in problem quadratic cannot be built with "
                                              "eigenvalues=\\[1, None\\]: TypeError: must be real number"),
    ("quadratic", {"n": 0}, "quadratic: n must be an integer of at least 1"),
])
def test_builtin_arguments_are_checked_before_anything_runs(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        landscape.load(name, **kwargs)


def test_the_cifar_resnets_have_the_published_sizes():
    from landscape.vision import ResNet

    # He et al. 2016, table 6 (option A shortcuts, parameter-free): ResNet-20 0.27M, -56 0.85M, -110 1.7M.
    # Ours project with a 1x1 conv and BatchNorm where the shape changes: 16*32 + 64 + 32*64 + 128 more.
    for depth, published in ((20, 0.27), (56, 0.85), (110, 1.7)):
        n = sum(p.numel() for p in ResNet(depth).parameters()) - (16 * 32 + 2 * 32 + 32 * 64 + 2 * 64)
        assert round(n / 1e6, 2 if depth < 100 else 1) == published
    with pytest.raises(ValueError, match="depth 6n \\+ 2 .* got 21"):
        ResNet(21)


def test_digits_resnet_is_a_trained_residual_network_on_cifar_shaped_images():
    from landscape.vision import digits32

    problem = landscape.load("digits-resnet", depth=8, width=4, steps=100, examples=256, cache=False)
    X, y = problem.data
    assert X.shape == (256, 3, 32, 32) and X.dtype == torch.float32 and 0 <= X.min() and X.max() <= 1
    assert problem.test_data[0].shape == (360, 3, 32, 32) and not problem.model.training
    small = landscape.problems.digits()[0][0][:256]
    torch.testing.assert_close(X, digits32(small), rtol=0, atol=0)  # deterministic
    shape = torch.nn.functional.interpolate(small.reshape(-1, 1, 8, 8), size=(32, 32), mode="bilinear").clamp(0, 1)
    lo, hi = X.amin(dim=(2, 3)), X.amax(dim=(2, 3))  # each image: background + (foreground - background) * shape
    assert torch.all(lo <= 0.4 + 1e-6) and torch.all(hi >= 0.5 * shape.amax(dim=(2, 3)) - 1e-6)
    untrained = landscape.load("digits-resnet", depth=8, width=4, steps=0, examples=256)
    assert problem.objective().loss(problem.objective().theta0) < 0.5 * untrained.objective().loss(
        untrained.objective().theta0)
    assert "ResNet-8 (width 4, 5,214 parameters, BatchNorm)" in problem.description
    with pytest.raises(ValueError, match="digits-resnet: depth must be an integer of at least 8, got 2"):
        landscape.load("digits-resnet", depth=2)
    with pytest.raises(ValueError, match="digits-resnet: lr must be a positive number"):
        landscape.load("digits-resnet", lr=float("nan"))
