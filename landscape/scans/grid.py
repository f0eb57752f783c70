"""A scan's grid: axes ``"start:stop:num"`` and the points they make around a centre.

An axis ``"start:stop:num"`` (or ``(start, stop, num)``) holds x_i = start (1 - t_i) + stop t_i
with t_i = i / (num - 1), so both ends are exact and a symmetric range with odd ``num`` has its
middle point exactly at 0. A point of the grid is theta = center + sum_a x_a d_a, computed
element by element, so it does not depend on how points are grouped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

Tensor = torch.Tensor
MAX_POINTS = 10**8  # values are held in memory, 8 bytes per point and metric
_AXIS = re.compile(r"\s*([-+0-9.eE]+)\s*:\s*([-+0-9.eE]+)\s*:\s*([0-9]+)\s*")


def parse_axis(spec: str | Sequence) -> np.ndarray:
    """``"-1:1:51"`` or ``(-1, 1, 51)`` -> float64 coordinates, exact at both ends and at 0 when symmetric."""
    if isinstance(spec, str):
        match = _AXIS.fullmatch(spec)
        if not match:
            raise ValueError(f"grid axis {spec!r} is not start:stop:num, e.g. -1:1:51")
        try:
            start, stop, num = float(match.group(1)), float(match.group(2)), int(match.group(3))
        except ValueError:
            raise ValueError(f"grid axis {spec!r} is not start:stop:num, e.g. -1:1:51") from None
    else:
        if len(spec) != 3:
            raise ValueError(f"grid axis {spec!r} is not (start, stop, num)")
        start, stop, num = spec
        if isinstance(num, float) and num.is_integer():
            num = int(num)
        if not isinstance(num, (int, np.integer)) or isinstance(num, bool):
            raise ValueError(f"grid axis {spec!r}: num must be an integer")
        start, stop, num = float(start), float(stop), int(num)
    if not (np.isfinite(start) and np.isfinite(stop)):
        raise ValueError(f"grid axis {spec!r}: start and stop must be finite")
    if num < 1 or (num == 1 and start != stop):
        raise ValueError(f"grid axis {spec!r}: num must be at least 2 (or 1 with start == stop)")
    if num > MAX_POINTS:
        raise ValueError(f"grid axis {spec!r}: num is more than the {MAX_POINTS:,} points a scan holds")
    if num == 1:
        return np.array([start])
    t = np.arange(num, dtype=np.float64) / (num - 1)
    return start * (1 - t) + stop * t


def parse_grid(grid) -> list[np.ndarray]:
    """One axis spec (a bare 1D grid) or a list of 1-3 of them -> their coordinates, checked for size."""
    if isinstance(grid, str) or (isinstance(grid, Sequence) and len(grid) == 3
                                 and all(isinstance(v, (int, float, np.number)) for v in grid)):
        grid = [grid]
    axes = [parse_axis(spec) for spec in grid]
    if not 1 <= len(axes) <= 3:
        raise ValueError(f"a scan has 1, 2 or 3 axes, got {len(axes)}")
    total = int(np.prod([len(a) for a in axes], dtype=np.float64))
    if total > MAX_POINTS:
        raise ValueError(f"the grid has {total:,} points, more than the {MAX_POINTS:,} a scan holds in memory; "
                         f"use fewer points per axis")
    return axes


def coordinates(axes: list[np.ndarray], start: int, stop: int) -> np.ndarray:
    """Coordinates ``[stop - start, k]`` of the flattened (C-order) grid's points ``start:stop``."""
    index = np.unravel_index(np.arange(start, stop), tuple(len(a) for a in axes))
    return np.stack([a[i] for a, i in zip(axes, index)], axis=1)


def thetas(center: Tensor, D: Tensor, coords: np.ndarray) -> Tensor:
    """center + sum_a coords[:, a] d_a, element by element: ``[c, n]`` for ``center [n]``, ``D [k, n]``."""
    C = torch.as_tensor(coords, dtype=D.dtype, device=D.device)
    out = center.expand(C.shape[0], -1).clone()
    for a in range(D.shape[0]):
        out.addcmul_(C[:, a:a + 1], D[a:a + 1])
    return out
