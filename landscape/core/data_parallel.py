"""The data-parallel objective: each process holds a shard of the data; every evaluation is the full-data one.

    world = landscape.core.distributed.init()         # under torchrun
    obj = DataParallelObjective(problem.model, problem.loss_fn, problem.data, world=world)  # a shard each
    top = landscape.eigenvalues(landscape.hessian(obj), k=5)   # every rank: the same products, the same result

Rank r holds a shard of N_r examples (``shard``: contiguous slices of an ``(X, y)`` pair,
uneven sizes allowed, or every world-th batch of an iterable). Every evaluation of an
``Objective`` (loss, gradient, HVPs rev-rev and fwd-rev, single ``[n]`` or batched
``[k, n]``, ``evaluate``, ``evaluate_many``, GGN and Fisher products) goes through
``Objective.batch_mean``, which sums n_b * value over the local batches; the data-parallel
objective all-reduces that sum and the example count there (``Objective.reduce``), so

    L(theta) = (sum_r sum_{b in r} n_b l_b(theta)) / (sum_r N_r)

and every rank gets the full-data value, weighted by shard sizes. The ``"cached"`` HVP mode
keeps a differentiable gradient graph; a graph cannot span processes, so there each rank
keeps the graph of its own shard's mean gradient and the *products* are reduced:
H v = sum_r N_r (H_r v) / N, one all-reduce per call as in the other modes. ``"auto"``
picks "cached" only when it fits on every rank. Like ``DistributedDataParallel``, the
snapshot (theta0, buffers, frozen parameters) is broadcast from rank 0 at construction.

See :mod:`landscape.core.distributed` for the processes, the collectives and why every rank
computes the same vectors to the last bit.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch.utils._pytree import tree_map
from torch.utils.data import RandomSampler

from landscape.core import memory
from landscape.core.data import examples_in, from_numpy, is_dict_batch, is_pair
from landscape.core.distributed import World, init
from landscape.core.objective import Objective

Tensor = torch.Tensor


# -- data ----------------------------------------------------------------------------------


def shard_range(n: int, rank: int, size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``n`` items; the first ``n % size`` ranks get one more."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class _Strided:
    """Every ``size``-th batch of a re-iterable, from the ``rank``-th: a re-iterable itself."""

    def __init__(self, data: Iterable, rank: int, size: int):
        self.data, self.rank, self.size = data, rank, size

    def __iter__(self) -> Iterator:
        return itertools.islice(iter(self.data), self.rank, None, self.size)

    def __len__(self) -> int:
        return len(range(self.rank, len(self.data), self.size))


def shard(data, world: World | None = None):
    """This rank's part of ``data``: of an ``(X, y)`` pair or a dict of tensors, the contiguous slice
    ``shard_range(N, rank, size)`` (``X`` a tensor, tuple or dict of tensors; views, no copy); of an iterable of
    batches (pairs or dicts), every
    world-th batch from the rank-th (each rank still reads the batches it skips; give each rank its
    own loader when reading is expensive). Every rank must get at least one example or batch.

    A shuffled ``DataLoader`` (``shuffle=True``: a ``RandomSampler``) is refused: each rank would shuffle
    on its own, so every world-th batch would count some examples twice and miss others. Give each rank
    its own loader with a ``DistributedSampler`` and pass ``sharded=True`` to ``DataParallelObjective``
    (with ``drop_last=False`` it repeats a few examples to even out the ranks when N is not a multiple
    of the world size, which weights them twice)."""
    world = init() if world is None else world
    data = from_numpy(data)
    if is_pair(data) or is_dict_batch(data):
        if is_pair(data) and examples_in(data[0]) != data[1].shape[0]:
            raise ValueError(f"X has {examples_in(data[0])} examples but y has {data[1].shape[0]}")
        n = examples_in(data[0] if is_pair(data) else data)
        if n < world.size:
            raise ValueError(f"{n} examples cannot be shared by {world.size} processes (each needs one)")
        start, stop = shard_range(n, world.rank, world.size)
        return tree_map(lambda t: t[start:stop], data)
    if not isinstance(data, Iterable) or (not hasattr(data, "__len__") and iter(data) is data):
        raise ValueError("data must be an (X, y) pair of tensors, a dict of tensors, or a re-iterable of batches (a "
                         "list, a DataLoader), got " + type(data).__name__)
    if world.active and any(isinstance(getattr(x, "sampler", None), RandomSampler)
                            for x in (data, getattr(data, "batch_sampler", None))):
        raise ValueError("a shuffled DataLoader cannot be split by batches (each rank shuffles differently); give each "
                         "rank a DataLoader with a DistributedSampler and pass sharded=True")
    if hasattr(data, "__len__") and len(data) < world.size:
        raise ValueError(f"{len(data)} batches cannot be shared by {world.size} processes (each needs one)")
    return data if not world.active else _Strided(data, world.rank, world.size)


# -- the data-parallel objective ---------------------------------------------------------------


class DataParallelObjective(Objective):
    """An ``Objective`` whose data is spread over the ranks of ``world``; every evaluation is the full-data one.

    Args:
        model, loss_fn, **kwargs: as ``Objective`` (batch_size, params, device, dtype, train,
            hvp_mode, max_memory).
        data: all the data, of which this rank takes its ``shard``; or, with ``sharded=True``,
            this rank's part already (each rank loading its own).
        world: from ``init()`` (default: ``init()``).

    ``n_examples`` is this rank's count (what its memory holds); ``total_examples``, all ranks',
    once an evaluation has summed them. Every method is a collective: call it on every rank.
    """

    def __init__(self, model, loss_fn, data, *, world: World | None = None, sharded: bool = False, **kwargs):
        self.world = init() if world is None else world
        self._local = False
        self.total_examples: int | None = None
        self._budgets: dict[str, int] = {}
        self._agreed_mode: str | None = None  # "auto" as all ranks agree on it
        super().__init__(model, loss_fn, data if sharded else shard(data, self.world), **kwargs)
        if self.world.active:  # rank 0's snapshot everywhere, as DistributedDataParallel does with its module
            self.theta0 = self.world.broadcast_(self.theta0.clone())
            self.fixed = {name: self.world.broadcast_(t.clone()) for name, t in self.fixed.items()}

    def options(self) -> dict:
        return {**super().options(), "world": self.world, "sharded": True}

    @contextmanager
    def _locally(self):
        """``batch_mean`` over this rank's shard only (the cached HVP graph)."""
        self._local = True
        try:
            yield
        finally:
            self._local = False

    def reduce(self, acc: Tensor, total: int) -> tuple[Tensor, int]:
        if self._local or not self.world.active:
            return acc, total
        if acc.requires_grad:
            raise ValueError("a differentiable full-data result cannot be summed over processes (a gradient graph "
                             "does not span them); reduce products instead, as the cached HVP mode does")
        shape = acc.shape
        acc = self.world.all_reduce_(acc.reshape(-1).contiguous()).reshape(shape)
        self.total_examples = self.world.sum(total)
        return acc, self.total_examples

    def memory_budget(self) -> int:
        """The least over ranks of ``Objective.memory_budget()``, found once (a collective at the first call).

        Plans made from it (HVP chunks, Lanczos' basis, SLQ's reorthogonalization) are then the same on
        every rank, as their collectives require; free memory differs between ranks and over time.
        """
        return self._least("device", self.device, self.max_memory)

    def host_budget(self) -> int:
        """The least over ranks of the host's ``landscape.core.memory.budget``, found once: what Lanczos' ``basis="cpu"``
        plans with for a CUDA objective."""
        return self._least("host", torch.device("cpu"), None)

    def _least(self, key: str, device: torch.device, max_memory: int | None) -> int:
        if not self.world.active:
            return memory.budget(device, max_memory)
        if key not in self._budgets:
            self._budgets[key] = self.world.budget(device, max_memory)
        return self._budgets[key]

    def require_whole_data(self, what: str) -> None:
        if self.world.active:
            raise ValueError(f"{what} needs all the data in one process; this data-parallel objective holds rank "
                             f"{self.world.rank}'s shard of {self.world.size}")

    def resolve_mode(self, mode: str | None = None) -> str:
        """As ``Objective.resolve_mode``; ``"auto"`` takes "cached" only when it fits on every rank."""
        mode = mode or self.hvp_mode
        if mode != "auto" or not self.world.active:
            return super().resolve_mode(mode)
        if self._agreed_mode is None:
            self._agreed_mode = "cached" if self.world.all(self.engine.auto_mode() == "cached") else "rev-rev"
        return self._agreed_mode

    def hvp(self, V: Tensor, theta: Tensor | None = None, mode: str | None = None) -> Tensor:
        """H(theta) V over all ranks' data; in the cached mode, each rank's shard products, then reduced."""
        resolved = self.resolve_mode(mode)
        if resolved != "cached" or not self.world.active:
            return super().hvp(V, theta, mode=resolved)
        with self._locally():
            local = super().hvp(V, theta, mode=resolved)
        acc, total = self.reduce(local * self.n_examples, self.n_examples)
        return acc / total


def data_parallel(obj: Objective, world: World | None = None) -> DataParallelObjective:
    """``obj`` spread over the ranks of ``world``: each rank keeps its shard of ``obj``'s data, with the
    same parameters, dtype, device, mode and HVP settings, and rank 0's snapshot of the model.
    (``obj`` itself holds all the data on its device; build a ``DataParallelObjective`` directly when
    only the shards should get there.)"""
    if isinstance(obj, DataParallelObjective):
        return obj
    return DataParallelObjective(obj.model, obj.loss_fn, obj.data, world=world, state=obj.state_dict(), **obj.options())

