"""Results as strict JSON (NaN and infinities become null) and the one tensor fingerprint."""

import json
import math

import numpy as np
import pytest
import torch

import landscape
from dynamics.descent import gradient_descent
from landscape.core.results import fingerprint, jsonable
from landscape.linalg.trace import hutchpp
from landscape.paths import curves
from landscape.problems import quadratic
from landscape.scans import directions


def strict(data) -> object:
    """``data`` through JSON with a parser that rejects NaN and Infinity, as strict JSON readers do."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(json.dumps(data, allow_nan=False), parse_constant=refuse)


def test_jsonable_turns_non_finite_floats_into_null_through_every_container():
    data = {"a": np.array([[1.0, np.nan], [np.inf, -np.inf]]), "b": torch.tensor([0.5, float("nan")]),
            "c": (np.float32(2.5), np.int64(3), np.bool_(True)), "d": [math.nan, {"e": -math.inf}], "f": "text",
            "g": None}
    assert strict(jsonable(data)) == {"a": [[1.0, None], [None, None]], "b": [0.5, None], "c": [2.5, 3, True],
                                      "d": [None, {"e": None}], "f": "text", "g": None}


def test_fingerprint_tells_values_and_shapes_apart_not_dtypes_or_devices():
    t = torch.arange(6, dtype=torch.float32)
    assert fingerprint(t) == fingerprint(t.double()) == fingerprint(t.clone())
    assert fingerprint(t) != fingerprint(t.reshape(2, 3))
    assert fingerprint(t) != fingerprint(t + 1e-6)
    assert len(fingerprint(t)) == 16


def test_results_with_non_finite_numbers_are_strict_json():
    problem = quadratic(n=6, eigenvalues=[4.0, 4.0, 2.0, 1.0, 1.0, 0.5])
    obj = problem.objective()
    H = landscape.hessian(obj)
    trace = hutchpp(H, n_matvecs=3)  # a sketch and one probe: no spread to measure, stderr inf
    assert trace.stderr == math.inf
    assert strict(trace.to_dict())["stderr"] is None
    assert strict(trace.to_dict())["settings"] == {"n_matvecs": 3, "rtol": None, "seed": 0, "sketch": 1, "chunk": 16,
                                                   "operator": {"operator": "hessian", "derivative_path": "sdpa-math",
                                                                "hvp_mode": "cached"}}
    rho = landscape.density(H, probes=2, steps=6)  # 4 distinct eigenvalues: each probe stops early, NaN-padded
    assert np.isnan(rho.nodes).any()
    found = strict(rho.to_dict())
    assert None in found["nodes"][0] and found["settings"]["probes"] == 2 and found["settings"]["steps"] == 6
    run = gradient_descent(obj, lr=10.0, steps=200, progress=False)  # lr > 2/4: the loss overflows to inf
    assert run.diverged and strict(run.to_dict())["loss"][-1] is None

    def loss_nan_far_out(outputs, y):
        return torch.where(outputs.abs() < 5, outputs, torch.nan).mean()

    far = landscape.Objective(problem.model, loss_nan_far_out, problem.data)
    scanned = landscape.scan(far, directions.random(far, k=1, norm="none", include_1d=True, seed=0), "-40:40:9", progress=False)
    values = strict(scanned.to_dict(values=True))
    assert values["non_finite"] > 0 and values["values"]["loss"].count(None) == values["non_finite"]
    line = curves.interpolate(far, far.theta0, far.theta0 + 40 * torch.ones_like(far.theta0), num=5, progress=False)
    assert math.isnan(line.barrier_linear) and strict(line.to_dict())["barrier_linear"] is None


def test_scan_center_values_that_are_not_finite_are_null():
    problem = quadratic(n=3)
    obj = landscape.Objective(problem.model, lambda out, y: out.mean() * torch.nan, problem.data)
    result = landscape.scan(obj, directions.random(obj, k=1, norm="none", include_1d=True, seed=0), "-1:1:3", progress=False)
    assert strict(result.to_dict())["center_values"] == {"loss": None}
    with pytest.raises(ValueError):
        json.dumps(result.center_values, allow_nan=False)  # the raw numbers are NaN; the JSON is not
