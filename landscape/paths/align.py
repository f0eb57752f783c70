"""Permutation alignment by weight matching (Ainsworth et al. 2022, "Git Re-Basin", Algorithm 1).

Permuting a hidden layer's units, together with the next layer's inputs, leaves the
function unchanged. Weight matching looks for the permutations P_l of model B's units that
maximize sum_l <W_l^A, P_l W_l^B P_{l-1}^T> (weights, biases and normalization affine
parameters), one group at a time: with the neighbouring permutations fixed, group l is a
linear assignment problem, C[i, j] = sum over the tensors touching l of <A's slice for unit
i, B's slice for unit j>, solved exactly by ``scipy.optimize.linear_sum_assignment``.

The groups, and which of them permute each tensor, come from the model's graph (``paths.groups``: one group
per residual stream, per hidden layer, per attention layer's heads); what it cannot read is refused there.
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
from landscape.paths.groups import Axes, structure, units

Tensor = torch.Tensor
__all__ = ["Alignment", "output_gap", "structure", "units", "weight_matching"]


def _index(p: Tensor, size: int, repeat: int = 1) -> Tensor:
    """The index along a dim of ``size`` entries that moves its units by ``p``: ``repeat`` segments (an attention
    layer's q, k and v), each of len(p) units of size / (repeat len(p)) entries (a head's dims, a flattened map)."""
    n = len(p)
    block = size // (repeat * n)
    unit = (p[:, None] * block + torch.arange(block, device=p.device)).reshape(-1)
    return (torch.arange(repeat, device=p.device)[:, None] * (n * block) + unit).reshape(-1)


def _permute(t: Tensor, axes: Axes, perms: Mapping[str, Tensor]) -> Tensor:
    """t with the units of dim 0 moved by ``perms[out]`` (in its segments) and of dim 1 by ``perms[inp]``, for
    ``axes`` = (out, inp[, segments])."""
    out, inp, *segments = axes
    repeat = segments[0] if segments else 1
    if out is not None:
        t = t.index_select(0, _index(perms[out].to(t.device), t.shape[0], repeat))
    if inp is not None:
        t = t.index_select(1, _index(perms[inp].to(t.device), t.shape[1]))
    return t


def _rows(t: Tensor, units: int, dim: int, repeat: int = 1) -> Tensor:
    """t as [units, -1], one row per unit along ``dim`` (0: outputs, in ``repeat`` segments; 1: inputs)."""
    x = t.movedim(dim, 0)
    block = x.shape[0] // ((repeat if dim == 0 else 1) * units)
    return x.reshape(repeat if dim == 0 else 1, units, block, -1).transpose(0, 1).reshape(units, -1)


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
        groups, axes = structure(model)
        _check_same(model.state_dict(), state, "the state dict and the model")
        sizes = {g: len(p) for g, p in self.permutations.items()}
        if sizes != groups:
            raise ValueError(f"the alignment's groups {sizes} are not the model's {groups}")
        for g, p in self.permutations.items():
            if not torch.equal(p.cpu().sort().values, torch.arange(len(p), dtype=p.dtype)):
                raise ValueError(f"permutations[{g!r}] is not a permutation of 0..{len(p) - 1}")
        return {key: _permute(t, axes[key], self.permutations) for key, t in state.items()}

    def apply(self, model: nn.Module, probe=None) -> nn.Module:
        """A permuted deep copy of ``model`` (parameters and buffers): the same function, reordered units.

        ``probe``: inputs for ``model`` (a tensor, a tuple of them, or a dict of keyword arguments); the copy's
        outputs on it are checked against the model's, and a change beyond rounding (sqrt(eps) of the output's
        dtype, relative to the largest output) is an error: never a different function without a word."""
        aligned = copy.deepcopy(model)
        aligned.load_state_dict(self.permute(model.state_dict(), model))
        for p in aligned.parameters():
            p.grad = None  # a gradient of the unpermuted weights would be wrong here
        if probe is not None:
            gap, tol = output_gap(model, aligned, probe)
            if not gap <= tol:
                raise ValueError(f"the aligned model computes a different function: its outputs on the probe batch "
                                 f"differ by {gap:.2g} (relative; rounding allows {tol:.1g}); the permutations do "
                                 f"not fit this model's structure")
        return aligned

    def moved(self) -> float:
        """The share of units, over all groups, with perm[i] != i."""
        total = sum(len(p) for p in self.permutations.values())
        changed = sum(int((p != torch.arange(len(p), device=p.device)).sum()) for p in self.permutations.values())
        return changed / total if total else 0.0

    def to_dict(self) -> dict:
        return jsonable({"iterations": self.iterations, "similarity": self.similarity, "seconds": self.seconds,
                         "moved": self.moved(), "units": {g: len(p) for g, p in self.permutations.items()}})


def output_gap(model: nn.Module, other: nn.Module, probe) -> tuple[float, float]:
    """(max |f_other - f_model| / max |f_model| over every output tensor on ``probe``, the rounding allowance
    sqrt(eps) of the outputs' dtype), both models in eval mode for the comparison."""
    reference = next((p for p in model.parameters() if p.is_floating_point()), torch.empty(0))

    def like_model(item):
        if isinstance(item, Tensor):
            return item.to(reference.device, reference.dtype if item.is_floating_point() else item.dtype)
        if isinstance(item, Mapping):
            return {k: like_model(v) for k, v in item.items()}
        return tuple(like_model(v) for v in item) if isinstance(item, (tuple, list)) else item

    probe = like_model(probe)

    def outputs(m: nn.Module) -> list[Tensor]:
        was = m.training
        m.eval()
        try:
            with torch.no_grad():
                out = m(**probe) if isinstance(probe, Mapping) else m(*probe) if isinstance(probe, tuple) else m(probe)
        finally:
            m.train(was)
        found: list[Tensor] = []
        stack = [out]
        while stack:
            item = stack.pop()
            if isinstance(item, Tensor):
                found.append(item.detach().double())
            elif isinstance(item, Mapping):
                stack.extend(item.values())
            elif isinstance(item, (tuple, list)):
                stack.extend(item)
        return found

    mine, theirs = outputs(model), outputs(other)
    scale = max([float(t.abs().max()) for t in mine if t.numel()] + [torch.finfo(torch.float64).tiny])
    gap = max([float((a - b).abs().max()) for a, b in zip(mine, theirs) if a.numel()] + [0.0]) / scale
    return gap, float(torch.finfo(reference.dtype).eps) ** 0.5


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
    groups, axes = structure(model_a)
    _check_same(model_a.state_dict(), model_b.state_dict(), "the models")
    A = {k: p.detach().to("cpu", torch.float64) for k, p in model_a.named_parameters()}
    B = {k: p.detach().to("cpu", torch.float64) for k, p in model_b.named_parameters()}
    perms = {g: torch.arange(n) for g, n in groups.items()}

    def similarity() -> float:
        return sum(float((A[k] * _permute(B[k], axes[k], perms)).sum()) for k in A)

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
                out, inp, *segments = axes[k]
                for dim in [d for d, group in ((0, out), (1, inp)) if group == g]:
                    # B with its other dim permuted as it stands (by g itself too: a weight from and to one
                    # residual stream), this dim's units left for the assignment
                    b = _permute(B[k], (None, inp, *segments) if dim == 0 else (out, None, *segments), perms)
                    C += _rows(A[k], n, dim, *segments) @ _rows(b, n, dim, *segments).T
            cols = torch.from_numpy(linear_sum_assignment(C.numpy(), maximize=True)[1]).long()
            new, old = C[torch.arange(n), cols].sum(), C[torch.arange(n), perms[g]].sum()
            if new > old + 1e-12 * old.abs():  # ties keep the current permutation, so sweeps terminate
                perms[g], changed = cols, True
        if not changed:
            break
    return Alignment(perms, iterations, (before, similarity()), time.perf_counter() - start)
