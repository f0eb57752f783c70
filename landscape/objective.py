"""The loss of a model over a whole data set, as a function of one flat parameter vector.

``ParamSpace`` maps a flat vector ``theta`` of shape ``[n]`` (or a batch ``[k, n]``)
to the model's named parameters, as views. ``Objective`` is the one place that
knows the model and the data:

    L(theta) = (1/N) * sum_b n_b * loss_fn(f(theta, X_b), y_b)

where batch ``b`` holds ``n_b`` of the ``N`` examples and ``loss_fn`` is a *mean*
over its batch (as ``torch.nn.functional.cross_entropy`` is by default), so an
uneven last batch does not bias the result. Everything else in the toolkit calls
``loss``, ``grad``, ``hvp`` and ``loss_many``.
"""

from __future__ import annotations

import fnmatch
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_map

from landscape import hvp as _hvp
from landscape import memory

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


@dataclass
class HVPCheck:
    """Exact HVPs against central finite differences of the gradient (see ``Objective.check_hvp``)."""

    rel_error: float  # max over vectors of ||Hv - FD|| / ||FD||
    rel_errors: list[float]
    tolerance: float
    ok: bool
    mode: str
    dtype: str
    steps: list[float]  # the finite-difference step that agreed best, per vector
    seed: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _batch_len(X) -> int:
    if isinstance(X, Tensor):
        return X.shape[0]
    if isinstance(X, Mapping):
        return _batch_len(next(iter(X.values())))
    return _batch_len(X[0])


def _move(x, device: torch.device, dtype: torch.dtype):
    """Move a tensor (or a tuple/list/dict of them) to ``device``; floating tensors take ``dtype``."""
    if isinstance(x, Tensor):
        return x.to(device=device, dtype=dtype if x.is_floating_point() else None,
                    non_blocking=device.type != "cpu")
    if isinstance(x, Mapping):
        return {key: _move(v, device, dtype) for key, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_move(v, device, dtype) for v in x)
    return x


def inputs(X) -> tuple[tuple, dict]:
    """A batch's ``X`` as ``(args, kwargs)`` of the model: a tensor ``(X,)``, a tuple ``*X``, a dict ``**X``."""
    if isinstance(X, Mapping):
        return (), dict(X)
    return (tuple(X) if isinstance(X, (tuple, list)) else (X,)), {}


def _is_pair(data) -> bool:
    """An ``(X, y)`` pair: ``y`` a tensor, ``X`` a tensor or a tuple or dict of tensors."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[1], Tensor)):
        return False
    X = data[0]
    leaves = X.values() if isinstance(X, Mapping) else X if isinstance(X, (tuple, list)) else [X]
    return len(leaves) > 0 and all(isinstance(t, Tensor) for t in leaves)


class Objective:
    """Loss, gradient and exact Hessian-vector products of ``loss_fn(model(X), y)`` over all the data.

    Args:
        model: any ``nn.Module``; it is never modified (parameters are swapped in with
            ``torch.func.functional_call``). Its buffers and frozen parameters are copied
            at construction, so the objective is a fixed function of theta.
        loss_fn: ``loss_fn(outputs, y) -> scalar``, the mean over the batch.
        data: a pair of tensors ``(X, y)`` (split into ``batch_size`` chunks if given), or
            any re-iterable of ``(X, y)`` batches such as a list or a ``DataLoader``.
            ``X`` may be a tensor, a tuple (``model(*X)``) or a dict (``model(**X)``).
        params: names or glob patterns of the parameters that make up ``theta``; the
            others stay fixed. Unused parameters get zero gradient and curvature.
        device, dtype: where and in which floating type to compute (default: the
            model's). ``dtype=torch.float64`` gives float64 references.
        train: evaluate in train mode (BatchNorm uses batch statistics and never
            updates its running statistics). Default: eval mode. Active dropout is refused
            in train mode: it would make the loss a random function.
        hvp_mode: ``"cached"``, ``"rev-rev"``, ``"fwd-rev"`` or ``"auto"`` (see :mod:`landscape.hvp`).
        max_memory: bytes (or ``"2GB"``) that batched products may use; default: a
            share of the free memory of the device.

    ``theta0`` is the model's parameter vector at construction, ``[n]``; ``counts``
    tallies full-data forward passes (one per point), gradients and HVPs (one per vector).
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], data, *,
                 batch_size: int | None = None, params: str | Sequence[str] | None = None,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                 train: bool = False, hvp_mode: str = "auto", max_memory: int | str | None = None,
                 _snapshot_of: Objective | None = None):
        self.model, self.loss_fn, self.train = model, loss_fn, train
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
        if hvp_mode not in _hvp.MODES + ("auto",):
            raise ValueError(f"hvp_mode must be one of {', '.join(_hvp.MODES)} or auto, got {hvp_mode!r}")
        self.hvp_mode = hvp_mode
        self.max_memory = None if max_memory is None else memory.parse_bytes(max_memory)
        # The snapshot: from the model (copied), or from another objective's snapshot (shared, read-only).
        origin = _snapshot_of
        source = ({**origin._fixed, **origin.space.unflatten(origin.theta0)} if origin is not None
                  else {**named, **dict(model.named_buffers())})
        self.theta0 = torch.cat([source[name].detach().reshape(-1).to(self.device, self.dtype)
                                 for name in self.space.names])
        selected = set(self.space.names)
        self._fixed = {}
        for name, t in source.items():
            if name not in selected:
                moved = _move(t.detach(), self.device, self.dtype)
                copied = origin is None and moved.data_ptr() == t.data_ptr()
                self._fixed[name] = moved.clone() if copied else moved
        self._data, self.batch_size = data, batch_size
        self._batches_spec = self._check_data(data, batch_size)
        self.n_examples: int | None = data[1].shape[0] if _is_pair(data) else None
        self.counts: Counter = Counter()
        self._auto_mode: str | None = None  # what "auto" resolved to, decided once
        self._cache = None  # the cached gradient graph of landscape.hvp
        self._bytes_per_example: int | None = None
        self._max_batch = 0

    # -- data --------------------------------------------------------------------------

    def _check_data(self, data, batch_size):
        if _is_pair(data):
            X, y = data
            if _batch_len(X) != y.shape[0]:
                raise ValueError(f"X has {_batch_len(X)} examples but y has {y.shape[0]}")
            if y.shape[0] == 0:
                raise ValueError("the data set is empty")
            if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                           or batch_size < 1):
                raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
            X, y = _move(X, self.device, self.dtype), _move(y, self.device, self.dtype)
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

    def batches(self) -> Iterator[tuple[object, Tensor, int]]:
        """Yield ``(X, y, n_b)`` on the objective's device, for one pass over the data."""
        total = 0
        for batch in self._batches_spec:
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise ValueError(f"each batch must be an (X, y) pair, got {type(batch).__name__}")
            X, y = _move(batch[0], self.device, self.dtype), _move(batch[1], self.device, self.dtype)
            size = _batch_len(X)
            total += size
            self._max_batch = max(self._max_batch, size)
            yield X, y, size
        if total == 0:
            raise ValueError("the data yielded no examples")
        self.n_examples = total

    def batch_mean(self, per_batch: Callable[[object, Tensor], Tensor]) -> Tensor:
        """(1/N) sum_b n_b * per_batch(X_b, y_b), with the mode context entered once."""
        acc, total = None, 0
        with self.mode():
            for X, y, size in self.batches():
                value = per_batch(X, y) * size
                acc = value if acc is None else acc + value
                total += size
        acc, total = self._reduce(acc, total)
        return acc / total

    def _reduce(self, acc: Tensor, total: int) -> tuple[Tensor, int]:
        """The sum over examples of n_b * value and the example count, before the division by N.

        The one place where the data-parallel objective (``landscape.distributed``) sums over ranks;
        here, this process holds all the data.
        """
        return acc, total

    def _whole_data(self, what: str) -> None:
        """Refuse code that iterates ``batches()`` itself when this objective holds only part of the data.

        Here, all of it; the data-parallel objective (``landscape.distributed``) raises for ``what``.
        """

    # -- the model as a function of theta ------------------------------------------------

    @contextmanager
    def mode(self, model: nn.Module | None = None):
        """Put the model (or ``model``, a copy of it) in the objective's train/eval mode for the duration.

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

    def forward(self, theta: Tensor, X, buffers: Mapping[str, Tensor] | None = None) -> Tensor:
        """Model outputs at parameters ``theta [n]`` for one batch ``X`` (call inside ``mode()``).

        ``buffers`` replace the snapshot's tensors of those names (BatchNorm running statistics
        at another point of a path, say); a module that updates a buffer in place updates these.
        """
        fixed = self._fixed if buffers is None else {**self._fixed, **buffers}
        return functional_call(self.model, {**fixed, **self.space.unflatten(theta)}, *inputs(X))

    def batch_loss(self, theta: Tensor, X, y: Tensor) -> Tensor:
        """``loss_fn(f(theta, X), y)`` for one batch (call inside ``mode()``)."""
        value = self.loss_fn(self.forward(theta, X), y)
        if not isinstance(value, Tensor) or value.ndim != 0:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"loss_fn must return a scalar (the batch mean), got {shape}; "
                             f"use reduction='mean'")
        return value

    def _point(self, theta: Tensor | None) -> Tensor:
        if theta is None:
            return self.theta0
        theta = torch.as_tensor(theta)
        if theta.shape != (self.space.n,):
            raise ValueError(f"theta must have shape [{self.space.n}], got {tuple(theta.shape)}")
        return theta.detach().to(self.device, self.dtype)

    # -- the public evaluations ------------------------------------------------------------

    def loss(self, theta: Tensor | None = None) -> Tensor:
        """L(theta) over all the data, a 0-dim tensor (``theta=None``: ``theta0``)."""
        theta = self._point(theta)
        self.counts["forward"] += 1
        with torch.no_grad():
            return self.batch_mean(lambda X, y: self.batch_loss(theta, X, y))

    def loss_and_grad(self, theta: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(L(theta), grad L(theta) ``[n]``) in one pass over the data."""
        self.counts["forward"] += 1
        self.counts["grad"] += 1

        def per_batch(X, y):
            value = self.batch_loss(theta, X, y)
            g = (torch.autograd.grad(value, theta, allow_unused=True, materialize_grads=True)[0]
                 if value.requires_grad else torch.zeros_like(theta))
            return torch.cat([value.detach()[None], g])

        with _hvp.autograd_on():
            theta = self._point(theta).clone().requires_grad_(True)
            both = self.batch_mean(per_batch)
        return both[0], both[1:]

    def grad(self, theta: Tensor | None = None) -> Tensor:
        """grad L(theta), ``[n]``."""
        return self.loss_and_grad(theta)[1]

    def hvp(self, V: Tensor, theta: Tensor | None = None, mode: str | None = None) -> Tensor:
        """Exact Hessian-vector products H(theta) V for ``V`` of shape ``[n]`` or ``[k, n]``."""
        theta = self._point(theta)
        if V.shape[-1:] != (self.space.n,) or V.ndim not in (1, 2):
            raise ValueError(f"V must have shape [{self.space.n}] or [k, {self.space.n}], got {tuple(V.shape)}")
        batch = V.to(self.device, self.dtype).reshape(-1, self.space.n)
        if batch.shape[0] == 0:
            raise ValueError("V has no rows")
        out = _hvp.hvp(self, batch, theta, self.resolve_mode(mode))
        self.counts["hvp"] += batch.shape[0]
        return out.reshape(V.shape)

    def resolve_mode(self, mode: str | None = None) -> str:
        """The HVP mode a call uses: ``mode``, else the objective's; ``"auto"`` is decided once."""
        mode = mode or self.hvp_mode
        if mode != "auto":
            return mode
        if self._auto_mode is None:
            self._auto_mode = _hvp.auto_mode(self)
        return self._auto_mode

    def loss_many(self, thetas: Tensor) -> Tensor:
        """L at each row of ``thetas [k, n]`` -> ``[k]``, vmapped in chunks that fit the memory budget."""
        thetas = torch.as_tensor(thetas)
        if thetas.ndim != 2 or thetas.shape[1] != self.space.n or thetas.shape[0] == 0:
            raise ValueError(f"thetas must have shape [k, {self.space.n}], got {tuple(thetas.shape)}")
        thetas = thetas.detach().to(self.device, self.dtype)
        size = memory.chunk_size(thetas.shape[0], self.graph_bytes(), self.memory_budget())
        self.counts["forward"] += thetas.shape[0]

        def per_batch(X, y):
            one = lambda theta: self.batch_loss(theta, X, y)  # noqa: E731
            return torch.cat([vmap(one)(chunk) for chunk in thetas.split(size)])

        with torch.no_grad():
            return self.batch_mean(per_batch)

    def evaluate(self, theta: Tensor | None = None,
                 metrics: Mapping[str, Callable[[Tensor, Tensor], Tensor]] | None = None) -> dict[str, float]:
        """``{"loss": L, name: metric, ...}`` over all the data; each metric is a batch mean, weighted like the loss."""
        theta = self._point(theta)
        fns = {"loss": self.loss_fn, **(metrics or {})}
        self.counts["forward"] += 1

        def per_batch(X, y):
            outputs = self.forward(theta, X)
            return torch.stack([torch.as_tensor(fn(outputs, y), dtype=self.dtype, device=self.device)
                                for fn in fns.values()])

        with torch.no_grad():
            values = self.batch_mean(per_batch)
        return dict(zip(fns, values.tolist()))

    # -- memory --------------------------------------------------------------------------

    def memory_budget(self) -> int:
        return memory.budget(self.device, self.max_memory)

    def graph_bytes(self, examples: int | None = None) -> int:
        """Bytes the gradient graph of ``examples`` examples saves (default: the largest batch seen).

        Measured once on the first batch with ``memory.saved_bytes`` and scaled per example.
        """
        if self._bytes_per_example is None:
            X, y, size = next(self.batches())
            theta = self.theta0.clone().requires_grad_(True)

            def probe():
                with self.mode(), _hvp.autograd_on():
                    value = self.batch_loss(theta, X, y)
                    if value.requires_grad:
                        torch.autograd.grad(value, theta, create_graph=True, allow_unused=True)

            self._bytes_per_example = -(-memory.saved_bytes(probe, exclude=(theta, *self._fixed.values())) // size)
            self._max_batch = max(self._max_batch, size)
        return self._bytes_per_example * (examples or self._max_batch)

    def clear_cache(self) -> None:
        """Drop the cached gradient graph (the ``"cached"`` HVP mode's memory)."""
        self._cache = None

    # -- self-check ----------------------------------------------------------------------

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

    def _like(self, **changes) -> Objective:
        return type(self)(self.model, self.loss_fn, self._data, _snapshot_of=self, **{**self._settings(), **changes})

    def _settings(self) -> dict:
        """The keyword arguments that rebuild this objective over its data (a subclass adds its own)."""
        return {"batch_size": self.batch_size, "params": list(self.space.names), "device": self.device,
                "dtype": self.dtype, "train": self.train, "hvp_mode": self.hvp_mode, "max_memory": self.max_memory}

    def check_hvp(self, theta: Tensor | None = None, n_vectors: int = 3, *, dtype: torch.dtype | None = torch.float64,
                  steps: Sequence[float] | None = None, mode: str | None = None, seed: int = 0) -> HVPCheck:
        """Compare HVPs on random unit vectors v with central differences of the gradient.

        FD_h(v) = (g(theta + h v) - g(theta - h v)) / (2h) for each step h in ``steps``
        (float64: 1e-3 ... 1e-7; float32: 1e-1 ... 1e-3); each vector's error is the
        smallest ||Hv - FD_h|| / ||FD_h|| over the steps. Large steps cross the kinks of
        ReLU-like activations, small ones lose digits to rounding; a correct derivative
        agrees at some step, a wrong one at none. The check runs in ``dtype`` (default
        float64, where errors are ~1e-9; ``None`` keeps the objective's dtype). An error
        above ``tolerance`` means an autodiff rule in the model is wrong.
        """
        if n_vectors < 1:
            raise ValueError(f"n_vectors must be at least 1, got {n_vectors}")
        start = time.perf_counter()
        obj = self if dtype in (None, self.dtype) else self.to(dtype=dtype)
        theta = obj._point(theta)
        exact = obj.dtype == torch.float64
        steps = tuple(steps or ((1e-3, 1e-4, 1e-5, 1e-6, 1e-7) if exact else (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)))
        generator = torch.Generator().manual_seed(seed)
        V = torch.randn(n_vectors, obj.space.n, generator=generator, dtype=torch.float64)
        V = (V / V.norm(dim=1, keepdim=True)).to(obj.device, obj.dtype)
        resolved = obj.resolve_mode(mode)
        HV = obj.hvp(V, theta, mode=resolved)
        errors, best_steps = [], []
        for v, hv in zip(V, HV):
            trials = []
            for h in steps:
                fd = (obj.grad(theta + h * v) - obj.grad(theta - h * v)) / (2 * h)
                trials.append(((hv - fd).norm() / fd.norm().clamp_min(torch.finfo(obj.dtype).tiny)).item())
            errors.append(min(trials))
            best_steps.append(steps[trials.index(min(trials))])
        tolerance = 1e-6 if exact else 1e-2
        return HVPCheck(rel_error=max(errors), rel_errors=errors, tolerance=tolerance,
                        ok=max(errors) <= tolerance, mode=resolved, dtype=str(obj.dtype).removeprefix("torch."),
                        steps=best_steps, seed=seed, seconds=time.perf_counter() - start)
