"""Grid scans of the loss (and other metrics) along 1, 2 or 3 directions.

    dirs = landscape.directions.random(obj, k=2, norm="filter", seed=0)
    result = landscape.scan(obj, dirs, ["-1:1:51", "-1:1:51"], metrics=problem.metrics, store="out/scan.h5")
    result.values["loss"][i, j]        # L(center + x[i] d_1 + y[j] d_2), shape (nx, ny)

The grid and its points are :mod:`landscape.scans.grid`'s (the centre of a symmetric grid with an
odd number of points is the centre model, bit for bit); the points are evaluated by
:mod:`landscape.scans.points` (strategies ``"loop"``, ``"batched"``, ``"auto"``).
``values[name]`` has shape ``(nx,)``, ``(nx, ny)`` or ``(nx, ny, nz)``, with ``values[i, j, l]`` at
``(x[i], y[j], z[l])``. A non-finite value is recorded as it is (NaN or inf).

Several processes (``world=landscape.core.distributed.init()`` under torchrun) split the grid,
point parallel: every rank holds all the data and evaluates whole points, with no
communication per point. The grid's chunks are those of a single-process scan (``chunk``
consecutive points of the flattened grid, rank 0's chunk size when it is not given); the
chunks not yet done are dealt out in turn, chunk i of them to rank i mod W. As a point's
value depends only on the chunk it is computed in (the loop strategy: not even on that;
batched: vmap over the chunk), the values are those of a single-process scan bit for bit,
given the same arithmetic in each process (device, dtype, threads per process). Each rank
writes its own file and rank 0 merges them at the end (``landscape.scans.store``); an interrupted
run resumes on any number of processes. Rank 0's directions and centre are broadcast, and
the ranks check before any work that they hold the same scan (the store's key: grid,
parameters, buffers, the values at the centre that stand for the data and the metrics).
"""

from __future__ import annotations

import functools
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from landscape.core import memory
from landscape.core.objective import Objective
from landscape.core.results import fingerprint, jsonable
from landscape.scans import directions as _directions
from landscape.scans import points
from landscape.scans import store as _store
from landscape.scans.grid import coordinates, parse_grid, thetas

Tensor = torch.Tensor
MEASURE_FROM = 256  # points: below, timing both strategies would cost a good share of the scan itself


@dataclass
class Scan:
    """A scan's grid and values: ``values[name]`` has shape ``(nx[, ny[, nz]])`` at ``axes`` (x, y, z).

    ``center`` is the point at coordinates 0 and ``directions`` the ones scanned along;
    ``center_values`` the metrics there (evaluated like every point, whether on the grid or not);
    ``done`` marks computed points (all, once a scan finished); ``seconds`` and
    ``points_computed`` are the cost of this call (a resumed scan computes only the rest).
    ``trajectory``, when the file has one, holds checkpoints placed on the grid: ``coords [m, k]``,
    off-plane ``residuals [m]``, ``names`` and their own ``loss [m]`` (or None). ``strategy_measured``:
    what ``strategy="auto"`` timed to choose ``strategy`` (``points.choose``), None when it measured nothing;
    ``precision`` what convolutions and matrix products ran in (``points.precision``; float32 on the CPU);
    ``compiled`` whether the model ran through ``torch.compile``; ``channels_last`` whether its images were laid
    out channels_last.
    """

    axes: list[np.ndarray]
    values: dict[str, np.ndarray]
    done: np.ndarray
    directions: _directions.Directions
    center: Tensor
    strategy: str
    chunk: int
    seconds: float = 0.0
    points_computed: int = 0
    path: str | None = None
    center_values: dict[str, float] = field(default_factory=dict)
    trajectory: dict | None = None
    strategy_measured: dict | None = None
    precision: str = "float32"
    compiled: bool = False
    channels_last: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self.axes)

    def minimum(self, metric: str = "loss") -> tuple[list[float], float] | None:
        """(coordinates, value) of the smallest finite value of ``metric``; None when none is finite."""
        v = np.where(np.isfinite(self.values[metric]), self.values[metric], np.inf)
        if not np.isfinite(v).any():
            return None
        index = np.unravel_index(np.argmin(v), v.shape)
        return [float(a[i]) for a, i in zip(self.axes, index)], float(v[index])

    def to_dict(self, values: bool = False) -> dict:
        """A JSON summary: grid, centre values, minimum, non-finite count, cost; ``values=True`` adds the arrays."""
        found = self.minimum()
        out = {"shape": list(self.shape), "axes": [[float(a[0]), float(a[-1]), len(a)] for a in self.axes],
               "metrics": list(self.values), "center_values": self.center_values,
               "minimum": None if found is None else {"coords": found[0], "loss": found[1]},
               "non_finite": int((~np.isfinite(self.values["loss"]) & self.done).sum()),
               "done": int(self.done.sum()), "points": int(self.done.size),
               "points_computed": self.points_computed, "seconds": self.seconds,
               "points_per_second": self.points_computed / self.seconds if self.seconds > 0 else None,
               "strategy": self.strategy, "strategy_measured": self.strategy_measured, "precision": self.precision,
               "compiled": self.compiled, "channels_last": self.channels_last,
               "chunk": self.chunk,
               "directions": self.directions.to_dict(),
               "path": self.path}
        if values:
            out["values"] = self.values
        return jsonable(out)


def load(path: str | Path) -> Scan:
    """A scan read back from its HDF5 file (finished or not: see ``done``)."""
    data = _store.read(path)
    key, center = data["key"], torch.from_numpy(data["center"])
    return Scan(axes=data["axes"], values=data["values"], done=data["done"],
                directions=_directions.Directions(torch.from_numpy(data["directions"]), key["recipe"], center=center),
                center=center, strategy=key["strategy"], chunk=key["chunk"], path=str(path),
                precision=key.get("precision", "float32"), compiled=key.get("compiled", False),
                channels_last=key.get("channels_last", False),
                center_values={name: float.fromhex(v) for name, v in key["probe"].items()},
                trajectory=data.get("trajectory"))


def scan(obj: Objective, directions, grid, metrics: Mapping[str, Callable[[Tensor, Tensor], Tensor]] | None = None,
         store: str | Path | None = None, strategy: str = "auto", chunk: int | None = None, progress: bool = True,
         meta: dict | None = None, world=None, force: bool = False, precision: str = "float32",
         compiled: bool = False, channels_last: bool | None = None) -> Scan:
    """Evaluate the loss and ``metrics`` on a grid around a centre, along 1-3 directions.

    Args:
        obj: the objective (model, loss, data).
        directions: a ``Directions`` (its ``center`` is used when set, else ``obj.theta0``),
            or vectors ``[k, n]`` used as given.
        grid: one axis per direction: ``"start:stop:num"`` or ``(start, stop, num)``; a single
            axis may be given bare for a 1D scan.
        metrics: ``{name: fn(outputs, y) -> batch mean}`` besides the loss (e.g. accuracy).
        store: an HDF5 file written as the scan goes; if it exists and holds this same scan
            (recipe, grid, metrics, parameters and buffers, dtype, device type, strategy, and
            the values at the centre to the last bit, which stand for the data, its batching
            and the loss and metric functions), the scan resumes and the result equals an
            uninterrupted run bit for bit; a different scan is refused.
        strategy: ``"loop"``, ``"batched"`` or ``"auto"``: from ``MEASURE_FROM`` points on, the loop, the loop
            with channels_last (a model with 2D convolutions) and batched are timed on up to 16 points along the
            first direction and the fastest is kept (``points.choose``; ``Scan.strategy_measured`` says what was
            measured; a resumed scan keeps its stored strategy); a smaller grid takes batched on CUDA, the loop
            on the CPU.
        chunk: points per chunk (flushed to the store together); default 64 for the loop,
            the memory budget's share for batched (at most 1024). A resume uses the stored one.
        meta: extra JSON metadata for the store (the CLI puts the problem's name there).
        world: a ``landscape.core.distributed.World`` of several processes: each rank (holding all
            the data) computes its share of the chunks and writes ``store``'s per-rank file;
            every rank returns the merged scan (``points_computed`` and the rate count all
            ranks' points). Call it on every rank. Default: this process alone.
        precision: ``"float32"`` (default: full float32 convolutions and matrix products) or ``"tf32"``
            (faster on NVIDIA GPUs since Ampere, ~1e-3 relative per product; ``points.precision``). It decides
            the values on CUDA, so a resumed CUDA scan must use its own.
        compiled: run the model through ``torch.compile`` (the loop strategy; auto then means loop): the first
            points wait for the compilation, the others may go faster; a resumed scan must use its own.
        channels_last: lay the data's images out channels_last (NHWC) for the loop's convolutions (the loop
            strategy; auto then means loop): the same values to float32 rounding, often faster (docs/benchmarks.md).
            None: auto's measurement decides where it measures, otherwise off; False keeps it out of the
            measurement. A resumed scan must use its own.
        force: run even when the grid's values need more host memory, or its new store more disk, than
            there is (``footprint``, ``check_room``); refused otherwise, before any file is made. With ``progress`` the
            footprint and the time it will take at the centre's rate are printed before the first point.
    """
    world = world if world is not None and world.active else None
    if world is not None:
        from landscape.core.data_parallel import DataParallelObjective

        if isinstance(obj, DataParallelObjective):
            raise ValueError("a distributed scan splits the grid, not the data: give every rank a plain Objective "
                             "over all the data (the data-parallel objective is for spectra and HVPs)")
    obj.require_whole_data("landscape.scan")
    if not isinstance(directions, _directions.Directions):
        directions = _directions.given(obj, directions)
    asked, asked_last = strategy, channels_last  # channels_last None: undecided, auto may measure it
    strategy, channels_last = points.resolve(obj, strategy, compiled, bool(channels_last)), bool(channels_last)
    axes = parse_grid(grid)
    if len(axes) != len(directions):
        raise ValueError(f"the grid has {len(axes)} axes but there are {len(directions)} directions")
    fns = obj.functions(metrics)
    D = directions.vectors.to(obj.device, obj.dtype)
    center = obj.point(directions.center)
    shape = tuple(len(a) for a in axes)
    total = int(np.prod(shape))
    ran_in = precision if obj.device.type == "cuda" else "float32"  # the CPU has no TF32
    room = functools.cache(lambda: memory.chunk_size(total, obj.graph_bytes(), obj.memory_budget()))  # a forward
    measured = None
    if asked == "auto" and total >= MEASURE_FROM and not (compiled or channels_last):  # measured, unless stored
        stored = None if store is None else _store.stored_key(store)
        if stored and "strategy" in stored:  # channels_last as stored, unless asked (a mismatch is refused)
            strategy = stored["strategy"]
            channels_last = stored.get("channels_last", False) if asked_last is None else channels_last
        else:
            along = torch.linspace(float(axes[0][0]), float(axes[0][-1]), min(16, room(), total), device=obj.device,
                                   dtype=obj.dtype)
            strategy, channels_last, measured = points.choose(obj, metrics, center + along[:, None] * D[0], precision,
                                                              asked_last)
        if world is not None:
            strategy, channels_last, measured = world.broadcast_object((strategy, channels_last, measured))
    if chunk is None:
        chunk = 64 if strategy == "loop" else min(1024, room())
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    if world is not None:  # rank 0's directions, centre and chunk (the batched default depends on free memory)
        D, center = world.broadcast_(D.clone()), world.broadcast_(center.clone())
        chunk = world.broadcast_object(chunk)

    evaluate = points.evaluator(obj, metrics, strategy, precision, compiled, channels_last)
    # The centre, evaluated as every point is (and before any file is made, so a loss or metric that
    # is not a scalar fails here): its values, to the last bit, stand for everything that decides a
    # point's value and has no recipe (the data, its batching, loss_fn, metric functions).
    probe = dict(zip(fns, evaluate(center[None])[0].tolist()))
    started = time.perf_counter()  # once more, warm, for the time a point takes
    evaluate(center[None])
    per_point = time.perf_counter() - started
    need = footprint(total, len(fns), (D.shape[0] + 1) * D[0].numel() * D.element_size(), store)
    if not force:
        check_room(need, store)
    disk = f" and {memory.size_text(need['disk'])} on disk" if need["disk"] else ""
    chose = ""
    if measured:
        rates = ", ".join(f"{label} {rate:.3g}" for label, rate in measured.items()
                          if label not in ("points", "agreement", "left out"))
        chose = (f"; auto chose {strategy}{' (channels_last)' * channels_last}, in points/s {rates}, agreeing to "
                 f"{measured['agreement']:.1e}"
                 + "".join(f"; {label} left out: {why}" for label, why in measured.get("left out", {}).items()))
    plan = (f"scan: {total:,} points, {memory.size_text(need['memory'])} in memory{disk}, "
            f"{_duration(total * per_point / (world.size if world else 1))} at the centre's {per_point * 1e3:.2g} ms "
            f"a point{chose}") if progress else None
    fixed = [t.reshape(-1).double() for t in obj.fixed.values()]
    key = {"recipe": directions.recipe, "axes": [a.tolist() for a in axes], "metrics": list(fns),
           "parameters": list(obj.space.names), "dtype": str(obj.dtype).removeprefix("torch."),
           "device": obj.device.type, "train": obj.train, "strategy": strategy,
           "directions": fingerprint(D), "center": fingerprint(center),
           "fixed": fingerprint(torch.cat(fixed)) if fixed else None,
           "probe": {name: float.hex(v) for name, v in probe.items()},
           **({"precision": precision} if obj.device.type == "cuda" else {}),  # on the CPU it changes nothing
           **({"compiled": True} if compiled else {}),  # compiled kernels round differently
           **({"channels_last": True} if channels_last else {})}  # so do channels_last ones
    if store is not None:
        import landscape

        meta = {"library": landscape.__version__, "torch": torch.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **(meta or {})}
    work = _Work(obj, evaluate, axes, D, center, list(fns), chunk)
    if world is not None:
        return _sharded(world, work, {**key, "chunk": chunk}, store, meta, plan, directions, strategy, probe,
                        strategy_measured=measured, precision=ran_in, compiled=compiled,
                        channels_last=channels_last)
    opened = None
    if store is not None:
        opened = _store.Store.open(store, {**key, "chunk": chunk}, axes, D, center, meta)
        values, done, work.chunk = opened.values, opened.done, opened.chunk
    else:
        values = {name: np.full(shape, np.nan) for name in fns}
        done = np.zeros(shape, dtype=bool)

    start_time = time.perf_counter()
    if plan:
        tqdm.write(plan, file=sys.stderr)
    bar = tqdm(total=total, initial=int(done.sum()), unit="pt", desc="scan", disable=not progress,
               dynamic_ncols=True)
    try:
        computed = work.run(work.todo(done), values, done, opened, bar)
    finally:
        bar.close()
        if opened is not None:
            opened.close()
    seconds = time.perf_counter() - start_time
    return Scan(axes=axes, values=values, done=done, directions=directions, center=center, strategy=strategy,
                chunk=work.chunk, seconds=seconds, points_computed=computed, path=None if store is None else str(store),
                center_values=probe, strategy_measured=measured, precision=ran_in, compiled=compiled,
                channels_last=channels_last)


def footprint(points: int, values: int, direction_bytes: int, store: str | Path | None) -> dict[str, int]:
    """Bytes a scan of ``points`` points with ``values`` values each (the loss and the metrics) needs:
    ``memory``, the values (float64) and done flags held on the host, and ``disk``, a new store's as much
    plus ``direction_bytes`` (its directions and centre), or 0 when there is no store or it exists already."""
    held = points * (8 * values + 1)
    new = store is not None and not Path(store).exists()
    return {"memory": held, "disk": held + direction_bytes if new else 0}


def check_room(need: dict[str, int], store: str | Path | None) -> None:
    """Refuse, before any work, a scan whose ``footprint`` exceeds the host's memory or the store's disk."""
    available = memory.host_available()
    if available is not None and need["memory"] > available:
        raise ValueError(f"the grid's values need {memory.size_text(need['memory'])} of memory (8 bytes per point "
                         f"and value, 1 for its done flag), more than the {memory.size_text(available)} available; "
                         f"use fewer points, or force=True (--force) to try anyway")
    if need["disk"]:
        folder = Path(store).resolve().parent
        while not folder.exists():
            folder = folder.parent
        free = shutil.disk_usage(folder).free
        if need["disk"] > free:
            raise ValueError(f"the scan's store needs {memory.size_text(need['disk'])} on disk, more than the "
                             f"{memory.size_text(free)} free in {folder}; use fewer points, or force=True (--force) "
                             f"to try anyway")


def _duration(seconds: float) -> str:
    """``0.4`` -> ``"under a second"``, ``95`` -> ``"about 1.6 min"``, ``36000`` -> ``"about 10.0 h"``."""
    if seconds < 1:
        return "under a second"
    if seconds < 60:
        return f"about {seconds:.0f} s"
    return f"about {seconds / 60:.1f} min" if seconds < 3600 else f"about {seconds / 3600:.1f} h"


@dataclass
class _Work:
    """A scan's points in chunks of the flattened grid, and how to compute a chunk of them."""

    obj: Objective
    evaluate: Callable
    axes: list[np.ndarray]
    D: Tensor
    center: Tensor
    names: list[str]
    chunk: int

    @property
    def total(self) -> int:
        return int(np.prod([len(a) for a in self.axes]))

    def todo(self, done: np.ndarray) -> list[int]:
        """The starts of the chunks with a point not done."""
        flat = done.reshape(-1)
        return [start for start in range(0, self.total, self.chunk) if not flat[start:start + self.chunk].all()]

    def run(self, starts: list[int], values: dict[str, np.ndarray], done: np.ndarray, opened, bar) -> int:
        """Compute the chunks at ``starts`` into ``values`` and ``done`` (and the store ``opened``); the points computed."""
        flat_values = {name: v.reshape(-1) for name, v in values.items()}
        flat_done = done.reshape(-1)
        computed = 0
        for start in starts:
            stop = min(self.total, start + self.chunk)
            results = self.evaluate(thetas(self.center, self.D, coordinates(self.axes, start, stop)))  # [c, metrics]
            for m, name in enumerate(self.names):
                flat_values[name][start:stop] = results[:, m]
            flat_done[start:stop] = True
            computed += stop - start
            if opened is not None:
                opened.write(start, stop)
            bar.update(stop - start)
        return computed


def _sharded(world, work: _Work, key: dict, store, meta: dict | None, plan: str | None, directions, strategy: str,
             probe: dict, **recorded) -> Scan:
    """The scan on every rank of ``world``: its share of the chunks, its own file, rank 0's merge; rank 0 prints
    the ``plan`` line (None: no progress shown). ``recorded``: the rest of the ``Scan``'s fields (strategy_measured,
    precision, compiled, channels_last)."""
    keys = world.gather_objects(key)
    for rank, other in enumerate(keys):
        if other != keys[0]:
            fields = sorted(name for name in set(other) | set(keys[0]) if other.get(name) != keys[0].get(name))
            raise ValueError(f"rank {rank}'s scan differs from rank 0's in {', '.join(fields)}: every rank must hold "
                             f"the same model, data, metrics and settings")
    shape = tuple(len(a) for a in work.axes)
    path = None if store is None else Path(store)

    def merged() -> None:
        """On every rank, once rank 0 has made (or checked) the store and folded the per-rank files into it."""
        error = None
        if world.main:
            try:
                _store.Store.open(path, key, work.axes, work.D, work.center, meta).close()
            except (ValueError, OSError) as failure:
                error = str(failure)
        error = world.broadcast_object(error)
        if error is not None:
            raise ValueError(error)

    start_time = time.perf_counter()
    opened = None
    if path is not None:
        merged()
        work.chunk, done = _store.progress(path, with_parts=False)  # the others' new files may be open already
        opened = _store.Store.open(_store.part_path(path, world.rank, world.size), {**key, "chunk": work.chunk},
                                   work.axes, work.D, work.center, meta, absorb=False)
        values, own = opened.values, opened.done
    else:
        values = {name: np.full(shape, np.nan) for name in work.names}
        done, own = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    mine = work.todo(done)[world.rank::world.size]
    if plan and world.main:
        tqdm.write(plan, file=sys.stderr)
    bar = tqdm(total=sum(min(work.total, s + work.chunk) - s for s in mine), unit="pt",
               desc=f"scan, rank 0 of {world.size}", disable=not (plan and world.main), dynamic_ncols=True)
    try:
        computed = work.run(mine, values, own, opened, bar)
    finally:
        bar.close()
        if opened is not None:
            opened.close()
    if path is not None:
        world.barrier()  # every rank's file is complete and closed
        merged()
        data = _store.read(path)
        values, done = data["values"], data["done"]
    else:
        flat = {name: v.reshape(-1) for name, v in values.items()}
        for theirs in world.gather_objects({s: {name: flat[name][s:s + work.chunk] for name in flat} for s in mine}):
            for s, chunk_values in theirs.items():
                for name, v in chunk_values.items():
                    flat[name][s:s + len(v)] = v
        done = np.ones(shape, dtype=bool)
    return Scan(axes=work.axes, values=values, done=done, directions=directions, center=work.center,
                strategy=strategy, chunk=work.chunk, seconds=time.perf_counter() - start_time,
                points_computed=world.sum(computed), path=None if path is None else str(path), center_values=probe,
                **recorded)
