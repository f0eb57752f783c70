"""Problems: a model, its loss, its data and its metrics, built in or loaded from a user's file.

``load("digits-mlp")`` builds a built-in problem; ``load("path/to/file.py:factory")``
imports that file and calls ``factory()``, which returns a ``Problem`` or a tuple
``(model, loss_fn, data)``. A problem file is Python code and runs as such: load
only files you trust. ``load_checkpoint`` (:mod:`landscape.checkpoints`) reads weights without
running anything.

Built-in problems (all deterministic for a given ``seed``, trained on the CPU in seconds to a minute, then kept
in the user cache, :mod:`landscape.cache`):

- ``quadratic``: L(theta) = 1/2 (theta - c)^T A (theta - c) with A = Q diag(eigenvalues) Q^T,
  Q a random orthogonal matrix; the Hessian is exactly A. float64.
- ``digits-mlp``: a tanh MLP 64-32-10 on scikit-learn's bundled 8x8 digits (1437 train,
  360 test), cross-entropy, trained by full-batch Adam; PyTorch's default ("standard")
  parametrization, or the NTK parametrization (``NTKLinear``).
- ``digits-cnn``: conv-BatchNorm-ReLU x2, average pooling, linear, on the same digits
  as 1x8x8 images, trained by mini-batch Adam; evaluated in eval mode.
- ``digits-resnet``: the CIFAR ResNet of He et al. 2016 (ResNet-20 by default: BatchNorm, identity and
  projection shortcuts) on the digits as 32x32 colour images (``landscape.vision``), mini-batch Adam.
- ``tiny-gpt``: a small causal transformer (character level) on the Python documentation that ships
  with Python (``pydoc_data``), dict batches of token windows, the mean loss over label tokens
  (``landscape.language``).
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from landscape import cache as problem_cache
from landscape import language
from landscape import vision
from landscape.core.objective import Objective

Tensor = torch.Tensor


@dataclass
class Problem:
    """What an analysis needs: ``model``, ``loss_fn(outputs, y)`` (a batch mean), ``data`` and ``metrics``.

    ``data`` and ``batch_size`` are as for ``Objective``; ``metrics`` maps names to
    ``fn(outputs, y) -> batch mean``; ``test_data`` is an optional held-out ``(X, y)``.
    """

    name: str
    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    data: object
    batch_size: int | None = None
    metrics: dict[str, Callable[[Tensor, Tensor], Tensor]] = field(default_factory=dict)
    test_data: object = None
    description: str = ""

    def objective(self, **kwargs) -> Objective:
        """``Objective(model, loss_fn, data, batch_size=..., **kwargs)`` on the training data."""
        kwargs.setdefault("batch_size", self.batch_size)
        return Objective(self.model, self.loss_fn, self.data, **kwargs)


def accuracy(outputs: Tensor, y: Tensor) -> Tensor:
    """Fraction of rows whose largest output is at the label."""
    return (outputs.argmax(dim=-1) == y).float().mean()


def square_loss(outputs: Tensor, y: Tensor) -> Tensor:
    """1/2 mean_i ||f_i - e_{y_i}||^2: the square loss on one-hot targets (Cohen et al. 2021's "MSE").

    Written out rather than ``F.mse_loss``, whose forward-over-reverse HVP crashes in torch 2.13.
    """
    target = F.one_hot(y, outputs.shape[-1]).to(outputs.dtype)
    return 0.5 * ((outputs - target) ** 2).sum(dim=-1).mean()


LOSSES = {"cross-entropy": F.cross_entropy, "mse": square_loss}


# -- built-in problems ------------------------------------------------------------------


class Quadratic(nn.Module):
    """A model whose every output is 1/2 (theta - center)^T A (theta - center)."""

    def __init__(self, A: Tensor, center: Tensor, start: Tensor):
        super().__init__()
        self.theta = nn.Parameter(start.clone())
        self.register_buffer("A", A)
        self.register_buffer("center", center)

    def forward(self, x: Tensor) -> Tensor:
        d = self.theta - self.center
        return (0.5 * d @ (self.A @ d)).expand(x.shape[0])


def quadratic(n: int = 100, eigenvalues=None, seed: int = 0) -> Problem:
    """L(theta) = 1/2 (theta - c)^T A (theta - c), with A's spectrum ``eigenvalues`` (default 10^linspace(2, -2, n))."""
    _integers("quadratic", n=(n, 1))
    lam = (torch.logspace(2, -2, n, dtype=torch.float64) if eigenvalues is None
           else torch.as_tensor(eigenvalues, dtype=torch.float64).reshape(-1))
    if lam.numel() == 0 or not torch.isfinite(lam).all():
        raise ValueError("quadratic needs a non-empty list of finite eigenvalues")
    n = lam.numel()
    g = torch.Generator().manual_seed(seed)
    Q, R = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    Q = Q * torch.sign(torch.diagonal(R))  # Haar-distributed
    A = (Q * lam) @ Q.T
    A = (A + A.T) / 2
    center = torch.randn(n, generator=g, dtype=torch.float64)
    start = center + torch.randn(n, generator=g, dtype=torch.float64) / n**0.5
    model = Quadratic(A, center, start)
    data = (torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    return Problem("quadratic", model, lambda out, y: out.mean(), data,
                   description=f"1/2 (theta - c)^T A (theta - c), n = {n}, eigenvalues from "
                               f"{lam.max().item():.3g} to {lam.min().item():.3g}")


def digits(images: bool = False) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """scikit-learn's 1797 8x8 digits scaled to [0, 1], split 1437 / 360 by a fixed permutation:
    ((X_train, y_train), (X_test, y_test)), X ``[m, 64]`` (``[m, 1, 8, 8]`` with ``images``), y class indices."""
    from sklearn.datasets import load_digits

    data = load_digits()
    X = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    if images:
        X = X.reshape(-1, 1, 8, 8)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = order[:1437], order[1437:]
    return (X[train], y[train]), (X[test], y[test])


def _train(model: nn.Module, data: tuple[Tensor, Tensor], steps: int, lr: float,
           batch_size: int | None, seed: int, callback: Callable[[int, nn.Module], None] | None,
           loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> None:
    """Adam on ``loss_fn``, mini-batches drawn by a local generator; model left in eval mode.

    ``callback(step, model)`` is called before the first step (step 0) and after each step,
    with the model in eval mode (so a saved state dict is the model as analysed).
    """
    X, y = data
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr) if steps else None  # Adam imports torch._dynamo: 1-2 s
    for step in range(steps + 1):
        if callback is not None:
            model.eval()
            callback(step, model)
        if step == steps:
            break
        model.train()
        idx = torch.randint(len(y), (batch_size,), generator=g) if batch_size else slice(None)
        optimizer.zero_grad()
        loss_fn(model(X[idx]), y[idx]).backward()
        optimizer.step()
    model.eval()


def _integers(problem: str, **checks: tuple[int, int]) -> None:
    """Refuse, in one line, any ``name=(value, least)`` whose value is not an integer of at least ``least``."""
    for name, (value, least) in checks.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{problem}: {name} must be an integer of at least {least}, got {value!r}")


def seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model with torch's default init drawn from ``seed``, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class NTKLinear(nn.Module):
    """A linear layer in the NTK parametrization (Jacot et al. 2018): y = x W^T / sqrt(fan_in) + beta b,
    with W ``[out, in]`` and b ``[out]`` drawn N(0, 1) and beta = 0.1.

    The 1/sqrt(fan_in) sits in the forward pass, not in the initialisation, so the NTK stays
    O(1) as the width grows and one learning rate suits every width. The weights come from
    torch's global generator, like ``nn.Linear``'s: build a model through ``digits_mlp(seed=...)``
    (or under ``torch.random.fork_rng``) to draw them from a seed.
    """

    beta = 0.1

    def __init__(self, fan_in: int, fan_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in))
        self.bias = nn.Parameter(torch.randn(fan_out))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight.T / self.weight.shape[1] ** 0.5 + self.beta * self.bias


PARAMETRIZATIONS = {"standard": nn.Linear, "ntk": NTKLinear}


def digits_mlp(hidden: int = 32, steps: int = 300, seed: int = 0,
               callback: Callable[[int, nn.Module], None] | None = None, loss: str = "cross-entropy",
               examples: int | None = None, parametrization: str = "standard") -> Problem:
    """tanh MLP 64-``hidden``-10 on the digits, ``steps`` of full-batch Adam (lr 0.01); ``steps=0`` leaves it at init.

    ``callback(step, model)`` sees the model at init and after every step (to keep checkpoints).
    ``loss``: ``"cross-entropy"`` or ``"mse"`` (``square_loss``); ``examples``: use only the
    first that many training examples (small problems for tests and dynamics);
    ``parametrization``: ``"standard"`` (``nn.Linear``, PyTorch's init) or ``"ntk"`` (``NTKLinear``).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization must be one of {', '.join(PARAMETRIZATIONS)}, got {parametrization!r}")
    _integers("digits-mlp", hidden=(hidden, 1), steps=(steps, 0))
    Linear = PARAMETRIZATIONS[parametrization]
    train, test = digits(images=False)
    if examples is not None:
        if not 1 <= examples <= len(train[1]):
            raise ValueError(f"examples must be between 1 and {len(train[1])}, got {examples}")
        train = (train[0][:examples], train[1][:examples])
    model = seeded(lambda: nn.Sequential(Linear(64, hidden), nn.Tanh(), Linear(hidden, 10)), seed)
    start = time.perf_counter()
    _train(model, train, steps, lr=0.01, batch_size=None, seed=seed, callback=callback, loss_fn=LOSSES[loss])
    kind = "" if parametrization == "standard" else ", NTK parametrization"
    return Problem("digits-mlp", model, LOSSES[loss], train, metrics={"accuracy": accuracy},
                   test_data=test,
                   description=f"tanh MLP 64-{hidden}-10{kind} on sklearn digits ({len(train[1])} train examples, "
                               f"{loss}), {steps} full-batch Adam steps in {time.perf_counter() - start:.1f} s")


def digits_cnn(channels: int = 8, steps: int = 300, seed: int = 0,
               callback: Callable[[int, nn.Module], None] | None = None) -> Problem:
    """Small CNN with BatchNorm on 1x8x8 digits, ``steps`` of Adam on batches of 64 (lr 0.01), then eval mode.

    ``callback(step, model)`` as for ``digits_mlp``.
    """
    _integers("digits-cnn", channels=(channels, 1), steps=(steps, 0))
    train, test = digits(images=True)
    c = channels

    def build():
        return nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(2 * c * 4, 10))

    model = seeded(build, seed)
    start = time.perf_counter()
    _train(model, train, steps, lr=0.01, batch_size=64, seed=seed, callback=callback)
    return Problem("digits-cnn", model, F.cross_entropy, train, metrics={"accuracy": accuracy},
                   test_data=test,
                   description=f"CNN conv-BN-ReLU x2 ({c}, {2 * c} channels) on sklearn digits "
                               f"({len(train[1])} train examples), {steps} Adam steps in "
                               f"{time.perf_counter() - start:.1f} s, eval mode")


def digits_resnet(depth: int = 20, width: int = 16, steps: int = 300, batch_size: int = 64, lr: float = 0.01,
                  examples: int | None = None, seed: int = 0,
                  callback: Callable[[int, nn.Module], None] | None = None) -> Problem:
    """``digits-resnet``: the CIFAR ResNet of He et al. 2016 (``landscape.vision.ResNet``, depth 6n + 2, BatchNorm,
    identity and projection shortcuts) on CIFAR-shaped images made from the digits (``landscape.vision.digits32``:
    32x32, coloured), trained by ``steps`` of Adam on batches of ``batch_size``, then in eval mode. ``examples``:
    the first that many training images (all 1,437 by default); the test data are the 360 held-out digits."""
    _integers("digits-resnet", depth=(depth, 8), width=(width, 1), steps=(steps, 0), batch_size=(batch_size, 1))
    if examples is not None:
        _integers("digits-resnet", examples=(examples, 1))
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"digits-resnet: lr must be a positive number, got {lr!r}")
    (X, y), (X_test, y_test) = digits()
    train = (vision.digits32(X[:examples]), y[:examples])
    test = (vision.digits32(X_test, seed=1), y_test)
    model = seeded(lambda: vision.ResNet(depth, width), seed)
    start = time.perf_counter()
    _train(model, train, steps, lr=lr, batch_size=batch_size, seed=seed, callback=callback)
    return Problem("digits-resnet", model, F.cross_entropy, train, batch_size=256, metrics={"accuracy": accuracy},
                   test_data=test,
                   description=f"ResNet-{depth} (width {width}, {sum(p.numel() for p in model.parameters()):,} "
                               f"parameters, BatchNorm) on 32x32 colour digits ({len(train[1])} train examples), "
                               f"{steps} Adam steps in {time.perf_counter() - start:.1f} s, eval mode")


def tiny_gpt(examples: int = 256, context: int = 64, width: int = 64, heads: int = 4, layers: int = 2,
             steps: int = 600, batch_size: int = 32, lr: float = 3e-3, seed: int = 0) -> Problem:
    """``tiny-gpt``: a causal transformer (``landscape.language.TinyGPT``) on Python's documentation, trained by Adam
    for ``steps`` steps on batches of random windows of the training text. The problem's data are ``examples``
    windows of ``context`` characters of it as dict batches of 64, its test data as many of the held-out text."""
    _integers("tiny-gpt", examples=(examples, 1), context=(context, 2), steps=(steps, 0),
              batch_size=(batch_size, 1), layers=(layers, 1), heads=(heads, 1), width=(width, 1))
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"tiny-gpt: lr must be a positive number, got {lr!r}")
    ids = language.encode(language.corpus())
    cut = int(0.9 * len(ids))
    train, held_out = ids[:cut], ids[cut:]
    model = seeded(lambda: language.TinyGPT(context, width, heads, layers), seed)
    start = time.perf_counter()
    if steps:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            starts = torch.randint(0, len(train) - context, (batch_size,), generator=generator)
            X = torch.stack([train[s:s + context] for s in starts.tolist()])
            optimizer.zero_grad(set_to_none=True)
            model(X, labels=X).loss.backward()
            optimizer.step()
    model.eval()
    return Problem("tiny-gpt", model, language.causal_lm_loss, language.windows(train, context, examples), batch_size=64,
                   metrics={"accuracy": language.token_accuracy},
                   test_data=language.windows(held_out, context, examples),
                   description=f"causal transformer ({layers} layers, width {width}, {heads} heads, context {context}) "
                               f"on Python's documentation topics (pydoc_data, {len(ids):,} characters), "
                               f"{steps} Adam steps in {time.perf_counter() - start:.1f} s; "
                               f"unigram baseline {language.unigram_loss(train):.3f} nats")


BUILTIN: dict[str, Callable[..., Problem]] = {
    "quadratic": quadratic,
    "digits-mlp": digits_mlp,
    "digits-cnn": digits_cnn,
    "digits-resnet": digits_resnet,
    "tiny-gpt": tiny_gpt,
}


# -- loading --------------------------------------------------------------------------


def _builtin(name: str, kwargs: dict, cache: bool) -> Problem:
    """``BUILTIN[name](**kwargs)``, its arguments checked first, read from the cache when it holds it."""
    builder = BUILTIN[name]
    signature = inspect.signature(builder)
    accepted = ", ".join(f"{k}={p.default!r}" for k, p in signature.parameters.items() if k != "callback")
    for key, value in kwargs.items():
        if key not in signature.parameters:
            raise ValueError(f"the built-in problem {name} has no argument {key!r}; its arguments: {accepted}")
        default = signature.parameters[key].default
        kind = {bool: bool, int: int, float: (int, float), str: str}.get(type(default))
        if kind and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
            wanted = {bool: "true or false", int: "an integer", str: "a string"}.get(type(default), "a number")
            raise ValueError(f"the built-in problem {name}: {key} must be {wanted} (default {default!r}), "
                             f"got {value!r}")
    arguments = signature.bind(**kwargs)
    arguments.apply_defaults()
    arguments = dict(arguments.arguments)
    keep = cache and arguments.get("steps", 0) > 0 and arguments.get("callback") is None
    if not keep:
        return _build(name, builder, arguments, kwargs)
    problem = _build(name, builder, {**arguments, "steps": 0}, kwargs)  # untrained: its classes enter the key
    path = problem_cache.entry(name, builder, arguments, problem.model)
    kept = problem_cache.read(path)
    if kept is None:
        problem = _build(name, builder, arguments, kwargs)
        problem_cache.write(path, problem.model, problem.description)
        return problem
    state, description = kept
    problem.model.load_state_dict(state)
    problem.description = f"{description} (read from the cache {problem_cache.folder()})"
    return problem


def _build(name: str, builder, arguments: dict, given: dict) -> Problem:
    """``builder(**arguments)``; its failure in one line that names the built-in and the arguments ``given``."""
    try:
        return builder(**arguments)
    except ValueError as error:
        raise ValueError(str(error) if str(error).startswith(name) else f"{name}: {error}") from error
    except Exception as error:
        said = ", ".join(f"{k}={v!r}" for k, v in given.items()) or "its defaults"
        raise ValueError(f"the built-in problem {name} cannot be built with {said}: {type(error).__name__}: "
                         f"{(str(error).strip().splitlines() or [''])[0]}") from error



def load(spec: str, *, cache: bool = True, **kwargs) -> Problem:
    """A built-in problem by name, or ``"path/to/file.py:factory"`` (``factory`` defaults to ``problem``).

    ``kwargs`` go to the built-in's builder or to the factory. A built-in's arguments are checked against
    its builder's (names, and the types of their defaults) before anything runs. A trained built-in
    (``steps`` > 0, no ``callback``) is kept in the user cache (:mod:`landscape.cache`) and read back the next
    time the same arguments ask for it, bit for bit the weights training gives; ``cache=False`` trains afresh.
    """
    if spec in BUILTIN:
        return _builtin(spec, kwargs, cache)
    path, sep, factory = spec.rpartition(":")
    if not sep or not path.endswith(".py"):
        path, factory = spec, "problem"
    if not path.endswith(".py"):
        raise ValueError(f"unknown problem {spec!r}: built-in problems are {', '.join(BUILTIN)}; "
                         f"or give path/to/file.py:factory")
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"problem file {path} does not exist")
    name = f"landscape_problem_{file.stem}"
    module_spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up there
    sys.path.insert(0, str(file.resolve().parent))  # so the file can import its neighbours
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise ValueError(f"problem file {path} failed to run: {type(error).__name__}: {error}") from error
    finally:
        sys.path.remove(str(file.resolve().parent))
    if not callable(getattr(module, factory, None)):
        raise ValueError(f"problem file {path} has no function {factory}()")
    try:
        made = getattr(module, factory)(**kwargs)
    except Exception as error:
        raise ValueError(f"{path}:{factory}() failed: {type(error).__name__}: {error}") from error
    if isinstance(made, Problem):
        return made
    if isinstance(made, tuple) and len(made) == 3 and isinstance(made[0], nn.Module):
        return Problem(f"{file.name}:{factory}", *made)
    raise ValueError(f"{path}:{factory}() must return a landscape Problem or a tuple (model, loss_fn, data), "
                     f"got {type(made).__name__}")
