"""Training as a dynamical system: gradient descent and its edge of stability, gradient flows, Lyapunov
spectra, linearized training, the information plane, and dynamical systems with published values.

Built on :mod:`landscape`: ``descent`` (the GD loop), ``edge_of_stability`` (sharpness against 2/lr),
``flow``, ``lyapunov``, ``linearized``, ``information``, ``systems`` (``chaotic``, ``hopfield``).
"""

import importlib
import warnings

# Modules that moved -> their new place; ``from dynamics import hopfield`` still works, with a warning.
_MOVED = {"hopfield": "dynamics.systems.hopfield"}


def __getattr__(name: str):
    if name in _MOVED:
        warnings.warn(f"dynamics.{name} is now {_MOVED[name]}", DeprecationWarning, stacklevel=2)
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'dynamics' has no attribute {name!r}")
