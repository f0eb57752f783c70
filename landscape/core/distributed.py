"""Running over torch.distributed: processes launched by ``torchrun``, gloo on CPUs, NCCL on GPUs.

    # torchrun --nproc_per_node 4 analyse.py
    from landscape.core import distributed
    from landscape.core.data_parallel import DataParallelObjective
    world = distributed.init()                          # from RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT
    obj = DataParallelObjective(problem.model, problem.loss_fn, problem.data, world=world)  # a shard each
    top = landscape.eigenvalues(landscape.hessian(obj), k=5)   # every rank: the same products, the same result
    result = landscape.scan(problem.objective(), d, grid, store="out/scan.h5", world=world)  # points split

``init`` reads the environment torchrun sets; without ``WORLD_SIZE`` (or with 1) it is a
no-op and every function here runs as in one process. There is no scheduler here: torchrun
starts the processes, restarts or stops them, and spans nodes (``--nnodes``, ``--rdzv_endpoint``).

Two kinds of parallelism, one per kind of work:

- **Data parallel** (``landscape.core.data_parallel``: ``DataParallelObjective``, for spectra,
  traces, densities, dynamics): each rank holds a shard of the examples, and every evaluation
  is summed over the ranks, so every rank gets the full-data value.
- **Point parallel** (``landscape.scan(..., world=world)``): every rank holds all the data
  and evaluates its own points of the grid, with no communication per point; each rank writes
  a per-rank HDF5 file and rank 0 merges them (see ``landscape.scans.store``).

Identical vectors on every rank. Lanczos, SLQ, Hutchinson/Hutch++ and the dynamics code
run unchanged on every rank, each with its own copy of every vector, and those copies are
the same to the last bit because:

1. every random vector comes from a seeded ``torch.Generator`` on the CPU (Lanczos' start,
   trace and SLQ probes, random directions), the same on every rank whatever the device;
2. an all-reduce hands every rank the same bits: gloo's and NCCL's algorithms (ring, tree,
   halving-doubling) reduce each element once and copy the result, or combine the same two
   operands on both sides (a + b == b + a in IEEE arithmetic);
3. everything between reductions is deterministic arithmetic on identical inputs, so it
   gives identical results given the same hardware and software on every rank (GPU model,
   torch version, threads per process). Control flow (convergence tests, restarts) depends
   only on those numbers, so every rank makes the same products in the same order, which the
   collectives require;
4. choices made from free memory could differ between ranks, so the data-parallel objective's
   ``memory_budget()`` (and ``host_budget()``) is the least over ranks, found once; the HVP
   chunks and mode, and Lanczos' basis and SLQ's reorthogonalization for an operator of the
   objective (``op.obj``), are planned from it. An operator without an objective needs an explicit
   ``max_memory`` (``world.budget(device)``: the least over ranks) or ``basis``.

tests/landscape/core/test_distributed.py checks it: the eigenvectors' sha256 is the same on both ranks
(``World.identical``).

Code that iterates ``obj.batches()`` itself (scans, the paths of landscape.paths.curves, curve training and
BatchNorm statistics, the linearized model) would see only the local shard, so it refuses an
active data-parallel objective (``Objective.require_whole_data``); give those a plain ``Objective`` over
all the data.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from landscape.core import memory
from landscape.core.results import fingerprint

Tensor = torch.Tensor
_OPS = {"sum": "SUM", "min": "MIN", "max": "MAX"}
_owned = False  # whether init() made the default process group (shutdown() destroys only that one)


@dataclass(frozen=True)
class World:
    """The processes of a run: this one is ``rank`` of ``size`` (``local_rank`` on its node).

    ``backend`` is "gloo", "nccl" or None (a single process); ``device`` is where this rank
    computes by default and where NCCL's collectives run (``cuda:LOCAL_RANK``). The methods are
    collectives: every rank calls them, in the same order, with tensors of the same shape. In
    a single process they return at once.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that prints and writes the results."""
        return self.rank == 0

    def to_dict(self) -> dict:
        return {"rank": self.rank, "size": self.size, "local_rank": self.local_rank, "backend": self.backend,
                "device": str(self.device)}

    def _comm(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def _in_place(self, t: Tensor, collective) -> Tensor:
        """``collective(buffer)`` on ``t``, through a contiguous copy on the backend's device if need be."""
        if not self.active:
            return t
        comm = self._comm()
        buf = t if t.device == comm and t.is_contiguous() else t.detach().to(comm).contiguous()
        collective(buf)
        if buf is not t:
            t.copy_(buf)
        return t

    def all_reduce_(self, t: Tensor, op: str = "sum") -> Tensor:
        """``t`` summed (or min, max) over ranks, in place; every rank gets the same bits."""
        return self._in_place(t, lambda buf: dist.all_reduce(buf, op=getattr(dist.ReduceOp, _OPS[op])))

    def broadcast_(self, t: Tensor, src: int = 0) -> Tensor:
        """``t`` overwritten, in place, by rank ``src``'s."""
        return self._in_place(t, lambda buf: dist.broadcast(buf, src=src))

    def _int(self, value: int, op: str) -> int:
        if not self.active:
            return int(value)
        return int(self.all_reduce_(torch.tensor([int(value)], dtype=torch.int64, device=self._comm()), op).item())

    def sum(self, value: int) -> int:
        """The sum over ranks of an integer."""
        return self._int(value, "sum")

    def min(self, value: int) -> int:
        """The least over ranks of an integer."""
        return self._int(value, "min")

    def all(self, flag: bool) -> bool:
        """Whether ``flag`` is true on every rank."""
        return self.min(int(bool(flag))) == 1

    def budget(self, device: str | torch.device | None = None, max_memory: int | str | None = None) -> int:
        """The least over ranks of ``landscape.core.memory.budget(device, max_memory)``: a budget every rank agrees on,
        so that choices made from it (Lanczos' basis, SLQ's reorthogonalization) are the same everywhere."""
        return self.min(memory.budget(torch.device(device or self.device), max_memory))

    def broadcast_object(self, obj, src: int = 0):
        """Rank ``src``'s ``obj`` (anything picklable), on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src, device=self._comm() if self.backend == "nccl" else None)
        return box[0]

    def gather_objects(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.active:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.active:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def identical(self, t: Tensor) -> bool:
        """Whether ``t`` holds the same bits on every rank (its sha256 compared across ranks)."""
        return len(set(self.gather_objects(f"{t.dtype}:{fingerprint(t)}"))) == 1


def _device(spec, local_rank: int) -> torch.device:
    """``None`` -> cuda:LOCAL_RANK when CUDA is there, else cpu; ``"cuda"`` -> cuda:LOCAL_RANK."""
    if spec is None:
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {spec!r} is not a device name like cpu, cuda or cuda:1") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec}: CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def _env_int(name: str, default: int | None = None) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"the environment variable {name}={value!r} is not an integer") from None


def launched() -> bool:
    """Whether this process is one of several started by torchrun (``WORLD_SIZE`` > 1) or joined to a group."""
    return (dist.is_available() and dist.is_initialized()) or (_env_int("WORLD_SIZE", 1) or 1) > 1


def init(device: str | torch.device | None = None, backend: str | None = None, *, init_method: str | None = None,
         rank: int | None = None, size: int | None = None, timeout: float | None = None) -> World:
    """Join the processes of this run and return this one's ``World``; a single process without ``WORLD_SIZE``.

    Reads what ``torchrun`` sets: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and, for the default
    ``init_method="env://"``, ``MASTER_ADDR`` and ``MASTER_PORT``. ``rank``, ``size`` and
    ``init_method`` (e.g. ``"file:///tmp/rendezvous"``) override them, for processes started
    another way. ``device``: ``None`` is cuda:LOCAL_RANK when CUDA is available, else cpu;
    ``"cuda"`` means cuda:LOCAL_RANK. ``backend``: default NCCL for a CUDA device, gloo for the
    CPU. ``timeout``: seconds a collective waits for the other ranks (default torch's).
    Calling it again returns the same world (the process group is made once).
    """
    global _owned
    if dist.is_available() and dist.is_initialized():
        rank, size = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK", rank)
        backend = str(dist.get_backend())
        if device is None:
            device = "cuda" if backend == "nccl" else "cpu"
        return World(rank, size, local_rank, backend, _device(device, local_rank))
    size = _env_int("WORLD_SIZE", 1) if size is None else size
    if size is None or size <= 1:
        return World(device=_device(device, 0))
    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    rank = _env_int("RANK") if rank is None else rank
    if rank is None:
        raise ValueError(f"WORLD_SIZE={size} but RANK is not set: start the processes with torchrun "
                         f"(torchrun --nproc_per_node {size} ...)")
    if not 0 <= rank < size:
        raise ValueError(f"rank {rank} is outside 0..{size - 1}")
    local_rank = _env_int("LOCAL_RANK", rank)
    device = _device(device, local_rank)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be gloo or nccl, got {backend!r}")
    if backend == "nccl" and device.type != "cuda":
        raise ValueError("the nccl backend needs a CUDA device; use gloo on the CPU")
    init_method = init_method or "env://"
    if init_method == "env://":
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if missing:
            raise ValueError(f"WORLD_SIZE={size} but {' and '.join(missing)} are not set: start the processes "
                             f"with torchrun, which sets them")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs = {} if timeout is None else {"timeout": datetime.timedelta(seconds=timeout)}
    dist.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=size, **kwargs)
    _owned = True
    return World(rank, size, local_rank, backend, device)


def shutdown(synchronize: bool = False) -> None:
    """Leave the process group that ``init`` made (a group made elsewhere is left alone).

    ``synchronize=True`` (after work that ended well on every rank) first waits at a barrier, so
    that no rank tears down its connections while another still finishes its last collective;
    gloo can otherwise abort a process at exit ("terminate called without an active exception").
    After an error it is skipped: a rank stuck in another collective could pair with the barrier.
    """
    global _owned
    if _owned and dist.is_available() and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()
    _owned = False


@contextmanager
def quiet(world: World):
    """On ranks other than 0, send stdout and stderr (prints, progress bars, warnings) to /dev/null."""
    if world.main:
        yield
        return
    import contextlib

    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        yield
