"""landscape-dynamics: exact Hessian-vector products and the geometry of a network's loss.

    import landscape
    problem = landscape.load("digits-mlp")
    obj = problem.objective()                 # L(theta) over all the data, theta = obj.theta0 [n]
    H = landscape.hessian(obj)                # H @ v for v [n] or [k, n]
    print(obj.check_hvp().rel_error)          # exact HVPs against finite differences
    top = landscape.eigenvalues(H, k=5)       # Lanczos, residual-checked
"""

from landscape.objective import HVPCheck, Objective, ParamSpace
from landscape import linalg
from landscape.operators import fisher, ggn, hessian
from landscape.problems import Problem, load, load_checkpoint
from landscape.sharpness import Sharpness, sharpness
from landscape.spectrum import density, eigenvalues, per_layer, trace

__version__ = "0.1.0"
__all__ = ["HVPCheck", "Objective", "ParamSpace", "Problem", "Sharpness", "density", "eigenvalues", "fisher",
           "ggn", "hessian", "linalg", "load", "load_checkpoint", "per_layer", "sharpness", "trace"]
