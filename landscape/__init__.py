"""landscape-dynamics: exact Hessian-vector products and the geometry of a network's loss.

    import landscape
    problem = landscape.load("digits-mlp")
    obj = problem.objective()                 # L(theta) over all the data, theta = obj.theta0 [n]
    H = landscape.hessian(obj)                # H @ v for v [n] or [k, n]
    print(obj.check_hvp().rel_error)          # exact HVPs against finite differences
    top = landscape.eigenvalues(H, k=5)       # Lanczos, residual-checked
    d = landscape.directions.random(obj, k=2) # filter-normalized, seeded
    result = landscape.scan(obj, d, ["-1:1:51", "-1:1:51"], store="out/scan.h5")  # values (51, 51)
"""

from landscape.core.objective import HVPCheck, Objective
from landscape.core.space import ParamSpace
from landscape import linalg
from landscape.scans import directions
from landscape.curvature.operators import fisher, ggn, hessian
from landscape.problems import Problem, load, load_checkpoint
from landscape.scans.scan import Scan, scan
from landscape.scans.scan import load as load_scan
from landscape.curvature.sharpness import Sharpness, sharpness
from landscape.curvature.spectrum import density, eigenvalues, per_layer, trace

__version__ = "0.1.0"
__all__ = ["HVPCheck", "Objective", "ParamSpace", "Problem", "Scan", "Sharpness", "density", "directions",
           "eigenvalues", "fisher", "ggn", "hessian", "linalg", "load", "load_checkpoint", "load_scan", "per_layer",
           "scan", "sharpness", "trace"]
