"""Flat parameter vectors and the model's named parameters.

A point of parameter space is one flat tensor ``theta [n]`` (a batch of points or of
vectors is ``[k, n]``), laid out in the model's ``named_parameters()`` order. ``ParamSpace``
turns it into named tensors for ``torch.func.functional_call``, as views, not copies.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

import torch
from torch import nn

Tensor = torch.Tensor


class ParamSpace:
    """Flat vectors <-> named parameter tensors of ``model``.

    ``params`` selects a subset by names or glob patterns (``"fc1.*"``); ``None``
    takes every parameter with ``requires_grad``. The flat order is the model's
    ``named_parameters()`` order.
    """

    def __init__(self, model: nn.Module, params: str | Sequence[str] | None = None):
        trainable: dict[str, nn.Parameter] = {}
        alias: dict[str, str] = {}  # every name of a parameter, tied ones included -> its first name
        first: dict[int, str] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            if p.requires_grad:
                alias[name] = first.setdefault(id(p), name)
                trainable.setdefault(alias[name], p)
        if not trainable:
            raise ValueError("the model has no trainable parameters (none with requires_grad=True)")
        if params is None:
            chosen = set(trainable)
        else:
            patterns = [params] if isinstance(params, str) else list(params)
            if not patterns:
                raise ValueError("params is empty: give parameter names or glob patterns, or None for all")
            chosen = set()
            for pattern in patterns:
                hits = [alias[name] for name in alias if fnmatch.fnmatchcase(name, pattern)]
                if not hits:
                    listing = ", ".join(list(trainable)[:12]) + (", ..." if len(trainable) > 12 else "")
                    raise ValueError(f"parameter pattern {pattern!r} matches no trainable parameter; "
                                     f"the model has: {listing}")
                chosen.update(hits)
        self.names = tuple(name for name in trainable if name in chosen)
        self.shapes = tuple(trainable[name].shape for name in self.names)
        self.numels = tuple(trainable[name].numel() for name in self.names)
        self.n = sum(self.numels)

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """``[n]`` -> ``{name: [*shape]}`` or ``[k, n]`` -> ``{name: [k, *shape]}``, as views of ``theta``."""
        if theta.shape[-1:] != (self.n,):
            raise ValueError(f"expected a parameter vector with last dimension {self.n}, got shape "
                             f"{tuple(theta.shape)}")
        lead = theta.shape[:-1]
        pieces = theta.split(self.numels, dim=-1)
        return {name: t.view(lead + shape) for name, t, shape in zip(self.names, pieces, self.shapes)}

    def flatten(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """``{name: [*shape]}`` -> ``[n]`` (a new tensor, in this space's order)."""
        return torch.cat([tensors[name].reshape(-1) for name in self.names])

    def slices(self) -> dict[str, slice]:
        """Where each named parameter lives in the flat vector."""
        ends = torch.tensor(self.numels).cumsum(0).tolist()
        return {name: slice(end - size, end) for name, end, size in zip(self.names, ends, self.numels)}

