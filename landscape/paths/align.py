"""Permutation alignment by weight matching (Ainsworth et al. 2022, "Git Re-Basin", Algorithm 1).

Permuting a hidden layer's units, together with the next layer's inputs, leaves the
function unchanged. Weight matching looks for the permutations P_l of model B's units that
maximize sum_l <W_l^A, P_l W_l^B P_{l-1}^T> (weights, biases and normalization affine
parameters), one group at a time: with the neighbouring permutations fixed, group l is a
linear assignment problem, C[i, j] = sum over the tensors touching l of <A's slice for unit
i, B's slice for unit j>, solved exactly by ``scipy.optimize.linear_sum_assignment``.

The groups, and which of them permute each tensor, come from the operations the forward runs on a probe batch
(``paths.groups``: one group per residual stream, per hidden layer, per attention layer's heads and head dims);
a tensor dim may hold several groups' units (a projection's rows as q/k/v x heads x head dims), each moved as
a digit of the dim's mixed-radix index. A model torch.export cannot trace is refused there.

Where a group's units hold another group's (heads, each with its head dims), the outer group's cost is nested:
C[i, j] adds, for unit i of A against unit j of B, the best assignment of their inner units (one
``linear_sum_assignment`` per pair), so heads are matched whatever the head dims' permutation is at the time.
Matched against the head dims as they stood, coordinate ascent stopped 0.1% short of a scrambled 2-layer
GPT-2's exact copy for 3 scrambles in 8; nested, it finds all 8.
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
from landscape.paths.groups import Dim, Structure, arguments, structure, tensors

Tensor = torch.Tensor
__all__ = ["Alignment", "Structure", "output_gap", "structure", "weight_matching"]


def _index(dim: Dim, perms: Mapping[str, Tensor], skip: tuple[int, ...] = ()) -> Tensor:
    """The index along a dim made of ``dim``'s atoms (mixed radix, outermost first) that moves each atom of a group
    by its permutation (aligned unit i reads unit perm[i]); the atoms at the positions in ``skip`` left in place."""
    index = torch.zeros((), dtype=torch.long)
    for position, (size, group) in enumerate(dim):
        digits = perms[group] if group is not None and position not in skip else torch.arange(size)
        index = (index[..., None] * size + digits.cpu()).reshape(-1)
    return index


def _permute(t: Tensor, axes: tuple[Dim | None, ...], perms: Mapping[str, Tensor], skip_dim: int = -1,
             skip: tuple[int, ...] = ()) -> Tensor:
    """t with every dim's atoms moved by their groups' permutations (dim ``skip_dim``'s atoms at the positions
    ``skip`` left in place)."""
    for d, dim in enumerate(axes):
        if dim is not None:
            t = t.index_select(d, _index(dim, perms, skip if d == skip_dim else ()).to(t.device))
    return t


def _rows(t: Tensor, dim: Dim, d: int, *positions: int) -> Tensor:
    """t as [units, -1] (or [units, inner units, -1] for two positions): the atoms at ``positions`` of dim ``d``
    first."""
    x = t.movedim(d, 0)
    x = x.reshape(*(size for size, _ in dim), *x.shape[1:]).movedim(positions, tuple(range(len(positions))))
    return x.reshape(*x.shape[:len(positions)], -1)


def _check_same(a: Mapping[str, tuple], b: Mapping[str, tuple], what: str) -> None:
    """Two {key: shape} maps the same, or the first key where they differ named."""
    for key in [*a, *(k for k in b if k not in a)]:
        if key not in a or key not in b or tuple(a[key]) != tuple(b[key]):
            shapes = [tuple(s[key]) if key in s else "missing" for s in (a, b)]
            raise ValueError(f"{what} differ at {key!r}: {shapes[0]} against {shapes[1]}")


def _shapes(state: Mapping[str, Tensor]) -> dict[str, tuple]:
    return {k: tuple(t.shape) for k, t in state.items()}


@dataclass
class Alignment:
    """Permutations of a model's hidden units: ``permutations[group] [units]``, aligned unit i is unit perm[i], for
    the model whose ``structure`` (``paths.groups``) names the groups and the tensors they permute.

    ``similarity`` is sum_l <W_l^A, P_l W_l^B P_{l-1}^T> over all parameters, before (identity) and after.
    """

    permutations: dict[str, Tensor]
    structure: Structure
    iterations: int = 0
    similarity: tuple[float, float] | None = None
    seconds: float = 0.0

    def permute(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``state`` (a state dict shaped like the structure's model) with each tensor's units permuted."""
        _check_same(self.structure.shapes, _shapes(state), "the state dict and the alignment's model")
        sizes = {g: len(p) for g, p in self.permutations.items()}
        if sizes != self.structure.groups:
            raise ValueError(f"the alignment's groups {sizes} are not the model's {self.structure.groups}")
        for g, p in self.permutations.items():
            if not torch.equal(p.cpu().sort().values, torch.arange(len(p), dtype=p.dtype)):
                raise ValueError(f"permutations[{g!r}] is not a permutation of 0..{len(p) - 1}")
        return {key: _permute(t, self.structure.axes[key], self.permutations) for key, t in state.items()}

    def apply(self, model: nn.Module, probe=None) -> nn.Module:
        """A permuted deep copy of ``model`` (parameters and buffers): the same function, reordered units.

        ``probe``: inputs for ``model`` (a tensor, a tuple of them, or a dict of keyword arguments); the copy's
        outputs on it are checked against the model's, and a change beyond rounding (sqrt(eps) of the output's
        dtype, relative to the largest output) is an error: never a different function without a word."""
        aligned = copy.deepcopy(model)
        aligned.load_state_dict(self.permute(model.state_dict()))
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
                         "moved": self.moved(), "units": {g: len(p) for g, p in self.permutations.items()},
                         "pinned": self.structure.pinned})


def output_gap(model: nn.Module, other: nn.Module, probe) -> tuple[float, float]:
    """(max |f_other - f_model| / max |f_model| over every output tensor on ``probe``, the rounding allowance
    sqrt(eps) of the outputs' dtype), both models in eval mode for the comparison."""
    args, kwargs = arguments(model, probe)

    def outputs(m: nn.Module) -> list[Tensor]:
        was = m.training
        m.eval()
        try:
            with torch.no_grad():
                return [t.detach().double() for t in tensors(m(*args, **kwargs))]
        finally:
            m.train(was)

    mine, theirs = outputs(model), outputs(other)
    scale = max([float(t.abs().max()) for t in mine if t.numel()] + [torch.finfo(torch.float64).tiny])
    gap = max([float((a - b).abs().max()) for a, b in zip(mine, theirs) if a.numel()] + [0.0]) / scale
    reference = next((p for p in model.parameters() if p.is_floating_point()), torch.empty(0))
    return gap, float(torch.finfo(reference.dtype).eps) ** 0.5


def weight_matching(model_a: nn.Module, model_b: nn.Module, probe, *, max_iter: int = 100,
                    seed: int = 0) -> Alignment:
    """Permutations of model_b's hidden units that make its weights most similar to model_a's.

    ``probe``: a batch of inputs (a tensor, a tuple, or a dict of keyword arguments) on which the forward is
    traced to find the groups (``paths.groups.structure``). Coordinate ascent on
    sum_l <W_l^A, P_l W_l^B P_{l-1}^T>: each sweep visits the groups in a random order (``seed``) and solves
    each one's assignment problem exactly, in float64 on the CPU, keeping the current permutation unless the new
    one is strictly better; it stops after a sweep that changes nothing (a local optimum: no group alone can
    improve) or ``max_iter`` sweeps. ``alignment.apply(model_b)`` computes the same function as ``model_b``.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    start = time.perf_counter()
    _check_same(_shapes(model_a.state_dict()), _shapes(model_b.state_dict()), "the models")
    found = structure(model_a, probe)
    groups, axes = found.groups, found.axes
    A = {k: p.detach().to("cpu", torch.float64) for k, p in model_a.named_parameters()}
    B = {k: p.detach().to("cpu", torch.float64) for k, p in model_b.named_parameters()}
    perms = {g: torch.arange(n) for g, n in groups.items()}
    touching = {g: [(k, d, position) for k in A for d, dim in enumerate(axes[k]) if dim is not None
                    for position, (_, group) in enumerate(dim) if group == g] for g in groups}

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
            nested = {}  # per group of inner units sharing a dim with g: [n, n, m, m] for each (i, j) pair
            for k, d, position in touching[g]:
                dim = axes[k][d]
                inner = [q for q, (_, h) in enumerate(dim) if q > position and h not in (None, g)]
                # B with every other atom permuted as it stands (g's own in other dims too: a weight from and to
                # one residual stream), this one's units left for the assignment
                if not inner:
                    b = _permute(B[k], axes[k], perms, d, (position,))
                    C += _rows(A[k], dim, d, position) @ _rows(b, dim, d, position).T
                    continue
                # units with units of another group inside them (heads and their dims): unit i against unit j
                # as well as their inner units can match, whatever the inner group's permutation now
                q = inner[0]
                b = _permute(B[k], axes[k], perms, d, (position, q))
                pair = torch.einsum("ipx,jrx->ijpr", _rows(A[k], dim, d, position, q), _rows(b, dim, d, position, q))
                nested[dim[q][1]] = nested.get(dim[q][1], 0) + pair
            for pair in nested.values():
                best = [[pair[i, j].numpy()[linear_sum_assignment(pair[i, j].numpy(), maximize=True)].sum()
                         for j in range(n)] for i in range(n)]
                C += torch.tensor(best, dtype=torch.float64)
            cols = torch.from_numpy(linear_sum_assignment(C.numpy(), maximize=True)[1]).long()
            new, old = C[torch.arange(n), cols].sum(), C[torch.arange(n), perms[g]].sum()
            if new > old + 1e-12 * old.abs():  # ties keep the current permutation, so sweeps terminate
                perms[g], changed = cols, True
        if not changed:
            break
    return Alignment(perms, found, iterations, (before, similarity()), time.perf_counter() - start)
