"""Dynamical systems with published values: classic chaotic maps and flows (``chaotic``) and Hopfield
networks (``hopfield``).

``SYSTEMS`` names the chaotic systems the ``landscape lyapunov --system`` command offers.
"""

from dynamics.systems.chaotic import Henon, Logistic, Lorenz, Rossler

SYSTEMS = {"logistic": Logistic, "henon": Henon, "lorenz": Lorenz, "rossler": Rossler}

__all__ = ["SYSTEMS", "Henon", "Logistic", "Lorenz", "Rossler"]
