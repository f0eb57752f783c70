"""The empirical neural tangent kernel (NTK) of an ``Objective``'s model at a flat theta.

For inputs x, x' and a model with C outputs per example (an example's outputs are flattened),

    Theta(x, x')[c, d] = sum_p J(x)[c, p] J(x')[d, p],     J(x) = d f(theta, x) / d theta  [C, n]

Two shapes, said explicitly wherever they are chosen:

- ``outputs="full"``: ``[m1, m2, C, C]``, entry ``[i, j, c, d]`` = Theta(x_i, x'_j)[c, d];
- ``outputs="trace"``: the trace over the output index, ``[m1, m2]``, entry ``[i, j]`` =
  sum_c Theta(x_i, x'_j)[c, c].

As one matrix (``NTKOperator``) the full kernel of m inputs is ``[m*C, m*C]``, row and
column ``i*C + c``; it is J J^T for the stacked Jacobian J ``[m*C, n]``.

Two methods give the same numbers. ``"jacobian"`` forms per-example Jacobians
(``vmap`` over examples of ``jacrev``) a block of examples at a time and contracts them.
``"products"`` never holds a Jacobian: a column of the kernel is J1 (J2^T e), one ``vjp``
then one ``jvp``, and the kernel is built a chunk of columns at a time; it is there for
memory (n large, few inputs), not speed. Both chunk to the objective's memory budget
(``max_memory`` overrides it). Per-example Jacobians need an output per example that does
not depend on the rest of the batch, so the objective must be in eval mode (``train=False``).
"""

from __future__ import annotations

import torch
from torch.func import jacrev, jvp, vjp, vmap
from torch.utils._pytree import tree_flatten, tree_map

from landscape.core import memory
from landscape.core.data import examples
from landscape.core.hvp import autograd_on, twice_differentiable
from landscape.core.objective import Objective
from landscape.curvature.operators import CurvatureOperator

Tensor = torch.Tensor
METHODS = ("jacobian", "products")
OUTPUTS = ("full", "trace")


def _check(obj: Objective, method: str | None = None, outputs: str | None = None) -> None:
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if outputs is not None and outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {', '.join(OUTPUTS)}, got {outputs!r}")
    if obj.train:
        raise ValueError("the NTK needs an output per example, which train mode (batch statistics) does not "
                         "define; build the objective with train=False")


def _feature_shapes(X) -> tuple:
    leaves, spec = tree_flatten(X)
    return spec, [tuple(t.shape[1:]) for t in leaves]


def _rows(X, start: int, stop: int):
    return tree_map(lambda a: a[start:stop], X)


def _n_outputs(obj: Objective, theta: Tensor, X) -> int:
    """C, the number of outputs per example, from a forward pass of one example (which must be a tensor)."""
    with obj.configured(), torch.no_grad():
        outputs = obj.forward(theta, _rows(X, 0, 1))
    if not isinstance(outputs, Tensor):
        raise ValueError(f"the NTK needs a model whose outputs are one tensor; this one returns "
                         f"{type(outputs).__name__} (a language model's logits and loss): wrap it to return the logits")
    return outputs.numel()


def _budget(obj: Objective, max_memory: int | str | None) -> int:
    return memory.budget(obj.device, obj.max_memory if max_memory is None else max_memory)


def _jacobians(obj: Objective, theta: Tensor, X) -> Tensor:
    """Per-example Jacobians ``[m, C, n]`` of the examples ``X`` (call inside ``obj.configured()``)."""
    def one(t: Tensor, x) -> Tensor:
        return obj.forward(t, tree_map(lambda a: a.unsqueeze(0), x)).reshape(-1)

    return vmap(jacrev(one), in_dims=(None, 0))(theta, X)


def _jacobian_bytes(obj: Objective, C: int) -> int:
    """Bytes one example's Jacobian takes while it is made: C rows of n, and C reverse passes."""
    return C * (obj.space.n * obj.theta0.element_size() + obj.graph_bytes(1))


def _products(obj: Objective, theta: Tensor, X1, X2, U: Tensor, size: int) -> Tensor:
    """Rows ``J1 J2^T u`` ``[k, m1*C]`` for cotangents ``U [k, m2*C]``, ``size`` at a time (inside ``obj.configured()``)."""
    f1 = lambda t: obj.forward(t, X1).reshape(-1)  # noqa: E731
    f2 = f1 if X2 is None else (lambda t: obj.forward(t, X2).reshape(-1))
    _, pullback = vjp(f2, theta)

    def one(u: Tensor) -> Tensor:
        return jvp(f1, (theta,), (pullback(u)[0],))[1]

    return torch.cat([vmap(one)(chunk) for chunk in U.split(size)])


def _trace_outputs(full: Tensor) -> Tensor:
    """``[m1, m2, C, C]`` -> ``[m1, m2]``, the trace over the output index."""
    return full.diagonal(dim1=2, dim2=3).sum(-1)


def kernel(obj: Objective, X1, X2=None, *, theta: Tensor | None = None, method: str = "jacobian",
           outputs: str = "full", max_memory: int | str | None = None) -> Tensor:
    """The empirical NTK between the inputs ``X1 [m1, ...]`` and ``X2 [m2, ...]`` (default ``X1``).

    ``outputs="full"``: ``[m1, m2, C, C]``, entry ``[i, j, c, d]`` = sum_p J(x_i)[c, p] J(x'_j)[d, p].
    ``outputs="trace"``: ``[m1, m2]``, entry ``[i, j]`` = sum_c Theta(x_i, x'_j)[c, c].
    ``X1``, ``X2`` are batches as the objective's data holds them (a tensor, or a tuple or dict
    of tensors), with the same per-example shapes. ``theta`` defaults to ``obj.theta0``;
    ``method`` is ``"jacobian"`` (Jacobian blocks contracted) or ``"products"`` (vjp then jvp
    per column, no Jacobian held); ``max_memory`` caps the bytes either may use.
    """
    _check(obj, method, outputs)
    theta = obj.point(theta)
    X1, m1 = examples(X1, obj.device, obj.dtype, "X1")
    symmetric = X2 is None
    X2, m2 = (X1, m1) if symmetric else examples(X2, obj.device, obj.dtype, "X2")
    if not symmetric and _feature_shapes(X2) != _feature_shapes(X1):
        raise ValueError(f"X2's examples have shapes {_feature_shapes(X2)[1]}, X1's {_feature_shapes(X1)[1]}: "
                         f"they must match")
    C = _n_outputs(obj, theta, X1)
    limit = _budget(obj, max_memory)
    with obj.configured(), autograd_on(), twice_differentiable():
        if method == "products":
            per_column = obj.graph_bytes(m1) + obj.graph_bytes(m2) + obj.space.n * obj.theta0.element_size()
            size = memory.chunk_size(m2 * C, per_column, limit)
            full = torch.empty(m2 * C, m1 * C, dtype=obj.dtype, device=obj.device)
            for start in range(0, m2 * C, size):
                stop = min(start + size, m2 * C)
                E = torch.zeros(stop - start, m2 * C, dtype=obj.dtype, device=obj.device)
                E[torch.arange(stop - start, device=obj.device), torch.arange(start, stop, device=obj.device)] = 1
                full[start:stop] = _products(obj, theta, X1, None if symmetric else X2, E, stop - start)
            full = full.T.reshape(m1, C, m2, C).permute(0, 2, 1, 3)
            return (full if outputs == "full" else _trace_outputs(full)).detach()
        size = memory.chunk_size(max(m1, m2), 2 * _jacobian_bytes(obj, C), limit)
        shape = (m1, m2, C, C) if outputs == "full" else (m1, m2)
        out = torch.empty(shape, dtype=obj.dtype, device=obj.device)
        pattern = "acp,bdp->abcd" if outputs == "full" else "acp,bcp->ab"
        for j in range(0, m2, size):
            J2 = _jacobians(obj, theta, _rows(X2, j, j + size))
            for i in range(0, m1, size):
                if symmetric and i > j:
                    continue  # the mirror of block (j, i), filled below
                J1 = J2 if symmetric and i == j else _jacobians(obj, theta, _rows(X1, i, i + size))
                block = torch.einsum(pattern, J1, J2)
                out[i:i + size, j:j + size] = block
                if symmetric and i < j:
                    out[j:j + size, i:i + size] = block.permute(1, 0, 3, 2) if outputs == "full" else block.T
        return out.detach()


def diagonal(obj: Objective, X, *, theta: Tensor | None = None, outputs: str = "full",
             max_memory: int | str | None = None) -> Tensor:
    """The kernel's diagonal, exactly, from per-example Jacobian norms (no kernel formed).

    ``outputs="full"``: ``[m, C]``, entry ``[i, c]`` = Theta(x_i, x_i)[c, c] = ||J(x_i)[c]||^2, the
    diagonal of ``NTKOperator(obj, X)`` as ``[m, C]``. ``outputs="trace"``: ``[m]``, the sum over c.
    """
    _check(obj, outputs=outputs)
    theta = obj.point(theta)
    X, m = examples(X, obj.device, obj.dtype, "X")
    C = _n_outputs(obj, theta, X)
    size = memory.chunk_size(m, _jacobian_bytes(obj, C), _budget(obj, max_memory))
    with obj.configured(), autograd_on(), twice_differentiable():
        norms = torch.cat([_jacobians(obj, theta, _rows(X, i, i + size)).square().sum(-1).detach()
                           for i in range(0, m, size)])
    return norms if outputs == "full" else norms.sum(-1)


def trace(obj: Objective, X, *, theta: Tensor | None = None, max_memory: int | str | None = None) -> Tensor:
    """tr Theta = sum_i sum_c ||J(x_i)[c]||^2 = ||J||_F^2, a 0-dim tensor (the same for both ``outputs``)."""
    return diagonal(obj, X, theta=theta, outputs="full", max_memory=max_memory).sum()


class NTKOperator(CurvatureOperator):
    """The empirical NTK of the inputs ``X [m, ...]`` as a symmetric operator, by vjp/jvp products.

    ``outputs="full"``: the ``[m*C, m*C]`` matrix J J^T (row and column ``i*C + c``);
    ``outputs="trace"``: the ``[m, m]`` kernel summed over the output index, each product
    then costing C full ones. ``op @ V`` for ``V [k, N]`` is ``V Theta``; no Jacobian is
    formed. ``landscape.eigenvalues(NTKOperator(obj, X), k=5)`` gives the top spectrum.
    """

    def __init__(self, obj: Objective, X, *, theta: Tensor | None = None, outputs: str = "full",
                 max_memory: int | str | None = None):
        _check(obj, outputs=outputs)
        super().__init__(obj, theta)
        self.X, self.m = examples(X, obj.device, obj.dtype, "X")
        self.outputs, self.max_memory = outputs, max_memory
        self.C = _n_outputs(obj, self.theta, self.X)

    @property
    def shape(self) -> tuple[int, int]:
        N = self.m * self.C if self.outputs == "full" else self.m
        return (N, N)

    def _matmat(self, V: Tensor) -> Tensor:
        obj, m, C = self.obj, self.m, self.C
        if self.outputs == "trace":
            # u = v (x) e_c for each c; sum_c of output c of J J^T u is the traced kernel times v.
            U = torch.zeros(len(V), C, m, C, dtype=V.dtype, device=V.device)
            for c in range(C):
                U[:, c, :, c] = V
            V = U.reshape(len(V) * C, m * C)
        per_row = 2 * obj.graph_bytes(m) + obj.space.n * obj.theta0.element_size()
        size = memory.chunk_size(len(V), per_row, _budget(obj, self.max_memory))
        with obj.configured():
            out = _products(obj, self.theta, self.X, None, V, size).detach()
        if self.outputs == "trace":
            out = out.reshape(-1, C, m, C).diagonal(dim1=1, dim2=3).sum(-1)
        return out
