"""Permutation alignment by weight matching (Ainsworth et al. 2022, "Git Re-Basin", Algorithm 1).

Permuting a hidden layer's units, together with the next layer's inputs, leaves the
function unchanged. Weight matching looks for the permutations P_l of model B's units that
maximize sum_l <W_l^A, P_l W_l^B P_{l-1}^T> (weights, biases and normalization affine
parameters), one group at a time: with the neighbouring permutations fixed, group l is a
linear assignment problem, C[i, j] = sum over the tensors touching l of <A's slice for unit
i, B's slice for unit j>, solved exactly by ``scipy.optimize.linear_sum_assignment``.

Models are chains: the leaf modules (``named_modules()`` without children), in registration
order, are taken to be the order in which ``forward`` runs them, each feeding the next. The
check is structural only; a model whose forward skips, reorders or adds (residuals) is not
detected. A group is named after the Linear/Conv layer whose outputs it holds; the last
weight layer's outputs (the model's outputs) are never permuted. After a Flatten of a conv
output with C channels, the next Linear's inputs are C blocks of S = in_features / C.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from landscape.core.results import jsonable

Tensor = torch.Tensor
Axes = tuple[str | None, str | None]  # the groups permuting a tensor's dim 0 (outputs) and dim 1 (inputs)

WEIGHTS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm)
POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.LPPool1d,
         nn.LPPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
         nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
PASS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU, nn.SELU, nn.CELU, nn.SiLU, nn.Mish,
        nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Hardshrink, nn.Softshrink,
        nn.Tanhshrink, nn.LogSigmoid, nn.Threshold, nn.Softmax, nn.LogSoftmax, nn.Identity, nn.Dropout,
        nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Flatten) + POOLS
SUPPORTED = ("align supports chains of Linear, Conv1d/2d/3d (groups=1), BatchNorm1d/2d/3d, LayerNorm over the "
             "units, elementwise activations, dropout, pooling and Flatten")


def _structure(model: nn.Module) -> tuple[dict[str, int], dict[str, Axes]]:
    """The groups {name: units} and, for every state-dict key, the groups permuting its dims 0 and 1."""
    leaves = [(name, m) for name, m in model.named_modules() if next(m.children(), None) is None]
    last = [name for name, m in leaves if isinstance(m, WEIGHTS)][-1:]
    groups: dict[str, int] = {}
    axes: dict[str, Axes] = {}
    prev: tuple[str, nn.Module] | None = None  # the last weight layer seen
    flattened = False
    for name, m in leaves:
        what = f"layer {name or '(the model)'!r} ({type(m).__name__})"
        group = prev[0] if prev is not None and prev[0] in groups else None
        if isinstance(m, WEIGHTS):
            if not isinstance(m, nn.Linear) and m.groups != 1:
                raise ValueError(f"{what} has groups={m.groups}; {SUPPORTED}")
            n_in = m.in_features if isinstance(m, nn.Linear) else m.in_channels
            if group is not None:
                width = groups[group]
                blocks = isinstance(m, nn.Linear) and not isinstance(prev[1], nn.Linear)
                if blocks and not flattened:
                    raise ValueError(f"{what} follows the conv {group!r} without a Flatten; {SUPPORTED}")
                if n_in != width and not (blocks and n_in % width == 0):
                    raise ValueError(f"{what} takes {n_in} inputs but {group!r} gives {width} units")
            out = None if [name] == last else name
            if out is not None:
                groups[out] = m.out_features if isinstance(m, nn.Linear) else m.out_channels
            axes.update({_key(name, k): (out, group if k == "weight" else None) for k in m.state_dict()})
            prev, flattened = (name, m), False
        elif isinstance(m, NORMS):
            if group is not None:
                size = m.normalized_shape if isinstance(m, nn.LayerNorm) else (m.num_features,)
                after_conv = isinstance(m, nn.LayerNorm) and not isinstance(prev[1], nn.Linear)  # on [N, C, L]: over L
                if tuple(size) != (groups[group],) or after_conv:
                    raise ValueError(f"{what} must normalize the {groups[group]} units of {group!r}: BatchNorm with "
                                     f"num_features={groups[group]}, or LayerNorm({groups[group]}) after a Linear")
            axes.update({_key(name, k): (group if t.dim() == 1 else None, None) for k, t in m.state_dict().items()})
        elif isinstance(m, PASS) and not m.state_dict():
            if isinstance(m, POOLS) and group is not None and isinstance(prev[1], nn.Linear):
                raise ValueError(f"{what} after the Linear {group!r} would pool across its units")
            flattened = flattened or (isinstance(m, nn.Flatten) and m.start_dim == 1)
        else:
            raise ValueError(f"{what} is not supported; {SUPPORTED}")
    for key in model.state_dict():
        if key not in axes:
            owner = key.rpartition(".")[0]
            raise ValueError(f"{key!r} belongs to {owner or '(the model)'!r} "
                             f"({type(model.get_submodule(owner)).__name__}), which is not a chain layer; {SUPPORTED}")
    return groups, axes


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def units(model: nn.Module) -> dict[str, int]:
    """The permutable hidden-unit groups of a chain model: {name of the layer whose outputs they are: number of units}.

    e.g. ``nn.Sequential(Linear(64, 32), Tanh(), Linear(32, 10)) -> {"0": 32}``.
    """
    return _structure(model)[0]


def _permute(t: Tensor, out: str | None, inp: str | None, perms: Mapping[str, Tensor]) -> Tensor:
    """t[P_out][:, P_in], the inputs taken as [t.shape[0], units, -1] blocks (conv kernels, flattened maps)."""
    if out is not None:
        t = t[perms[out].to(t.device)]
    if inp is not None:
        p = perms[inp].to(t.device)
        t = t.reshape(t.shape[0], len(p), -1)[:, p].reshape(t.shape)
    return t


def _rows(t: Tensor, units: int, dim: int) -> Tensor:
    """t as [units, -1], one row per unit along ``dim`` (0: outputs, 1: inputs)."""
    return t.reshape(units, -1) if dim == 0 else t.reshape(t.shape[0], units, -1).transpose(0, 1).reshape(units, -1)


def _check_same(a: Mapping[str, Tensor], b: Mapping[str, Tensor], what: str) -> None:
    for key in [*a, *(k for k in b if k not in a)]:
        if key not in a or key not in b or a[key].shape != b[key].shape:
            shapes = [tuple(s[key].shape) if key in s else "missing" for s in (a, b)]
            raise ValueError(f"{what} differ at {key!r}: {shapes[0]} against {shapes[1]}")


@dataclass
class Alignment:
    """Permutations of a model's hidden units: ``permutations[group] [units]``, aligned unit i is unit perm[i].

    ``similarity`` is sum_l <W_l^A, P_l W_l^B P_{l-1}^T> over all parameters, before (identity) and after.
    """

    permutations: dict[str, Tensor]
    iterations: int = 0
    similarity: tuple[float, float] | None = None
    seconds: float = 0.0

    def permute(self, state: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        """``state`` (a state dict shaped like ``model``'s) with each tensor's units permuted; others passed through."""
        groups, axes = _structure(model)
        _check_same(model.state_dict(), state, "the state dict and the model")
        sizes = {g: len(p) for g, p in self.permutations.items()}
        if sizes != groups:
            raise ValueError(f"the alignment's groups {sizes} are not the model's {groups}")
        for g, p in self.permutations.items():
            if not torch.equal(p.cpu().sort().values, torch.arange(len(p), dtype=p.dtype)):
                raise ValueError(f"permutations[{g!r}] is not a permutation of 0..{len(p) - 1}")
        return {key: _permute(t, *axes[key], self.permutations) for key, t in state.items()}

    def apply(self, model: nn.Module) -> nn.Module:
        """A permuted deep copy of ``model`` (parameters and buffers): the same function, reordered units."""
        aligned = copy.deepcopy(model)
        aligned.load_state_dict(self.permute(model.state_dict(), model))
        for p in aligned.parameters():
            p.grad = None  # a gradient of the unpermuted weights would be wrong here
        return aligned

    def moved(self) -> float:
        """The share of units, over all groups, with perm[i] != i."""
        total = sum(len(p) for p in self.permutations.values())
        changed = sum(int((p != torch.arange(len(p), device=p.device)).sum()) for p in self.permutations.values())
        return changed / total if total else 0.0

    def to_dict(self) -> dict:
        return jsonable({"iterations": self.iterations, "similarity": self.similarity, "seconds": self.seconds,
                         "moved": self.moved(), "units": {g: len(p) for g, p in self.permutations.items()}})


def weight_matching(model_a: nn.Module, model_b: nn.Module, *, max_iter: int = 100, seed: int = 0) -> Alignment:
    """Permutations of model_b's hidden units that make its weights most similar to model_a's.

    Coordinate ascent on sum_l <W_l^A, P_l W_l^B P_{l-1}^T>: each sweep visits the groups in a
    random order (``seed``) and solves each one's assignment problem exactly, in float64 on the
    CPU, keeping the current permutation unless the new one is strictly better; it stops after
    a sweep that changes nothing (a local optimum: no group alone can improve) or ``max_iter``
    sweeps. ``alignment.apply(model_b)`` computes the same function as ``model_b``.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    start = time.perf_counter()
    groups, axes = _structure(model_a)
    _check_same(model_a.state_dict(), model_b.state_dict(), "the models")
    A = {k: p.detach().to("cpu", torch.float64) for k, p in model_a.named_parameters()}
    B = {k: p.detach().to("cpu", torch.float64) for k, p in model_b.named_parameters()}
    perms = {g: torch.arange(n) for g, n in groups.items()}

    def similarity() -> float:
        return sum(float((A[k] * _permute(B[k], *axes[k], perms)).sum()) for k in A)

    before = similarity()
    names = list(groups)
    generator = torch.Generator().manual_seed(seed)
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        changed = False
        for g in (names[i] for i in torch.randperm(len(names), generator=generator).tolist()):
            n = groups[g]
            C = torch.zeros(n, n, dtype=torch.float64)
            for k in A:
                out, inp = axes[k]
                if g in (out, inp):  # B permuted by the neighbouring groups only
                    b = _permute(B[k], None if out == g else out, None if inp == g else inp, perms)
                    dim = 0 if out == g else 1
                    C += _rows(A[k], n, dim) @ _rows(b, n, dim).T
            cols = torch.from_numpy(linear_sum_assignment(C.numpy(), maximize=True)[1]).long()
            new, old = C[torch.arange(n), cols].sum(), C[torch.arange(n), perms[g]].sum()
            if new > old + 1e-12 * old.abs():  # ties keep the current permutation, so sweeps terminate
                perms[g], changed = cols, True
        if not changed:
            break
    return Alignment(perms, iterations, (before, similarity()), time.perf_counter() - start)
