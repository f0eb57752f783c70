"""The HVP engine: exact Hessian-vector products of an objective, three ways, each for ``V`` of shape ``[k, n]``.

- ``"cached"``: the full-data gradient g(theta) = (1/N) sum_b n_b grad l_b(theta) is built
  once with ``create_graph=True`` and kept; each product is then one double backward,
  H v = d(g . v)/d theta. Fastest when the graph of all the data fits in memory; the
  graph is rebuilt when theta changes (``HVPEngine.clear`` frees it). The engine owns it.
- ``"rev-rev"``: reverse-over-reverse streamed over batches: each batch builds its
  gradient graph, serves every vector with it, and frees it.
- ``"fwd-rev"``: forward-over-reverse, H v = d/dt grad L(theta + t v) at t = 0, with
  ``torch.func.jvp`` of ``torch.func.grad``, streamed over batches.

Several vectors share the work that does not depend on them: the reverse modes build
each gradient graph once for all k vectors. On CUDA the vectors then go through one
vmapped product (``is_grads_batched``; ``torch.func.vmap`` for fwd-rev), in chunks sized
so that the chunk's extra memory, about one gradient graph per vector, stays within the
objective's budget; if CUDA runs out of memory all the same, the products are computed again
with half the chunk (``memory.retry_halving``). On the CPU every mode loops over the vectors
instead: there a vmapped double backward is slower than a loop (2.4x per vector on digits-cnn,
see docs/benchmarks.md), and so is a vmapped jvp of the gradient (16 vectors: 1.3x the loop's
time on digits-cnn, 1.9x on tiny-gpt, 2.4x on a ResNet-8; only digits-mlp's 2,410 parameters gain).

``HVPEngine.auto_mode`` picks ``"cached"`` when twice the full-data graph fits the budget, else
``"rev-rev"``; fwd-rev, slower on the CPU and lacking forward-mode rules for some
operations, is there to be chosen.

Every product runs inside ``twice_differentiable()``: the fused attention kernels of
``F.scaled_dot_product_attention`` (flash, memory-efficient, cuDNN; what ``nn.MultiheadAttention``,
``nn.TransformerEncoderLayer`` and Hugging Face models call) and torch's transformer fast path have no
double backward and no forward-mode rule, so second-order work takes the math kernel and the plain path;
losses, gradients and scans keep the fast ones.

The engine needs little of an objective (``Differentiable``): a per-batch loss, the
weighted mean over batches, and the memory it may use. ``landscape.core.objective.Objective``
is one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import torch
from torch.func import grad, jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from landscape.core import memory
from landscape.core.data import vmappable

Tensor = torch.Tensor
MODES = ("cached", "rev-rev", "fwd-rev")
DERIVATIVE_PATH = "sdpa-math"  # what twice_differentiable() does, as results' settings record it


@contextmanager
def autograd_on():
    """Autograd on, also inside ``torch.no_grad()`` or ``torch.inference_mode()``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextmanager
def twice_differentiable():
    """Second derivatives and forward mode for every op, by avoiding the fused kernels that have neither:

    - ``F.scaled_dot_product_attention`` runs on its math kernel (a composite of matmuls and a softmax), not
      flash, memory-efficient or cuDNN attention (torch 2.13 on the CPU: "derivative for
      aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented");
    - ``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention`` skip their inference fast path
      (``aten::_transformer_encoder_layer_fwd``, ``_native_multi_head_attention``), which has no forward-mode
      rule and which torch takes when no parameter requires grad, as inside ``torch.func.jvp``.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


class Differentiable(Protocol):
    """What the engine needs of an objective: L(theta) = (1/N) sum_b n_b l_b(theta) and its memory."""

    device: torch.device
    model: torch.nn.Module
    n_examples: int | None  # None until a pass over the data counted them

    def batches(self) -> Iterator[tuple[object, Tensor, int]]: ...
    def batch_loss(self, theta: Tensor, X, y: Tensor) -> Tensor: ...
    def batch_mean(self, per_batch: Callable[[object, Tensor], Tensor]) -> Tensor: ...
    def graph_bytes(self, examples: int | None = None) -> int: ...
    def memory_budget(self) -> int: ...


class HVPEngine:
    """H(theta) V for one objective, with the cached mode's gradient graph (one theta at a time)."""

    def __init__(self, obj: Differentiable):
        self.obj = obj
        self._cache: tuple[Tensor, Tensor, Tensor] | None = None  # (theta, leaf, gradient graph)
        self._auto: str | None = None

    def clear(self) -> None:
        """Drop the cached gradient graph (the ``"cached"`` mode's memory)."""
        self._cache = None

    def auto_mode(self) -> str:
        """``"cached"`` if twice the full-data gradient graph fits the budget, else ``"rev-rev"``; decided once."""
        if self._auto is None:
            self._auto = "cached" if 2 * self._full_graph_bytes() <= self.obj.memory_budget() else "rev-rev"
        return self._auto

    def _full_graph_bytes(self) -> int:
        if self.obj.n_examples is None:
            for _ in self.obj.batches():
                pass
        return self.obj.graph_bytes(self.obj.n_examples)

    def products(self, V: Tensor, theta: Tensor, mode: str, vectorize: bool | None = None) -> Tensor:
        """H(theta) V for ``V [k, n]`` by ``mode`` (one of ``MODES``) -> ``[k, n]``.

        ``vectorize``: vmap over vectors (default: off the CPU, for a model vmap can serve) or loop.
        """
        if vectorize is None:
            vectorize = self.obj.device.type != "cpu" and vmappable(self.obj.model)
        with autograd_on(), twice_differentiable():
            return self._products(V, theta.clone(), mode, vectorize)

    def _products(self, V: Tensor, theta: Tensor, mode: str, vectorize: bool) -> Tensor:
        obj = self.obj
        budget = obj.memory_budget()
        if mode == "cached":
            leaf, g = self._cached_gradient(theta)
            size = memory.chunk_size(V.shape[0], self._full_graph_bytes(), budget) if vectorize else 1
            return memory.retry_halving(
                lambda size: torch.cat([_double_backward(g, leaf, chunk, retain=True) for chunk in V.split(size)]),
                size, budget)
        size = memory.chunk_size(V.shape[0], obj.graph_bytes(), budget) if vectorize else 1
        if mode == "rev-rev":
            leaf = theta.clone().requires_grad_(True)

            def rev_rev(size):
                chunks = V.split(size)

                def per_batch(X, y):
                    g = _gradient_graph(obj, leaf, X, y)
                    last = len(chunks) - 1
                    return torch.cat([_double_backward(g, leaf, c, retain=i < last) for i, c in enumerate(chunks)])

                return obj.batch_mean(per_batch)

            return memory.retry_halving(rev_rev, size, budget)
        if mode == "fwd-rev":

            def fwd_rev(size):
                chunks = V.split(size)

                def per_batch(X, y):
                    g = grad(lambda t: obj.batch_loss(t, X, y))
                    one = lambda v: jvp(g, (theta,), (v,))[1]  # noqa: E731
                    return torch.cat([one(c[0])[None] if len(c) == 1 else vmap(one)(c) for c in chunks])

                return obj.batch_mean(per_batch)

            try:
                return memory.retry_halving(fwd_rev, size, budget)
            except torch.OutOfMemoryError:
                raise
            except (RuntimeError, NotImplementedError, ValueError) as error:  # ValueError: raised inside the model
                found = f"{error} {error.__cause__ or ''}"
                if not re.search(r"forward[- ]?(mode|AD|grad)|ZeroTensor|jvp|not implemented", found, re.I):
                    raise
                reason = str(error.__cause__ or error).strip().splitlines()[0]
                raise ValueError(f"the fwd-rev HVP failed inside torch ({reason}): an operation in this model or "
                                 f"loss has no working forward-mode rule (F.mse_loss in torch 2.13, pytorch "
                                 f"issue 123996); use hvp_mode='rev-rev' or 'cached'") from error
        raise ValueError(f"unknown HVP mode {mode!r}; choose one of {', '.join(MODES)} or auto")

    def _cached_gradient(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        cache = self._cache
        if cache is not None and torch.equal(cache[0], theta):
            return cache[1], cache[2]
        self._cache = None  # free the old graph before building the new one
        leaf = theta.clone().requires_grad_(True)
        g = self.obj.batch_mean(lambda X, y: _gradient_graph(self.obj, leaf, X, y))
        self._cache = (theta.clone(), leaf, g)
        return leaf, g


def _gradient_graph(obj: Differentiable, leaf: Tensor, X, y) -> Tensor:
    """grad l_b at ``leaf``, keeping its graph for a second backward (zeros if l_b ignores theta)."""
    value = obj.batch_loss(leaf, X, y)
    if not value.requires_grad:
        return torch.zeros_like(leaf)
    (g,) = torch.autograd.grad(value, leaf, create_graph=True, allow_unused=True, materialize_grads=True)
    return g


def _double_backward(g: Tensor, leaf: Tensor, V: Tensor, retain: bool) -> Tensor:
    """Rows of ``V [k, n]`` times d g / d leaf; zeros where g does not depend on leaf."""
    if not g.requires_grad:
        return torch.zeros_like(V)
    (out,) = torch.autograd.grad(g, leaf, V if len(V) > 1 else V[0], retain_graph=retain,
                                 is_grads_batched=len(V) > 1, allow_unused=True, materialize_grads=True)
    return out.expand_as(V) if out.shape != V.shape else out
