"""The information plane (Shwartz-Ziv & Tishby 2017) and the kernel estimate of its critics (Saxe et al. 2018).

Each hidden layer's activations T ``[m, d]`` on m examples X with labels Y ``[m]`` give a
point (I(X;T), I(T;Y)); training draws one trajectory per layer. A deterministic network
has I(X;T) = H(T), infinite for continuous T, so every estimate rests on a choice that is
recorded with it: the bins, or the noise variance. Entropies are in bits throughout. X is
taken uniform over the m examples, which are assumed distinct, and p(y) is the labels'
empirical distribution.

- ``binning_information``: each unit binned into ``bins`` equal-width bins over ``range_``;
  a binned row is a symbol S, and I(X;T) = H(S), I(T;Y) = H(S) - sum_y p(y) H(S | Y=y),
  plug-in entropies of the counts. Both are exact mutual informations of the empirical
  distribution, so 0 <= I(T;Y) <= min(H(Y), I(X;T)) and I(X;T) <= log2 m.
- ``kde_information``: T + N(0, sigma^2 I), whose density given the data is the mixture
  (1/m) sum_i N(t_i, sigma^2 I); its entropy is bounded above by the pairwise-KL estimator
  of Kolchinsky & Tracey (2017), as in Saxe et al.'s code (noise variance 0.1 there).
- ``mlp`` builds the network of these experiments (Linear ``fc{i}``, then activation ``T{i}``);
- ``layer_information`` runs one of them on a dict of layers; ``track`` trains a model and
  records every ``every`` epochs the activations of its ``nn.Tanh``/``nn.ReLU`` modules (or
  the modules named) through forward hooks, returning an ``InformationPlane``.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch
from scipy.special import logsumexp
from torch import nn
from torch.nn import functional as F

from landscape.core.results import Result

Tensor = torch.Tensor

_KDE_ROWS_BUDGET = 2**22  # float64 entries of one chunk of the [m, m] distance matrix (32 MiB)


@dataclass
class MutualInformation(Result):
    """One layer's ``I_XT`` and ``I_TY`` (bits), the labels' entropy ``H_Y`` (bits), the ``method``
    ("binning" or "kde") and the ``settings`` it used (for binning the range actually used)."""

    I_XT: float
    I_TY: float
    H_Y: float
    method: str
    settings: dict


@dataclass
class InformationPlane(Result):
    """What ``track`` recorded at ``epochs [E]`` (0 is before training): for the ``layers [L]``,
    ``I_XT [E, L]`` and ``I_TY [E, L]`` in bits (NaN where the activations were not finite), the
    training ``loss [E]`` on all of (X, y), the labels' entropy ``H_Y``, the ``method`` and its
    ``settings``; for binning with an observed range, the ``ranges [E, L, 2]`` used (else None)."""

    epochs: np.ndarray
    layers: list[str]
    I_XT: np.ndarray
    I_TY: np.ndarray
    loss: np.ndarray
    H_Y: float
    method: str
    settings: dict
    ranges: np.ndarray | None
    seconds: float


def _entropy(counts: np.ndarray) -> float:
    """Plug-in entropy in bits of a histogram."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _check(T, y) -> tuple[np.ndarray, np.ndarray]:
    """T as float64 [m, d], y as class codes 0..k-1 [m]."""
    T = np.asarray(T.detach().cpu() if isinstance(T, Tensor) else T, dtype=np.float64)
    y = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y)
    if T.ndim != 2 or T.shape[0] == 0:
        raise ValueError(f"T must be [m, d] activations with m >= 1, got shape {T.shape}")
    if y.ndim != 1 or len(y) != len(T):
        raise ValueError(f"y must be [m] labels for the {len(T)} rows of T, got shape {y.shape}")
    if not np.isfinite(T).all():
        raise ValueError("T has non-finite values")
    return T, np.unique(y, return_inverse=True)[1].reshape(-1)


def binning_information(T, y, *, bins: int = 30, range_: tuple[float, float] | None = None) -> MutualInformation:
    """I(X;T) = H(S) and I(T;Y) = H(S) + H(Y) - H(S, Y), bits, S the row of T ``[m, d]`` binned.

    Every unit is cut into ``bins`` equal-width bins over ``range_ = (lo, hi)`` (values outside
    it fall in the end bins); None uses the observed min..max over all of T, as recorded in
    ``settings["range"]``. Shwartz-Ziv & Tishby used 30 bins over (-1, 1) for tanh layers.
    """
    T, codes = _check(T, y)
    if isinstance(bins, bool) or not isinstance(bins, Integral) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    lo, hi = (float(T.min()), float(T.max())) if range_ is None else map(float, range_)
    if range_ is not None and not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"range_ must be finite (lo, hi) with lo < hi, got {range_!r}")
    binned = np.zeros(T.shape, dtype=np.int64) if hi == lo else \
        np.clip(np.floor((T - lo) / (hi - lo) * bins), 0, bins - 1).astype(np.int64)
    symbols, counts = np.unique(binned, axis=0, return_inverse=True, return_counts=True)[1:]
    symbols = symbols.reshape(-1)
    H_S, H_Y = _entropy(counts), _entropy(np.bincount(codes))
    H_SY = _entropy(np.unique(symbols * (codes.max() + 1) + codes, return_counts=True)[1])
    return MutualInformation(H_S, H_S + H_Y - H_SY, H_Y, "binning",
                             {"bins": int(bins), "range": [lo, hi], "range_observed": range_ is None})


def _kernel_terms(T: np.ndarray, codes: np.ndarray, noise_variance: float) -> tuple[np.ndarray, np.ndarray]:
    """A_i = -log (1/m) sum_j K_ij and B_i = -log (1/m_c) sum_{j in class c_i} K_ij, nats, [m] each,
    K_ij = exp(-||t_i - t_j||^2 / (2 sigma^2)), by row chunks of the distance matrix."""
    m = len(T)
    sq = (T * T).sum(1)
    class_sizes = np.bincount(codes)
    A, B = np.empty(m), np.empty(m)
    step = max(1, _KDE_ROWS_BUDGET // m)
    for start in range(0, m, step):
        rows = slice(start, start + step)
        d2 = np.maximum(sq[rows, None] + sq[None, :] - 2.0 * T[rows] @ T.T, 0.0)
        logK = -d2 / (2.0 * noise_variance)
        A[rows] = math.log(m) - logsumexp(logK, axis=1)
        logK[codes[rows, None] != codes[None, :]] = -np.inf
        B[rows] = np.log(class_sizes[codes[rows]]) - logsumexp(logK, axis=1)
    return A, B


def kde_information(T, y, *, noise_variance: float = 0.1) -> MutualInformation:
    """Kernel (pairwise-KL) estimates, bits, for T ``[m, d]`` plus Gaussian noise of variance sigma^2.

    Given X = x_i, T + noise is N(t_i, sigma^2 I), so H(T|X) = d/2 log(2 pi e sigma^2), and T's
    density is the equal-weight mixture of the m components. Kolchinsky & Tracey (2017) bound a
    mixture's entropy by H(component) - (1/m) sum_i log (1/m) sum_j exp(-KL(p_i || p_j)), with
    KL = ||t_i - t_j||^2 / (2 sigma^2) here, hence the upper bound (the d/2 log term cancels)

        I(X;T) <= -(1/m) sum_i log (1/m) sum_j exp(-||t_i - t_j||^2 / (2 sigma^2))  (<= log m).

    I(T;Y) = H_upper(T) - sum_y p(y) H_upper(T | Y=y), the same bound on every class's mixture, as
    in Saxe et al. (2018): a difference of two upper bounds, so an estimate, NOT a bound; it is
    at most H(Y), since each class's kernel sums are part of the full ones.
    """
    T, codes = _check(T, y)
    if isinstance(noise_variance, bool) or not isinstance(noise_variance, Real) or \
            not 0 < noise_variance < math.inf:
        raise ValueError(f"noise_variance must be a positive finite number, got {noise_variance!r}")
    A, B = _kernel_terms(T, codes, float(noise_variance))
    I_XT = float(A.mean()) / math.log(2)
    I_TY = float((A - B).mean()) / math.log(2)  # sum_y p(y) mean_{i in y} B_i = mean_i B_i
    return MutualInformation(I_XT, I_TY, _entropy(np.bincount(codes)), "kde",
                             {"noise_variance": float(noise_variance), "entropy": "kl-upper",
                              "I_TY": "H_upper(T) - sum_y p(y) H_upper(T|y), not a bound"})


ESTIMATORS = {"binning": binning_information, "kde": kde_information}


def _settings(method: str, settings: Mapping[str, object]) -> dict:
    """The estimator's keyword defaults updated by ``settings``; unknown methods or keys refused."""
    if method not in ESTIMATORS:
        raise ValueError(f"method must be 'binning' or 'kde', got {method!r}")
    defaults = {name: p.default for name, p in inspect.signature(ESTIMATORS[method]).parameters.items()
                if p.kind is p.KEYWORD_ONLY}
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise ValueError(f"unknown settings {unknown} for method {method!r}; it takes {sorted(defaults)}")
    return {**defaults, **settings}


def layer_information(activations: Mapping[str, object], y, *, method: str = "binning",
                      **settings) -> dict[str, MutualInformation]:
    """``{name: MutualInformation}`` for each layer's activations ``[m, d]`` (arrays or tensors) and
    labels ``y [m]``, by ``method`` "binning" (``bins``, ``range_``) or "kde" (``noise_variance``)."""
    _settings(method, settings)
    return {name: ESTIMATORS[method](T, y, **settings) for name, T in activations.items()}


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def mlp(widths: Sequence[int], activation: str = "tanh", *, seed: int = 0, inputs: int = 64,
        classes: int = 10) -> nn.Sequential:
    """``inputs``-widths-``classes`` MLP: Linear ``fc{i}`` then activation ``T{i}`` per hidden layer, and a
    Linear ``out`` giving the logits; torch's default init drawn from ``seed`` (the global RNG untouched)."""
    from collections import OrderedDict

    from landscape.problems import seeded

    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")

    def build():
        modules, width = OrderedDict(), inputs
        for i, w in enumerate(widths, 1):
            modules[f"fc{i}"] = nn.Linear(width, w)
            modules[f"T{i}"] = ACTIVATIONS[activation]()
            width = w
        modules["out"] = nn.Linear(width, classes)
        return nn.Sequential(modules)

    return seeded(build, seed)


def _modules(model: nn.Module, layers: Sequence[str] | None) -> dict[str, nn.Module]:
    named = dict(model.named_modules())
    if layers is None:
        found = {name: mod for name, mod in named.items() if isinstance(mod, (nn.Tanh, nn.ReLU))}
        if not found:
            raise ValueError("the model has no nn.Tanh or nn.ReLU module; name the layers to record")
        return found
    missing = [name for name in layers if name not in named]
    if missing or not layers:
        raise ValueError(f"layers must name modules of the model; unknown: {missing}, known: {list(named)[1:]}")
    return {name: named[name] for name in layers}


def track(model: nn.Module, X: Tensor, y: Tensor, optimizer: torch.optim.Optimizer, *, epochs: int,
          every: int = 1, loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
          method: str = "binning", layers: Sequence[str] | None = None, batch_size: int | None = None,
          seed: int = 0, **settings) -> InformationPlane:
    """Train ``model`` on (X ``[m, ...]``, y ``[m]``) for ``epochs`` and record the information plane.

    Each epoch is one full-batch step (``batch_size=None``) or a pass over minibatches shuffled
    by a local generator seeded with ``seed``. At epoch 0, every ``every`` epochs and the last,
    the model runs on all of X in eval mode without gradients; forward hooks catch the outputs
    of ``layers`` (module names; default every ``nn.Tanh``/``nn.ReLU``), flattened to [m, d],
    and ``method`` with ``settings`` (see ``layer_information``) turns them into bits.
    """
    recorded = _settings(method, settings)
    for name, value, low in (("epochs", epochs, 0), ("every", every, 1)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if batch_size is not None and (not isinstance(batch_size, Integral) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} examples but y has {len(y)}")
    modules = _modules(model, layers)
    names = list(modules)
    labels = y.detach().cpu().numpy()
    generator = torch.Generator().manual_seed(seed)
    caught: dict[str, list[Tensor]] = {name: [] for name in names}
    measured = sorted({*range(0, epochs + 1, every), epochs})
    rows = {epoch: row for row, epoch in enumerate(measured)}
    I_XT, I_TY = np.full((len(measured), len(names)), np.nan), np.full((len(measured), len(names)), np.nan)
    ranges = np.full((len(measured), len(names), 2), np.nan)
    loss = np.empty(len(measured))
    H_Y = _entropy(np.unique(labels, return_counts=True)[1])

    def hook(name):
        def catch(module, inputs, output):
            caught[name].append(output.detach().reshape(len(output), -1).to("cpu", torch.float64))
        return catch

    def measure(row: int) -> None:
        was_training = model.training
        model.eval()
        handles = [mod.register_forward_hook(hook(name)) for name, mod in modules.items()]
        try:
            with torch.no_grad():
                loss[row] = float(loss_fn(model(X), y))
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
        for col, name in enumerate(names):
            outputs, caught[name] = caught[name], []
            if len(outputs) != 1:
                raise ValueError(f"module {name!r} ran {len(outputs)} times in one forward pass; "
                                 "record modules that run once (one activation module per layer)")
            T = outputs[0].numpy()
            if np.isfinite(T).all():
                info = ESTIMATORS[method](T, labels, **settings)
                I_XT[row, col], I_TY[row, col] = info.I_XT, info.I_TY
                if info.settings.get("range_observed"):
                    ranges[row, col] = info.settings["range"]

    start = time.perf_counter()
    m = len(X)
    model.train()
    for epoch in range(epochs + 1):
        if epoch in rows:
            measure(rows[epoch])
        if epoch == epochs:
            break
        order = torch.randperm(m, generator=generator).to(X.device) if batch_size else None
        for batch in ([slice(None)] if order is None else order.split(batch_size)):
            optimizer.zero_grad()
            loss_fn(model(X[batch]), y[batch]).backward()
            optimizer.step()
    recorded.update(batch_size=batch_size, seed=seed, every=every)
    return InformationPlane(np.array(measured), names, I_XT, I_TY, loss, H_Y, method, recorded,
                            ranges if method == "binning" and recorded["range_"] is None else None,
                            time.perf_counter() - start)
