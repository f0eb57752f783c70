"""landscape-dynamics: exact Hessian-vector products and the geometry of a network's loss.

    import landscape
    problem = landscape.load("digits-mlp")
    obj = problem.objective()                 # L(theta) over all the data, theta = obj.theta0 [n]
    H = landscape.hessian(obj)                # H @ v for v [n] or [k, n]
    print(obj.check_hvp().rel_error)          # exact HVPs against finite differences
"""

from landscape.objective import HVPCheck, Objective, ParamSpace
from landscape.operators import fisher, ggn, hessian
from landscape.problems import Problem, load, load_checkpoint

__version__ = "0.1.0"
__all__ = ["HVPCheck", "Objective", "ParamSpace", "Problem", "fisher", "ggn", "hessian", "load",
           "load_checkpoint"]
