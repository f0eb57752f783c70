"""One HDF5 file per scan, written as the scan goes, so a killed scan resumes where it stopped.

Layout of ``scan.h5``::

    axes/0, axes/1, ...   float64 [n_a]            the coordinates along each direction
    values/<metric>       float64 (nx[, ny[, nz]])   NaN until computed; values[i, j] is at (x[i], y[j])
    done                  bool    (nx[, ny[, nz]])   which points are computed
    directions            [k, n]                   the direction vectors, exactly as used
    center                [n]                      the point at coordinates 0
    trajectory/...        optional: checkpoints projected onto the plane (coords [m, k], residuals [m],
                          names [m], and loss [m], each checkpoint's own loss, when known)
    attrs["key"]          JSON: everything that decides the values (recipe, grid, metrics, dtype, device
                          type, strategy, chunk, fingerprints of the directions, the centre and the
                          buffers, and the metrics at the centre as float.hex); a resume must match it
    attrs["meta"]         JSON: problem, library and torch versions, creation time

Points are computed in fixed chunks of the flattened (C-order) grid; after each chunk the
slab of the first axis it touched is written, with its ``done`` entries, and the file is
flushed. Resuming reruns only chunks with points not done, in the same chunks, so the
values are bit-identical to an uninterrupted scan.

A distributed scan (``landscape.scan(..., world=world)``, several processes) writes per-rank
files merged at the end, rather than having rank 0 write what the others send it: no rank
waits for another while it computes, each file has one writer (HDF5 without MPI-IO allows
no more), and each is resumable exactly as above. Rank r of W writes the points it computes
to ``scan.part-r-of-W.h5`` beside ``scan.h5``, an ordinary scan file of the same layout and key
holding only its own points. ``scan.h5`` itself is made (or checked, on a resume) by rank 0
before any work; when every rank is done, rank 0 folds the part files into it and deletes
them (``Store.absorb``). ``Store.open`` folds in any part files it finds first, so a scan
interrupted on W processes resumes on any number of processes, one included, with nothing
recomputed twice. The merge copies float64 values, so the merged file holds the bits the ranks
computed; each rank computes whole chunks of the single-process chunking (see
``landscape.scan``), so those bits are the single-process scan's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import torch

FORMAT = 1


_OPAQUE = ("directions", "center", "fixed", "probe")  # fingerprints: shown after the fields a person set


def _flat(key: dict, prefix: str = "") -> dict:
    out = {}
    for name, value in key.items():
        if isinstance(value, dict) and name != "probe":
            out.update(_flat(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def _differences(stored: dict, wanted: dict) -> list[str]:
    """What differs between two keys, the fields a person chose first (recipe.seed, axes, dtype, ...)."""
    a, b = _flat(stored), _flat(wanted)
    names = sorted(set(a) | set(b), key=lambda name: (name.split(".")[0] in _OPAQUE, name))
    notes = {"probe": "the values at the centre differ: other data, batching, loss or metric functions",
             "fixed": "the buffers or the parameters outside theta differ (another checkpoint?)"}
    return [notes.get(name) or (_axes_differ(a[name], b[name]) if name == "axes" and a.get(name) and b.get(name)
                                else f"{name}: {a.get(name)!r} in the file, {b.get(name)!r} now")
            for name in names if a.get(name) != b.get(name)]


def _axes_differ(stored: list[list[float]], wanted: list[list[float]]) -> str:
    """Which grid axes differ and how: ``axis 2: -1:1:41 in the file, -1:1.2:43 now``."""
    def spec(axis):
        return f"{axis[0]:g}:{axis[-1]:g}:{len(axis)}" if axis else "empty"

    if len(stored) != len(wanted):
        return f"the grid has {len(stored)} axes in the file, {len(wanted)} now"
    return "; ".join(f"axis {i}: {spec(s)} in the file, {spec(w)} now"
                     + (" (the same range and count, other values)" if spec(s) == spec(w) else "")
                     for i, (s, w) in enumerate(zip(stored, wanted), 1) if s != w)


def part_path(path: str | Path, rank: int, size: int) -> Path:
    """The file rank ``rank`` of ``size`` writes its points to: ``scan.part-1-of-2.h5`` beside ``scan.h5``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.part-{rank}-of-{size}{path.suffix}")


def parts(path: str | Path) -> list[Path]:
    """The per-rank files of the scan stored at ``path`` that are on disk (of any number of ranks)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    name = re.compile(re.escape(path.stem) + r"\.part-\d+-of-\d+" + re.escape(path.suffix))
    return sorted(f for f in path.parent.iterdir() if name.fullmatch(f.name))


def _check_part(f: Path, part: h5py.File, key: dict, path) -> None:
    """Refuse the per-rank file ``f`` (open as ``part``) unless it holds the scan of ``key``, stored at ``path``."""
    stored = json.loads(part.attrs.get("key", "{}"))
    if stored != key:
        raise ValueError(f"{f} is a per-rank file of a different scan than {path} ("
                         + "; ".join(_differences(stored, key)[:3]) + "); remove it or write to another file")


def _open(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except OSError as error:
        if "lock" in str(error).lower():
            raise ValueError(f"{path} is in use by another process (a scan still running?)") from error
        raise ValueError(f"{path} exists but is not a readable HDF5 scan file ({error}); "
                         f"move it away or choose another output") from error


class Store:
    """An open scan file: ``values`` per metric and the ``done`` mask in memory, mirrored to disk by ``write``."""

    def __init__(self, file: h5py.File, key: dict):
        self.file, self.key = file, key
        self.chunk = key["chunk"]
        self.values = {name: file["values"][name][()] for name in key["metrics"]}
        self.done = file["done"][()]

    @classmethod
    def open(cls, path: str | Path, key: dict, axes: list[np.ndarray], directions: torch.Tensor,
             center: torch.Tensor, meta: dict, absorb: bool = True) -> Store:
        """Create ``path``, or reopen it to resume when its ``key`` equals this scan's; otherwise refuse.

        ``key["chunk"]`` is the points per chunk; a resumed scan keeps the stored one, so its
        chunks, and hence its values, are the same as an uninterrupted run's. ``absorb``: fold in
        the per-rank files of a distributed scan of this store (``parts``), then delete them.
        """
        path = Path(path)
        key = {"format": FORMAT, **key}
        if path.exists():
            file = _open(path, "r+")
            try:
                stored = json.loads(file.attrs.get("key", "{}"))
                key["chunk"] = stored.get("chunk", key["chunk"])
                if stored != key:
                    raise ValueError(f"{path} holds a different scan, refusing to mix them ("
                                     + "; ".join(_differences(stored, key)[:3]) + "); write to another file")
                store = cls(file, key)
                if absorb:
                    store.absorb(parts(path))
            except BaseException:
                file.close()
                raise
            return store
        found = parts(path) if absorb else []
        if found:  # the merged file was removed but a distributed run's parts are here: they decide the chunk
            with _open(found[0], "r") as file:
                key["chunk"] = json.loads(file.attrs.get("key", "{}")).get("chunk", key["chunk"])
            for f in found:  # all of this scan? Before a file is made that a rerun would have to resume
                with _open(f, "r") as part:
                    _check_part(f, part, key, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        shape = tuple(len(a) for a in axes)
        file = h5py.File(path, "w")
        try:
            for i, a in enumerate(axes):
                file.create_dataset(f"axes/{i}", data=np.asarray(a, dtype=np.float64))
            for name in key["metrics"]:
                file.create_dataset(f"values/{name}", shape=shape, dtype=np.float64, fillvalue=np.nan)
            file.create_dataset("done", shape=shape, dtype=bool, fillvalue=False)
            file.create_dataset("directions", data=directions.detach().cpu().numpy())
            file.create_dataset("center", data=center.detach().cpu().numpy())
            file.attrs["key"] = json.dumps(key, sort_keys=True)
            file.attrs["meta"] = json.dumps(meta)
            file.flush()
            store = cls(file, key)
            store.absorb(found)
        except BaseException:
            file.close()
            raise
        return store

    def absorb(self, files: list[Path]) -> int:
        """Copy the computed points of per-rank ``files`` (the same scan) into this store, write it, delete them.

        Returns the points added. A file that holds another scan is refused, and nothing is deleted
        before this store is on disk, so an interruption here loses nothing.
        """
        before = int(self.done.sum())
        for f in files:
            with _open(f, "r") as part:
                _check_part(f, part, self.key, self.file.filename)
                done = part["done"][()]
                for name, v in self.values.items():
                    v[done] = part["values"][name][()][done]
            self.done |= done
        if files:
            self.write(0, self.done.size)
            for f in files:
                f.unlink()
        return int(self.done.sum()) - before

    def write(self, start: int, stop: int) -> None:
        """Write the points ``start:stop`` of the flattened grid (from ``values`` and ``done``) and flush."""
        per_slab = self.done.size // self.done.shape[0]
        rows = slice(start // per_slab, (stop - 1) // per_slab + 1)
        for name, v in self.values.items():
            self.file["values"][name][rows] = v[rows]
        self.file.flush()  # the values reach the disk before the mask that says they are there
        self.file["done"][rows] = self.done[rows]
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def add_trajectory(path: str | Path, coords: np.ndarray, residuals: np.ndarray, names: list[str],
                   loss: np.ndarray | None = None) -> None:
    """Store projected checkpoints in a scan file: ``coords [m, k]``, off-plane ``residuals [m]``, their names
    and, when given, each checkpoint's own ``loss [m]`` (not the plane's: the checkpoint is off it)."""
    with h5py.File(path, "r+") as file:
        if "trajectory" in file:
            del file["trajectory"]
        group = file.create_group("trajectory")
        group.create_dataset("coords", data=np.asarray(coords, dtype=np.float64))
        group.create_dataset("residuals", data=np.asarray(residuals, dtype=np.float64))
        group.create_dataset("names", data=np.array(names, dtype=h5py.string_dtype()))
        if loss is not None:
            group.create_dataset("loss", data=np.asarray(loss, dtype=np.float64))


def stored_key(path: str | Path) -> dict | None:
    """The key of the scan stored at ``path``, or of its first per-rank file; None when there is neither."""
    files = ([Path(path)] if Path(path).exists() else []) + parts(path)
    if not files:
        return None
    with _open(files[0], "r") as file:
        return json.loads(file.attrs.get("key", "{}"))


def progress(path: str | Path, with_parts: bool = True) -> tuple[int | None, np.ndarray | None]:
    """(chunk, done mask) of the scan at ``path`` and (``with_parts``) its per-rank files, without changing
    anything; (None, None) when there is nothing on disk."""
    files = ([Path(path)] if Path(path).exists() else []) + (parts(path) if with_parts else [])
    chunk, done = None, None
    for f in files:
        with _open(f, "r") as file:
            chunk = json.loads(file.attrs.get("key", "{}")).get("chunk") if chunk is None else chunk
            mask = file["done"][()]
        done = mask if done is None else done | mask
    return chunk, done


def read(path: str | Path) -> dict:
    """Everything in a scan file as numpy arrays and dicts (see the module docstring for the layout)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scan file {path} does not exist")
    try:
        with h5py.File(path, "r") as file:
            key = json.loads(file.attrs["key"])
            data = {"key": key, "meta": json.loads(file.attrs["meta"]),
                    "axes": [file["axes"][str(i)][()] for i in range(len(file["axes"]))],
                    "values": {name: file["values"][name][()] for name in key["metrics"]},
                    "done": file["done"][()], "directions": file["directions"][()], "center": file["center"][()]}
            if "trajectory" in file:
                t = file["trajectory"]
                data["trajectory"] = {"coords": t["coords"][()], "residuals": t["residuals"][()],
                                      "names": [n.decode() if isinstance(n, bytes) else n for n in t["names"][()]],
                                      "loss": t["loss"][()] if "loss" in t else None}
    except (OSError, KeyError) as error:
        raise ValueError(f"{path} is not a landscape scan file ({type(error).__name__}: {error})") from error
    return data
