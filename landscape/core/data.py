"""The data an objective averages over: ``(X, y)`` pairs, dict batches, and re-iterables of either.

A batch is an ``(X, y)`` pair, ``X`` a tensor (``model(X)``), a tuple of tensors (``model(*X)``) or a
dict of tensors (``model(**X)``), and ``y`` a tensor whose first dimension counts the examples; or a
dict of tensors (Hugging Face style, ``model(**batch)``), which is then also what ``loss_fn`` gets.

Each batch weighs by what its loss averages over (``weight``): its examples, or, for a dict batch
with ``labels``, its label tokens, the entries of ``labels`` other than -100 (``IGNORE``). A causal
language model's loss predicts ``labels[..., 1:]`` from the tokens before them, so there only those
count (``shifts_labels``: Hugging Face causal LMs, or a model with ``shifts_labels = True``). The
full-data loss is then the mean over every label token of the data, however the batches are padded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
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


IGNORE = -100  # the label of a token no loss counts (Hugging Face's and cross_entropy's ignore_index)
WEIGHTS = ("auto", "examples", "tokens")


def is_dict_batch(batch) -> bool:
    """A Hugging Face style batch: a dict of tensors, called as ``model(**batch)``."""
    return isinstance(batch, Mapping) and len(batch) > 0 and all(isinstance(v, Tensor) for v in batch.values())


def shifts_labels(model) -> bool:
    """Whether ``model``'s own loss predicts ``labels[..., 1:]`` from the tokens before them: a model that says so
    (``shifts_labels = True``) or a Hugging Face causal LM (one that generates, and not an encoder-decoder)."""
    if getattr(model, "shifts_labels", None) is not None:
        return bool(model.shifts_labels)
    config, generates = getattr(model, "config", None), getattr(model, "can_generate", None)
    return bool(config is not None and callable(generates) and generates()
                and not getattr(config, "is_encoder_decoder", False))


def vmappable(model) -> bool:
    """Whether vmap over parameter points may be tried on ``model``: not a Hugging Face model (its forward has
    data-dependent control flow, which vmap refuses) and no attention module (a vmapped attention kernel died on
    CUDA with "misaligned address", which poisons the process: every later CUDA call fails). Decided before
    running, from the modules."""
    if getattr(model, "config", None) is not None and hasattr(model, "can_generate"):
        return False
    attention = (torch.nn.MultiheadAttention, torch.nn.TransformerEncoderLayer, torch.nn.TransformerDecoderLayer)
    return not any(isinstance(m, attention) or "Attention" in type(m).__name__ for m in model.modules())


def label_tokens(labels: Tensor, shifted: bool) -> int:
    """The label tokens a language model's loss averages over: entries other than ``IGNORE`` (after the shift)."""
    return int(((labels[..., 1:] if shifted else labels) != IGNORE).sum())


def weight(X, y, how: str, shifted: bool) -> int:
    """What one batch's loss averages over (see the module docstring): ``how`` is "auto", "examples" or "tokens"."""
    if how == "tokens" or (how == "auto" and is_dict_batch(X) and "labels" in X):
        labels = X.get("labels") if isinstance(X, Mapping) else y
        if labels is None:
            raise ValueError("weights='tokens' needs labels: a dict batch with 'labels', or y holding the labels")
        return label_tokens(labels, shifted)
    return examples_in(X)


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


def inputs(X, model=None) -> tuple[tuple, dict]:
    """A batch's ``X`` as ``(args, kwargs)`` of the model: a tensor ``(X,)``, a tuple ``*X``, a dict ``**X``.

    A Hugging Face ``model`` that keeps an attention cache for generation (``config.use_cache``) is told
    not to: no analysis needs it, and it is not a tensor that autodiff can carry.
    """
    if isinstance(X, Mapping):
        kwargs = dict(X)
        if getattr(getattr(model, "config", None), "use_cache", False):
            kwargs.setdefault("use_cache", False)
        return (), kwargs
    return (tuple(X) if isinstance(X, (tuple, list)) else (X,)), {}


def cut(x, n: int):
    """The first ``n`` examples of a tensor, or of each tensor in a tuple, list or dict (along dim 0)."""
    return tree_map(lambda t: t[:n] if isinstance(t, Tensor) else t, x)


def is_pair(data) -> bool:
    """An ``(X, y)`` pair: ``y`` a tensor, ``X`` a tensor or a tuple or dict of tensors."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[1], Tensor)):
        return False
    X = data[0]
    leaves = X.values() if isinstance(X, Mapping) else X if isinstance(X, (tuple, list)) else [X]
    return len(leaves) > 0 and all(isinstance(t, Tensor) for t in leaves)


def from_numpy(data):
    """An ``(X, y)`` pair or a dict batch whose arrays are numpy's, with each array as a tensor (sharing its
    memory); anything else as it is."""
    if isinstance(data, (tuple, list)) and len(data) == 2 or isinstance(data, Mapping):
        return tree_map(lambda t: torch.from_numpy(t) if isinstance(t, np.ndarray) else t, data)
    return data


def batch_list(data, batch_size: int | None, device: torch.device, dtype: torch.dtype):
    """``data`` checked and made re-iterable: an ``(X, y)`` pair or one dict batch (numpy arrays become
    tensors) becomes a list of ``batch_size`` slices (views) on ``device``; any other re-iterable of batches
    is kept as it is."""
    data = from_numpy(data)
    if is_pair(data) or is_dict_batch(data):
        if is_pair(data) and examples_in(data[0]) != data[1].shape[0]:
            raise ValueError(f"X has {examples_in(data[0])} examples but y has {data[1].shape[0]}")
        counts = {examples_in(t) for t in (data.values() if is_dict_batch(data) else data)}
        if len(counts) > 1:
            raise ValueError(f"the dict's tensors hold different numbers of examples: {sorted(counts)}")
        (n,) = counts
        if n == 0:
            raise ValueError("the data set is empty")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        data, size = move(data, device, dtype), batch_size or n
        return [tree_map(lambda t: t[i:i + size], data) for i in range(0, n, size)]
    if batch_size is not None:
        raise ValueError("batch_size applies to an (X, y) pair or one dict of tensors; batches given as an "
                         "iterable are used as they come")
    if not isinstance(data, Iterable):
        raise ValueError(f"data must be an (X, y) pair of tensors, a dict of tensors, or an iterable of (X, y) or "
                         f"dict batches, got {type(data).__name__}")
    if not hasattr(data, "__len__") and iter(data) is data:
        raise ValueError("data is a one-shot iterator (a generator?); pass a list of batches or a "
                         "DataLoader, which can be iterated again for every pass")
    return data
