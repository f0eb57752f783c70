"""The loss of a model over a whole data set, as a function of one flat parameter vector.

``Objective`` is the one place that knows the model and the data:

    L(theta) = (1/N) * sum_b n_b * loss_fn(f(theta, X_b), y_b)

where batch ``b`` holds ``n_b`` of the ``N`` examples and ``loss_fn`` is a *mean*
over its batch (as ``torch.nn.functional.cross_entropy`` is by default), so an
uneven last batch does not bias the result. Everything else in the toolkit calls
``loss``, ``grad``, ``hvp``, ``evaluate`` and ``evaluate_many``.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call, vmap

from landscape.core import data as batching
from landscape.core import memory
from landscape.core.errors import UserCodeError, calling
from landscape.core.check import HVPCheck, check_hvp
from landscape.core.hvp import MODES, HVPEngine, autograd_on
from landscape.core.space import ParamSpace

Tensor = torch.Tensor


def model_loss(outputs, batch) -> Tensor:
    """The loss a model computes itself, ``outputs.loss`` (a Hugging Face model given ``labels``): the
    ``loss_fn`` of an objective built without one."""
    loss = getattr(outputs, "loss", None)
    if loss is None:
        raise UserCodeError(f"the model returned {type(outputs).__name__} without a .loss and there is no loss_fn: "
                            f"put labels in the batch, or give loss_fn(outputs, batch)")
    return loss


def measure(fns: Mapping[str, Callable], outputs, y, device: torch.device, dtype: torch.dtype = torch.float64) -> Tensor:
    """``[fn(outputs, y) for fn in fns]`` as a vector ``[m]`` on ``device`` in ``dtype``; each must be one number
    (a batch mean). An exception from a function is a ``UserCodeError`` naming it."""
    values = []
    for name, fn in fns.items():
        with calling("loss_fn failed" if name == "loss" else f"metric {name!r} failed"):
            value = fn(outputs, y)
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise ValueError(f"{name} must return a scalar (the batch mean), got {tuple(value.shape)}; "
                                 f"use reduction='mean'")
            value = value.reshape(())
        values.append(torch.as_tensor(value, dtype=dtype, device=device))
    return torch.stack(values)


class Objective:
    """Loss, gradient and exact Hessian-vector products of ``loss_fn(model(X), y)`` over all the data.

    Args:
        model: any ``nn.Module``; it is never modified (parameters are swapped in with
            ``torch.func.functional_call``). Its buffers and frozen parameters are copied
            at construction, so the objective is a fixed function of theta.
        loss_fn: ``loss_fn(outputs, y) -> scalar``, the mean over the batch (for a dict batch,
            ``loss_fn(outputs, batch)``, which may read ``outputs.logits``); ``None``: the model's
            own ``outputs.loss`` (a Hugging Face model given labels).
        data: a pair of tensors ``(X, y)`` or a dict of tensors (split into ``batch_size``
            chunks if given), or any re-iterable of ``(X, y)`` or dict batches such as a list or a
            ``DataLoader``. ``X`` may be a tensor, a tuple (``model(*X)``) or a dict (``model(**X)``);
            a dict batch is called as ``model(**batch)`` (see :mod:`landscape.core.data`).
        params: names or glob patterns of the parameters that make up ``theta``; the
            others stay fixed. Unused parameters get zero gradient and curvature.
        device, dtype: where and in which floating type to compute (default: the
            model's). ``dtype=torch.float64`` gives float64 references.
        train: evaluate in train mode (BatchNorm uses batch statistics and never
            updates its running statistics). Default: eval mode. Active dropout is refused
            in train mode: it would make the loss a random function.
        hvp_mode: ``"cached"``, ``"rev-rev"``, ``"fwd-rev"`` or ``"auto"`` (see :mod:`landscape.core.hvp`).
        max_memory: bytes (or ``"2GB"``) that batched products may use; default: a
            share of the free memory of the device.
        weights: what each batch's loss averages over, its weight in the full-data mean: ``"auto"``
            (label tokens for a dict batch with ``labels``, else examples), ``"examples"`` or
            ``"tokens"`` (see :mod:`landscape.core.data`).
        state: tensors by name that stand in for some of the model's parameters and buffers
            (a checkpoint's, another objective's ``state_dict()``); used as given, not copied,
            when already on the device in the dtype. The others are copied from the model.

    ``n_examples`` is the data's total weight (examples, or label tokens), known after a first pass.
    ``theta0`` is the model's parameter vector at construction, ``[n]``; ``fixed`` holds the
    buffers and the parameters outside ``params`` (read-only). ``counts`` tallies full-data
    forward passes (``n_forward``, one per point), gradients (``n_gradients``) and HVPs
    (``n_matvecs``, one per vector). ``engine`` computes the HVPs and owns their cache.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor] | None, data, *,
                 batch_size: int | None = None, params: str | Sequence[str] | None = None,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                 train: bool = False, hvp_mode: str = "auto", max_memory: int | str | None = None,
                 weights: str = "auto", state: Mapping[str, Tensor] | None = None):
        self.model, self.train = model, train
        self.loss_fn = model_loss if loss_fn is None else loss_fn
        if weights not in batching.WEIGHTS:
            raise ValueError(f"weights must be one of {', '.join(batching.WEIGHTS)}, got {weights!r}")
        self.weights, self.shifted = weights, batching.shifts_labels(model)
        self.space = ParamSpace(model, params)
        named = dict(model.named_parameters())
        first = named[self.space.names[0]]
        try:
            self.device = torch.device(device) if device is not None else first.device
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"device {device!r} is not a device name like cpu, cuda or cuda:1") from error
        self.dtype = dtype if dtype is not None else first.dtype
        if not (isinstance(self.dtype, torch.dtype) and self.dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch dtype such as torch.float64, got {dtype!r}")
        if train and any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
            raise ValueError("train=True with active dropout makes the loss a random function of theta; "
                             "use train=False, or set the dropout probability to 0")
        if hvp_mode not in MODES + ("auto",):
            raise ValueError(f"hvp_mode must be one of {', '.join(MODES)} or auto, got {hvp_mode!r}")
        self.hvp_mode = hvp_mode
        self.max_memory = None if max_memory is None else memory.parse_bytes(max_memory)
        # The snapshot: the model's tensors (copied), with those of ``state`` (shared) in their place.
        source = {**named, **dict(model.named_buffers())}
        given = dict(state or {})
        unknown = sorted(set(given) - set(source))
        if unknown:
            raise ValueError(f"state names {', '.join(unknown[:5])}, which the model does not have")
        source.update(given)
        self.theta0 = torch.cat([source[name].detach().reshape(-1).to(self.device, self.dtype)
                                 for name in self.space.names])
        selected = set(self.space.names)
        self.fixed: dict[str, Tensor] = {}
        for name, t in source.items():
            if name not in selected:
                moved = batching.move(t.detach(), self.device, self.dtype)
                copied = name not in given and moved.data_ptr() == t.data_ptr()
                self.fixed[name] = moved.clone() if copied else moved
        self.data, self.batch_size = data, batch_size
        self._batches = batching.batch_list(data, batch_size, self.device, self.dtype)
        self.n_examples: int | None = None  # counted by the first pass over the data, or now for a pair or a dict
        self.counts: Counter = Counter()
        self.engine = HVPEngine(self)
        self._bytes_per_example: int | None = None
        self._max_batch = 0
        if batching.is_pair(data) or batching.is_dict_batch(data):
            self.n_examples = sum(size for _, _, size in self.batches())

    # -- data --------------------------------------------------------------------------

    def batches(self) -> Iterator[tuple[object, Tensor, int]]:
        """Yield ``(X, y, n_b)`` on the objective's device, for one pass over the data: a dict batch is both X and
        y; n_b is its weight (examples, or label tokens)."""
        total = 0
        for batch in self._batches:
            if batching.is_dict_batch(batch):
                X = y = batching.move(batch, self.device, self.dtype)
            elif isinstance(batch, (tuple, list)) and len(batch) == 2:
                X, y = batching.move(batch[0], self.device, self.dtype), batching.move(batch[1], self.device, self.dtype)
            else:
                raise ValueError(f"each batch must be an (X, y) pair or a dict of tensors, got {type(batch).__name__}")
            size = batching.weight(X, y, self.weights, self.shifted)
            total += size
            self._max_batch = max(self._max_batch, size)
            yield X, y, size
        if total == 0:
            raise ValueError("the data yielded no examples" + (" (no label tokens)" if self._batches else ""))
        self.n_examples = total

    def batch_mean(self, per_batch: Callable[[object, Tensor], Tensor]) -> Tensor:
        """(1/N) sum_b n_b * per_batch(X_b, y_b), with the model configured once (``configured``)."""
        acc, total = None, 0
        with self.configured():
            for X, y, size in self.batches():
                value = per_batch(X, y) * size
                acc = value if acc is None else acc + value
                total += size
        acc, total = self.reduce(acc, total)
        return acc / total

    def reduce(self, acc: Tensor, total: int) -> tuple[Tensor, int]:
        """The sum over examples of n_b * value and the example count, before the division by N.

        The one place where the data-parallel objective (``landscape.core.data_parallel``) sums over
        ranks; here, this process holds all the data.
        """
        return acc, total

    def require_whole_data(self, what: str) -> None:
        """Refuse code that iterates ``batches()`` itself when this objective holds only part of the data.

        Here, all of it; the data-parallel objective (``landscape.core.data_parallel``) raises for ``what``.
        """

    # -- the model as a function of theta ------------------------------------------------

    @contextmanager
    def configured(self, model: nn.Module | None = None):
        """Put the model (or ``model``, a copy of it) in the objective's train or eval mode for the duration.

        In train mode, normalization layers stop tracking running statistics, so the
        loss is a pure function of theta (their output uses batch statistics anyway).
        The modes are restored on exit.
        """
        model = self.model if model is None else model
        saved = [(m, m.training, getattr(m, "track_running_stats", None)) for m in model.modules()]
        model.train(self.train)
        if self.train:
            for m, _, _ in saved:
                if isinstance(m, nn.modules.batchnorm._NormBase):
                    m.track_running_stats = False
        try:
            yield
        finally:
            for m, training, tracking in saved:
                m.training = training
                if tracking is not None:
                    m.track_running_stats = tracking

    def mode(self, model: nn.Module | None = None):
        """Deprecated name of ``configured`` ("mode" is the HVP mode's word); removed in the next release."""
        warnings.warn("Objective.mode() is now Objective.configured()", DeprecationWarning, stacklevel=2)
        return self.configured(model)

    def forward(self, theta: Tensor, X, buffers: Mapping[str, Tensor] | None = None) -> Tensor:
        """Model outputs at parameters ``theta [n]`` for one batch ``X`` (call inside ``configured()``).

        ``buffers`` replace the snapshot's tensors of those names (BatchNorm running statistics
        at another point of a path, say); a module that updates a buffer in place updates these.
        """
        fixed = self.fixed if buffers is None else {**self.fixed, **buffers}
        with calling("the model failed on its data"):
            return functional_call(self.model, {**fixed, **self.space.unflatten(theta)}, *batching.inputs(X, self.model))

    def batch_loss(self, theta: Tensor, X, y: Tensor) -> Tensor:
        """``loss_fn(f(theta, X), y)`` for one batch (call inside ``configured()``)."""
        outputs = self.forward(theta, X)
        with calling("loss_fn failed"):
            value = self.loss_fn(outputs, y)
        if not isinstance(value, Tensor) or value.ndim != 0:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"loss_fn must return a scalar (the batch mean), got {shape}; "
                             f"use reduction='mean'")
        return value

    def point(self, theta: Tensor | None = None) -> Tensor:
        """``theta [n]`` checked and detached, on the objective's device and dtype; ``None`` gives ``theta0``."""
        if theta is None:
            return self.theta0
        theta = torch.as_tensor(theta)
        if theta.shape != (self.space.n,):
            raise ValueError(f"theta must have shape [{self.space.n}], got {tuple(theta.shape)}")
        return theta.detach().to(self.device, self.dtype)

    def state_dict(self) -> dict[str, Tensor]:
        """The snapshot by name: the parameters at ``theta0`` (views) and the ``fixed`` tensors."""
        return {**self.fixed, **self.space.unflatten(self.theta0)}

    # -- the public evaluations ------------------------------------------------------------

    def loss(self, theta: Tensor | None = None) -> Tensor:
        """L(theta) over all the data, a 0-dim tensor (``theta=None``: ``theta0``)."""
        theta = self.point(theta)
        self.counts["n_forward"] += 1
        with torch.no_grad():
            return self.batch_mean(lambda X, y: self.batch_loss(theta, X, y))

    def loss_and_grad(self, theta: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(L(theta), grad L(theta) ``[n]``) in one pass over the data."""
        self.counts["n_forward"] += 1
        self.counts["n_gradients"] += 1

        def per_batch(X, y):
            value = self.batch_loss(theta, X, y)
            g = (torch.autograd.grad(value, theta, allow_unused=True, materialize_grads=True)[0]
                 if value.requires_grad else torch.zeros_like(theta))
            return torch.cat([value.detach()[None], g])

        with autograd_on():
            theta = self.point(theta).clone().requires_grad_(True)
            both = self.batch_mean(per_batch)
        return both[0], both[1:]

    def grad(self, theta: Tensor | None = None) -> Tensor:
        """grad L(theta), ``[n]``."""
        return self.loss_and_grad(theta)[1]

    def hvp(self, V: Tensor, theta: Tensor | None = None, mode: str | None = None) -> Tensor:
        """Exact Hessian-vector products H(theta) V for ``V`` of shape ``[n]`` or ``[k, n]``."""
        theta = self.point(theta)
        if V.shape[-1:] != (self.space.n,) or V.ndim not in (1, 2):
            raise ValueError(f"V must have shape [{self.space.n}] or [k, {self.space.n}], got {tuple(V.shape)}")
        batch = V.to(self.device, self.dtype).reshape(-1, self.space.n)
        if batch.shape[0] == 0:
            raise ValueError("V has no rows")
        out = self.engine.products(batch, theta, self.resolve_mode(mode))
        self.counts["n_matvecs"] += batch.shape[0]
        return out.reshape(V.shape)

    def resolve_mode(self, mode: str | None = None) -> str:
        """The HVP mode a call uses: ``mode``, else the objective's; ``"auto"`` is decided once."""
        mode = mode or self.hvp_mode
        return self.engine.auto_mode() if mode == "auto" else mode

    def functions(self, metrics: Mapping[str, Callable] | None = None) -> dict[str, Callable]:
        """``{"loss": loss_fn, **metrics}``: what an evaluation measures, in the order of its values."""
        metrics = dict(metrics or {})
        if "loss" in metrics:
            raise ValueError("'loss' is always measured; give the other metrics under other names")
        return {"loss": self.loss_fn, **metrics}

    def evaluate(self, theta: Tensor | None = None,
                 metrics: Mapping[str, Callable[[Tensor, Tensor], Tensor]] | None = None) -> dict[str, float]:
        """``{"loss": L, name: metric, ...}`` over all the data; each metric is a batch mean, weighted like the loss."""
        theta = self.point(theta)
        fns = self.functions(metrics)
        self.counts["n_forward"] += 1
        with torch.no_grad():
            values = self.batch_mean(lambda X, y: measure(fns, self.forward(theta, X), y, self.device, self.dtype))
        return dict(zip(fns, values.tolist()))

    def evaluate_many(self, thetas: Tensor, metrics: Mapping[str, Callable[[Tensor, Tensor], Tensor]] | None = None,
                      *, dtype: torch.dtype = torch.float64, chunk: int | None = None) -> Tensor:
        """The loss and ``metrics`` at each row of ``thetas [k, n]``: ``[k, 1 + len(metrics)]`` in ``dtype``.

        One pass over the data; ``torch.func.vmap`` over ``chunk`` points at a time (default: what fits
        the memory budget). Each value is a batch mean weighted like the loss, accumulated in ``dtype``.
        """
        thetas = torch.as_tensor(thetas)
        if thetas.ndim != 2 or thetas.shape[1] != self.space.n or thetas.shape[0] == 0:
            raise ValueError(f"thetas must have shape [k, {self.space.n}], got {tuple(thetas.shape)}")
        thetas = thetas.detach().to(self.device, self.dtype)
        fns = self.functions(metrics)
        size = chunk or memory.chunk_size(thetas.shape[0], self.graph_bytes(), self.memory_budget())
        self.counts["n_forward"] += thetas.shape[0]

        def per_batch(X, y):
            one = lambda theta: measure(fns, self.forward(theta, X), y, self.device, dtype)  # noqa: E731
            return torch.cat([vmap(one)(chunk) for chunk in thetas.split(size)])

        with torch.no_grad():
            return self.batch_mean(per_batch)

    def loss_many(self, thetas: Tensor) -> Tensor:
        """L at each row of ``thetas [k, n]`` -> ``[k]``, computed as ``loss`` computes it: ``evaluate_many``'s loss
        in the objective's dtype."""
        return self.evaluate_many(thetas, dtype=self.dtype)[:, 0]

    # -- memory --------------------------------------------------------------------------

    def memory_budget(self) -> int:
        """Bytes that batched work on the device may use (``max_memory``, or a share of the free memory)."""
        return memory.budget(self.device, self.max_memory)

    def graph_bytes(self, examples: int | None = None) -> int:
        """Bytes the gradient graph of ``examples`` examples saves (default: the largest batch seen).

        Measured once on the first batch with ``memory.saved_bytes`` and scaled per example.
        """
        if self._bytes_per_example is None:
            X, y, size = next(self.batches())
            theta = self.theta0.clone().requires_grad_(True)

            def probe():
                with self.configured(), autograd_on():
                    value = self.batch_loss(theta, X, y)
                    if value.requires_grad:
                        torch.autograd.grad(value, theta, create_graph=True, allow_unused=True)

            self._bytes_per_example = -(-memory.saved_bytes(probe, exclude=(theta, *self.fixed.values())) // size)
            self._max_batch = max(self._max_batch, size)
        return self._bytes_per_example * (examples or self._max_batch)

    def clear_cache(self) -> None:
        """Drop the cached gradient graph (the ``"cached"`` HVP mode's memory)."""
        self.engine.clear()

    # -- other objectives over the same snapshot ----------------------------------------

    def to(self, dtype: torch.dtype | None = None, device: str | torch.device | None = None,
           train: bool | None = None) -> Objective:
        """The same objective (snapshot, data, parameter subset) in another dtype, on another device or in
        the other mode (``train=True``: BatchNorm on batch statistics)."""
        return self._like(dtype=dtype or self.dtype, device=device or self.device,
                          train=self.train if train is None else train)

    def restrict(self, params: str | Sequence[str]) -> Objective:
        """The same objective over other parameters (names or glob patterns of the model's), the rest fixed.

        It shares this objective's snapshot (theta0 and the fixed tensors) instead of copying the model again.
        """
        return self._like(params=params)

    def head(self, examples: int) -> Objective:
        """The same objective over the data's first ``examples`` examples (rows of X: images, or sequences of a
        language model's batches), in the same batches, the last one cut to fit."""
        if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
            raise ValueError(f"examples must be a positive integer, got {examples!r}")
        taken, total = [], 0
        for X, y, _ in self.batches():
            if total >= examples:
                break
            rows = batching.examples_in(X)
            if rows > examples - total:
                rows = examples - total
                X, y = (batching.cut(X, rows), batching.cut(y, rows)) if X is not y else (batching.cut(X, rows),) * 2
            taken.append(X if X is y else (X, y))
            total += rows
        return type(self)(self.model, self.loss_fn, taken, state=self.state_dict(),
                          **{**self.options(), "batch_size": None})

    def _like(self, **changes) -> Objective:
        return type(self)(self.model, self.loss_fn, self.data, state=self.state_dict(), **{**self.options(), **changes})

    def options(self) -> dict:
        """The keyword arguments that rebuild this objective over its data (a subclass adds its own)."""
        return {"batch_size": self.batch_size, "params": list(self.space.names), "device": self.device,
                "dtype": self.dtype, "train": self.train, "hvp_mode": self.hvp_mode, "max_memory": self.max_memory,
                "weights": self.weights}

    # -- self-check ----------------------------------------------------------------------
    def check_hvp(self, theta: Tensor | None = None, n_vectors: int = 3, *, dtype: torch.dtype | None = torch.float64,
                  steps: Sequence[float] | None = None, mode: str | None = None, seed: int = 0,
                  examples: int | None = None) -> HVPCheck:
        """Exact HVPs on random unit vectors against central differences of the gradient (``core.check``), over
        all the data or its first ``examples`` examples."""
        return check_hvp(self, theta, n_vectors, dtype=dtype, steps=steps, mode=mode, seed=seed, examples=examples)
