"""What every result shares: strict JSON and tensor fingerprints.

Every result's ``to_dict()`` passes through ``jsonable``, so it is valid JSON for a strict
parser: non-finite floats become ``null`` (``json.dumps(..., allow_nan=False)`` accepts it).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import numpy as np
import torch


def jsonable(value):
    """``value`` in plain JSON types: tensors and arrays as (nested) lists, numpy scalars as Python
    numbers, NaN and infinities as ``None``; through dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Result):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {key: jsonable(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def fingerprint(t: torch.Tensor) -> str:
    """A short sha256 of a tensor's values (as float64 on the CPU) and shape: equal fingerprints mean equal
    values. It recognises parameters, directions and data across files and processes."""
    data = np.ascontiguousarray(t.detach().to("cpu", torch.float64).numpy())
    return hashlib.sha256(data.tobytes() + str(data.shape).encode()).hexdigest()[:16]


class Result:
    """The base of the result dataclasses: ``to_dict()`` is every field, as strict JSON (a subclass that
    holds tensors not worth writing, such as eigenvectors, overrides it)."""

    def to_dict(self) -> dict:
        return jsonable(vars(self))
