"""Moved: ``gradient_descent`` and ``GDRun`` are in :mod:`dynamics.descent`, ``SharpnessTracker`` and
``SharpnessHistory`` in :mod:`dynamics.edge_of_stability`. This module keeps the old imports working for
one release, with a DeprecationWarning."""

import warnings

from dynamics.descent import GDRun, gradient_descent
from dynamics.edge_of_stability import SharpnessHistory, SharpnessTracker

warnings.warn("dynamics.stability is now dynamics.descent (gradient_descent, GDRun) and dynamics.edge_of_stability "
              "(SharpnessTracker, SharpnessHistory)", DeprecationWarning, stacklevel=2)

__all__ = ["GDRun", "SharpnessHistory", "SharpnessTracker", "gradient_descent"]
