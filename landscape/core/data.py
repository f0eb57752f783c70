"""The data an objective averages over: ``(X, y)`` pairs and re-iterables of batches.

``X`` may be a tensor (``model(X)``), a tuple of tensors (``model(*X)``) or a dict of
tensors (``model(**X)``); ``y`` is a tensor whose first dimension counts the examples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch.utils._pytree import tree_flatten, tree_map

Tensor = torch.Tensor


def examples_in(X) -> int:
    """How many examples a batch's ``X`` holds: the first dimension of its (first) tensor."""
    if isinstance(X, Tensor):
        return X.shape[0]
    if isinstance(X, Mapping):
        return examples_in(next(iter(X.values())))
    return examples_in(X[0])


def move(x, device: torch.device, dtype: torch.dtype):
    """A tensor (or a tuple/list/dict of them) on ``device``; floating tensors take ``dtype``."""
    if isinstance(x, Tensor):
        return x.to(device=device, dtype=dtype if x.is_floating_point() else None,
                    non_blocking=device.type != "cpu")
    if isinstance(x, Mapping):
        return {key: move(v, device, dtype) for key, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(move(v, device, dtype) for v in x)
    return x


def examples(X, device: torch.device, dtype: torch.dtype, name: str = "X") -> tuple[object, int]:
    """Inputs ``X`` (a tensor ``[m, ...]``, or a tuple or dict of them) checked and moved to ``device``
    (floating ones in ``dtype``), and their number m; a bad ``X`` is refused naming it ``name``."""
    X = move(X, device, dtype)
    leaves = tree_flatten(X)[0]
    if not leaves or not all(isinstance(t, Tensor) and t.ndim >= 1 for t in leaves):
        raise ValueError(f"{name} must be a tensor [m, ...] of inputs, or a tuple or dict of such tensors")
    m = leaves[0].shape[0]
    if m == 0 or any(t.shape[0] != m for t in leaves):
        raise ValueError(f"{name} must hold m >= 1 examples along the first dimension of every tensor, got "
                         f"shapes {[tuple(t.shape) for t in leaves]}")
    return X, m


def inputs(X) -> tuple[tuple, dict]:
    """A batch's ``X`` as ``(args, kwargs)`` of the model: a tensor ``(X,)``, a tuple ``*X``, a dict ``**X``."""
    if isinstance(X, Mapping):
        return (), dict(X)
    return (tuple(X) if isinstance(X, (tuple, list)) else (X,)), {}


def is_pair(data) -> bool:
    """An ``(X, y)`` pair: ``y`` a tensor, ``X`` a tensor or a tuple or dict of tensors."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[1], Tensor)):
        return False
    X = data[0]
    leaves = X.values() if isinstance(X, Mapping) else X if isinstance(X, (tuple, list)) else [X]
    return len(leaves) > 0 and all(isinstance(t, Tensor) for t in leaves)


def batch_list(data, batch_size: int | None, device: torch.device, dtype: torch.dtype):
    """``data`` checked and made re-iterable: an ``(X, y)`` pair becomes a list of ``batch_size`` slices
    (views) on ``device``; any other re-iterable of batches is kept as it is."""
    if is_pair(data):
        X, y = data
        if examples_in(X) != y.shape[0]:
            raise ValueError(f"X has {examples_in(X)} examples but y has {y.shape[0]}")
        if y.shape[0] == 0:
            raise ValueError("the data set is empty")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        X, y = move(X, device, dtype), move(y, device, dtype)
        size = batch_size or y.shape[0]
        return [(tree_map(lambda t: t[i:i + size], X), y[i:i + size]) for i in range(0, y.shape[0], size)]
    if batch_size is not None:
        raise ValueError("batch_size applies to an (X, y) pair of tensors; batches given as an "
                         "iterable are used as they come")
    if not isinstance(data, Iterable):
        raise ValueError(f"data must be an (X, y) pair of tensors or an iterable of (X, y) batches, "
                         f"got {type(data).__name__}")
    if not hasattr(data, "__len__") and iter(data) is data:
        raise ValueError("data is a one-shot iterator (a generator?); pass a list of batches or a "
                         "DataLoader, which can be iterated again for every pass")
    return data
