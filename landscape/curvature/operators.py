"""Curvature operators of an ``Objective`` at a point: Hessian, generalized Gauss-Newton, empirical Fisher.

Each is a symmetric ``n x n`` matrix ``M`` known only through products:
``op @ v`` for ``v [n]`` is ``M v``; ``op @ V`` for ``V [k, n]`` is ``V M`` (row i is
``M V[i]``). Algorithms take anything with ``shape``, ``dtype``, ``device`` and this
``@``. ``to_scipy()`` wraps an operator as a ``scipy.sparse.linalg.LinearOperator``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch.func import grad, jvp, vjp, vmap
from torch.utils._pytree import tree_map

from landscape.core import memory
from landscape.core.hvp import DERIVATIVE_PATH, autograd_on, twice_differentiable
from landscape.core.data import examples_in
from landscape.core.errors import UserCodeError
from landscape.core.objective import Objective, model_loss

Tensor = torch.Tensor


class CurvatureOperator:
    """Base class: subclasses override ``_matmat(V [k, n]) -> [k, n]``. ``n_matvecs`` counts products."""

    def __init__(self, obj: Objective, theta: Tensor | None = None):
        self.obj = obj
        self.theta = obj.point(theta).clone()  # a fixed point, whatever the caller does to theta later
        self.n_matvecs = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.obj.space.n, self.obj.space.n)

    @property
    def dtype(self) -> torch.dtype:
        return self.obj.dtype

    @property
    def device(self) -> torch.device:
        return self.obj.device

    def __matmul__(self, V: Tensor) -> Tensor:
        n = self.shape[0]
        if V.ndim not in (1, 2) or V.shape[-1] != n:
            raise ValueError(f"{type(self).__name__} is {n} x {n}: it multiplies [{n}] or [k, {n}], "
                             f"got shape {tuple(V.shape)}")
        batch = V.to(self.device, self.dtype).reshape(-1, n)
        if batch.shape[0] == 0:
            raise ValueError("V has no rows")
        self.n_matvecs += batch.shape[0]
        with autograd_on(), twice_differentiable():
            return self._matmat(batch).reshape(V.shape)

    def _matmat(self, V: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def settings(self) -> dict:
        """What the products are, for the results computed from them: the operator, and the derivative path."""
        return {"operator": type(self).__name__.removesuffix("Operator").lower(), "derivative_path": DERIVATIVE_PATH}

    def to_scipy(self) -> LinearOperator:
        """This operator as a scipy ``LinearOperator`` (numpy in, numpy out, computed on ``device``)."""
        np_dtype = np.float64 if self.dtype == torch.float64 else np.float32

        def matmat(X: np.ndarray) -> np.ndarray:
            V = torch.as_tensor(np.ascontiguousarray(np.asarray(X).T), dtype=self.dtype, device=self.device)
            return (self @ V).T.cpu().numpy().astype(np_dtype, copy=False)

        def matvec(x: np.ndarray) -> np.ndarray:
            return matmat(np.asarray(x).reshape(-1, 1)).ravel()

        return LinearOperator(self.shape, matvec=matvec, rmatvec=matvec, matmat=matmat,
                              rmatmat=matmat, dtype=np_dtype)


class HessianOperator(CurvatureOperator):
    """H = d^2 L / d theta^2, by the objective's HVP engine (``Objective.hvp``)."""

    def _matmat(self, V: Tensor) -> Tensor:
        return self.obj.hvp(V, self.theta)

    @property
    def settings(self) -> dict:
        return {**super().settings, "hvp_mode": self.obj.resolve_mode()}


class GGNOperator(CurvatureOperator):
    """Generalized Gauss-Newton G = (1/N) sum_b n_b J_b^T H_b J_b.

    J_b = d f(theta, X_b) / d theta is the Jacobian of the outputs, ``[outputs, n]``;
    H_b = d^2 loss_fn(o, y_b) / d o^2 the Hessian of the loss in the outputs, by
    autograd (for cross-entropy, blocks (diag(p) - p p^T) / n_b; for MSE, 2 I / numel).
    Each product is J v by ``jvp``, H_b by reverse-over-reverse (``vjp`` of ``grad``; H_b
    is symmetric), J^T by ``vjp``: no Jacobian is formed. G is positive semi-definite when the loss is convex in the outputs.
    """

    def _matmat(self, V: Tensor) -> Tensor:
        obj, theta = self.obj, self.theta
        if obj.loss_fn is model_loss:
            raise ValueError("the GGN needs the loss as a function of the model's outputs (J^T H_out J), and this "
                             "objective uses the model's own .loss: give a loss_fn(outputs, batch) that computes it "
                             "from outputs.logits (landscape.language.causal_lm_loss for a causal language model)")
        budget = obj.memory_budget()

        def products(size):
            chunks = V.split(size)

            def per_batch(X, y):
                f = lambda t: obj.forward(t, X)  # noqa: E731
                out, pullback = vjp(f, theta)
                _, loss_hvp = vjp(grad(lambda o: obj.loss_fn(o, y)), out)

                def one(v):
                    return pullback(loss_hvp(jvp(f, (theta,), (v,))[1])[0])[0]

                return torch.cat([vmap(one)(c) for c in chunks])

            return obj.batch_mean(per_batch)

        return memory.retry_halving(products, memory.chunk_size(len(V), obj.graph_bytes(), budget), budget)


class FisherOperator(CurvatureOperator):
    """Empirical Fisher F = (1/N) sum_i g_i g_i^T, with g_i = grad loss_fn(f(theta, x_i), y_i).

    Per-example gradients come from ``vmap(grad)`` over examples, in chunks that fit
    the memory budget (halved and retried, per batch, if CUDA runs out of memory all the
    same), or one example at a time when vmap cannot take the model (Hugging Face models:
    data-dependent control flow); ``settings["per_example"]`` says which. F V^T = sum_i g_i
    (g_i . V^T) needs no ``n x n`` matrix. Needs a model whose output for one example does not
    depend on the rest of the batch (eval mode BatchNorm is fine; train mode BatchNorm is not).
    For dict batches an example is a sequence: g_i is the gradient of its mean loss.
    """

    def __init__(self, obj: Objective, theta: Tensor | None = None):
        super().__init__(obj, theta)
        self.per_example = "vmap"  # or "loop", once vmap has refused the model

    @property
    def settings(self) -> dict:
        return {**super().settings, "per_example": self.per_example}

    def _matmat(self, V: Tensor) -> Tensor:
        obj, theta = self.obj, self.theta
        if obj.train:
            raise ValueError("the empirical Fisher needs per-example gradients, which train mode "
                             "(batch statistics) does not define; build the objective with train=False")
        per_example_bytes = obj.space.n * obj.theta0.element_size() + obj.graph_bytes(1)

        def loss_one(t, x, y):
            one = lambda a: a.unsqueeze(0)  # noqa: E731
            return obj.loss_fn(obj.forward(t, tree_map(one, x)), tree_map(one, y))

        vmapped = vmap(grad(loss_one), in_dims=(None, 0, 0))

        def per_example_grads(t, X, y) -> Tensor:
            if self.per_example == "vmap":
                try:
                    return vmapped(t, X, y)
                except torch.OutOfMemoryError:
                    raise
                except (RuntimeError, UserCodeError):  # vmap cannot take the model: one example at a time
                    self.per_example = "loop"
            return torch.stack([grad(loss_one)(t, *tree_map(lambda a: a[i], (X, y))) for i in range(examples_in(X))])

        budget = obj.memory_budget()

        def per_batch(X, y):
            m = examples_in(X)

            def accumulate(size):
                out = torch.zeros_like(V)
                for start in range(0, m, size):
                    part = lambda a: a[start:start + size]  # noqa: E731
                    G = per_example_grads(theta, tree_map(part, X), tree_map(part, y))
                    out += (V @ G.T) @ G
                return out

            return memory.retry_halving(accumulate, memory.chunk_size(m, per_example_bytes, budget), budget) / m

        return obj.batch_mean(per_batch)


class MatrixOperator:
    """A dense symmetric matrix ``A [n, n]`` as an operator: ``op @ V`` is ``V A`` for ``V [k, n]``."""

    def __init__(self, A):
        self.A = torch.as_tensor(A)
        if self.A.ndim != 2 or self.A.shape[0] != self.A.shape[1]:
            raise ValueError(f"MatrixOperator needs a square matrix, got shape {tuple(self.A.shape)}")
        self.shape, self.dtype, self.device = tuple(self.A.shape), self.A.dtype, self.A.device

    def __matmul__(self, V: Tensor) -> Tensor:
        return V @ self.A


def hessian(obj: Objective, theta: Tensor | None = None) -> HessianOperator:
    """The Hessian of ``obj`` at ``theta`` (default ``obj.theta0``) as an operator."""
    return HessianOperator(obj, theta)


def ggn(obj: Objective, theta: Tensor | None = None) -> GGNOperator:
    """The generalized Gauss-Newton matrix of ``obj`` at ``theta`` as an operator."""
    return GGNOperator(obj, theta)


def fisher(obj: Objective, theta: Tensor | None = None) -> FisherOperator:
    """The empirical Fisher of ``obj`` at ``theta`` as an operator."""
    return FisherOperator(obj, theta)
