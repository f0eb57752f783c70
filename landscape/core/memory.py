"""Memory budgets: how many bytes a batched computation may use, and how many it needs.

A budget is given as bytes (``int``) or a string such as ``"2GB"`` or ``"512MiB"``;
``None`` means half the free memory of a CUDA device, or a quarter of the
available host memory on the CPU. Needs are measured, not guessed: the bytes an
autograd graph saves are counted with ``torch.autograd.graph.saved_tensors_hooks``.
Estimates can still be wrong on a GPU (fragmentation, other processes): ``retry_halving``
runs a chunked computation again with half the chunk when CUDA runs out of memory.
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Callable
from typing import TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

R = TypeVar("R")

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value: int | str) -> int:
    """``2048``, ``"2GB"``, ``"1.5 GiB"`` -> a positive number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = value, ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(f"memory size {value!r} is not a number of bytes like 2048, '512MB' or '2GiB'")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"memory size {value!r} must be positive")
    return size


def budget(device: torch.device, max_memory: int | str | None = None) -> int:
    """Bytes a computation on ``device`` may use: ``max_memory``, or a safe share of what is free."""
    if max_memory is not None:
        return parse_bytes(max_memory)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        available = 4 * 2**30
    return available // 4


def host_available() -> int | None:
    """Bytes of host memory a new allocation can have (Linux's MemAvailable: free plus reclaimable caches), or
    None where the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def size_text(n: float) -> str:
    """``1_700_000_000`` -> ``"1.7 GB"`` (decimal units, as disks and ``parse_bytes``' "GB" count)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def saved_bytes(fn: Callable[[], object], exclude: tuple[torch.Tensor, ...] = ()) -> int:
    """Bytes of the tensors autograd saves while ``fn()`` runs, each storage counted at most once.

    A saved view counts the span of its storage it covers, not the whole storage (a batch
    sliced from a data set held as one tensor is the batch, not the data set); views of one
    storage add up to at most that storage's size. Storages of ``exclude`` (parameters, which
    exist anyway) are not counted.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    spans: dict[int, dict[tuple, int]] = {}  # storage -> {(offset, shape, stride): bytes}
    sizes: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in skip:
            extent = 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride())) if t.numel() else 0
            spans.setdefault(key, {})[(t.storage_offset(), tuple(t.shape), t.stride())] = extent * t.element_size()
            sizes[key] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(min(sizes[key], sum(views.values())) for key, views in spans.items())


class LiveTensors(TorchDispatchMode):
    """Bytes of the tensors that torch operations create inside ``with LiveTensors() as live:``, while they live.

    Every tensor an operation returns is watched (each storage counted once, however many
    views share it) until it is freed; ``live.bytes`` is what is alive now and ``live.peak``
    the most at any moment between two operations, so transients count too; ``live.peaks``
    is the same per device type (``"cpu"``, ``"cuda"``). The CPU allocator keeps no
    statistics of its own; this is how tests and benchmarks measure what an algorithm holds.
    Tensors made before the block are not counted (unless an in-place operation returns
    one), nor are those held only inside autograd graphs.
    """

    def __init__(self):
        super().__init__()
        self.bytes = self.peak = 0
        self.peaks: dict[str, int] = {}
        self._by_device: dict[str, int] = {}
        self._storages: dict[tuple[str, int], list[int]] = {}  # (device, address) -> [bytes, tensors alive]
        self._watched: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and id(t) not in self._watched:
                self._watch(t)
        self.peak = max(self.peak, self.bytes)
        for kind, size in self._by_device.items():
            self.peaks[kind] = max(self.peaks.get(kind, 0), size)
        return out

    def _count(self, kind: str, size: int) -> None:
        self.bytes += size
        self._by_device[kind] = self._by_device.get(kind, 0) + size

    def _watch(self, t: torch.Tensor) -> None:
        storage, kind = t.untyped_storage(), t.device.type
        key = (str(t.device), storage.data_ptr())
        if key in self._storages:
            self._storages[key][1] += 1
        else:
            self._storages[key] = [storage.nbytes(), 1]
            self._count(kind, storage.nbytes())

        def freed(_, ident=id(t)):
            self._watched.pop(ident, None)
            entry = self._storages[key]
            entry[1] -= 1
            if entry[1] == 0:
                self._count(kind, -entry[0])
                del self._storages[key]

        self._watched[id(t)] = weakref.ref(t, freed)


def chunk_size(k: int, bytes_per_item: int, limit: int) -> int:
    """How many of ``k`` items fit in ``limit`` bytes at ``bytes_per_item`` each (at least 1)."""
    return max(1, min(k, limit // max(1, bytes_per_item)))


def retry_halving(compute: Callable[[int], R], size: int, budget: int | None = None) -> R:
    """``compute(size)``; on ``torch.OutOfMemoryError``, empty the CUDA cache and run ``compute(size // 2)``,
    down to a chunk of 1, where the error is raised again naming the chunk and the budget.

    ``compute(chunk)`` is a whole chunked computation (e.g. products of ``V.split(chunk)``
    over all the batches) that is started again from scratch, so its result must not depend
    on what a failed attempt did. Each call starts from ``size`` again.
    """
    first = size
    while True:
        try:
            return compute(size)
        except torch.OutOfMemoryError as error:
            if size <= 1:
                budget_text = "unknown" if budget is None else f"{budget:,} bytes"
                raise torch.OutOfMemoryError(
                    f"out of memory at a chunk of 1 (halved from {first}; memory budget {budget_text}): one "
                    f"item does not fit; free device memory or use smaller batches") from error
        # here, outside the except clause, the failed attempt's frames and tensors are released
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        size //= 2
