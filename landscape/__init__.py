"""landscape-dynamics: exact Hessian-vector products and the geometry of a network's loss.

    import landscape
    problem = landscape.load("digits-mlp")
    obj = problem.objective()                 # L(theta) over all the data, theta = obj.theta0 [n]
    H = landscape.hessian(obj)                # H @ v for v [n] or [k, n]
    print(obj.check_hvp().rel_error)          # exact HVPs against finite differences
    top = landscape.eigenvalues(H, k=5)       # Lanczos, residual-checked
    d = landscape.directions.random(obj, k=2) # filter-normalized, seeded
    result = landscape.scan(obj, d, ["-1:1:51", "-1:1:51"], store="out/scan.h5")  # values (51, 51)

Where things live: ``core`` (the objective, its parameter space and data, the HVP engine, memory,
data parallelism, result helpers), ``linalg`` (Lanczos, trace, density over any operator),
``curvature`` (Hessian/GGN/Fisher operators, spectra, sharpness), ``scans`` (directions, grids, the
many-point evaluator, scans and their files), ``paths`` (curves between minima, alignment),
``kernels`` (NTK, NNGP), ``compat`` (the PyHessian drop-in), ``cli`` (the ``landscape`` command).
"""

import importlib
import warnings

from landscape import linalg
from landscape.checkpoints import load_checkpoint
from landscape.core.check import HVPCheck
from landscape.core.objective import Objective
from landscape.core.space import ParamSpace
from landscape.curvature.operators import fisher, ggn, hessian
from landscape.curvature.sharpness import Sharpness, sharpness
from landscape.curvature.spectrum import density, eigenvalues, per_layer, trace
from landscape.problems import Problem, load
from landscape.scans import directions
from landscape.scans.scan import Scan, scan
from landscape.scans.scan import load as load_scan

__version__ = "0.1.0"
__all__ = ["HVPCheck", "Objective", "ParamSpace", "Problem", "Scan", "Sharpness", "density", "directions",
           "eigenvalues", "fisher", "ggn", "hessian", "linalg", "load", "load_checkpoint", "load_scan", "per_layer",
           "scan", "sharpness", "trace"]

# Modules that moved in 0.1 -> their new place; ``from landscape import connectivity`` still works, with a warning.
_MOVED = {"objective": "landscape.core.objective", "hvp": "landscape.core.hvp", "memory": "landscape.core.memory",
          "distributed": "landscape.core.distributed", "operators": "landscape.curvature.operators",
          "spectrum": "landscape.curvature.spectrum", "store": "landscape.scans.store",
          "connectivity": "landscape.paths.curves", "align": "landscape.paths.align",
          "ntk": "landscape.kernels.ntk", "nngp": "landscape.kernels.nngp"}


def __getattr__(name: str):
    if name in _MOVED:
        warnings.warn(f"landscape.{name} is now {_MOVED[name]}", DeprecationWarning, stacklevel=2)
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")
