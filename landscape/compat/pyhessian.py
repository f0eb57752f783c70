"""A drop-in for PyHessian's ``hessian`` class: change ``from pyhessian import hessian`` to
``from landscape.compat.pyhessian import hessian`` and the script runs with exact,
residual-checked algorithms underneath.

    hessian_comp = hessian(model, criterion, data=(inputs, targets), cuda=False)
    top_eigenvalues, top_eigenvectors = hessian_comp.eigenvalues(top_n=5)
    trace = np.mean(hessian_comp.trace())
    density_eigen, density_weight = hessian_comp.density()

Differences from PyHessian 0.1, all on purpose:
- ``eigenvalues`` runs thick-restart Lanczos and returns the *algebraically* largest
  eigenvalues, descending, with ``tol`` as the residual tolerance ||Hv - lambda v|| <=
  tol * |lambda_max|; PyHessian's deflated power iteration returns the largest in
  magnitude, stopped when the estimate changes by less than ``tol`` (its answers are
  0.2 to 1 percent off). ``maxIter`` per eigenvalue bounds the total number of products.
- ``trace`` runs Hutch++ within ``maxIter`` products, stopping once its standard error
  is below ``tol`` times the estimate; the list it returns has that estimate as its mean.
- ``density`` runs stochastic Lanczos quadrature with ``n_v`` probes in lockstep
  (PyHessian's calls ``torch.eig``, which current torch no longer has).
- ``cuda=True`` without a GPU is a clear error; the model is not modified (PyHessian
  calls ``model.eval()`` on it; here eval mode is used during the computations only).
"""

from __future__ import annotations

import numpy as np
import torch

from landscape.core.objective import Objective
from landscape.curvature.operators import hessian as hessian_operator
from landscape.linalg.density import slq
from landscape.linalg.lanczos import lanczos
from landscape.linalg.trace import hutchpp


class hessian:  # noqa: N801 - PyHessian's name
    """PyHessian's interface over ``landscape``: ``eigenvalues``, ``trace`` and ``density``."""

    def __init__(self, model, criterion, data=None, dataloader=None, cuda=True):
        if (data is None) == (dataloader is None):
            raise ValueError("give exactly one of data=(inputs, targets) or dataloader=...")
        if cuda and not torch.cuda.is_available():
            raise ValueError("cuda=True but CUDA is not available here; pass cuda=False")
        self.model, self.criterion = model, criterion
        self.device = torch.device("cuda") if cuda else torch.device("cpu")
        self.objective = Objective(model, criterion, data if data is not None else dataloader, device=self.device)
        self.operator = hessian_operator(self.objective)

    def _tensors(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """A flat vector as a list shaped like the model's trainable parameters."""
        return list(self.objective.space.unflatten(vector.to(self.objective.dtype)).values())

    def eigenvalues(self, maxIter=100, tol=1e-3, top_n=1):  # noqa: N803 - PyHessian's names
        """(eigenvalues: list of top_n floats, descending; eigenvectors: list of top_n lists of tensors)."""
        result = lanczos(self.operator, k=top_n, tol=tol, max_steps=maxIter * top_n)
        return result.eigenvalues.tolist(), [self._tensors(v) for v in result.eigenvectors]

    def trace(self, maxIter=100, tol=1e-3):  # noqa: N803
        """A list of per-probe values whose mean is the Hutch++ estimate of tr(H)."""
        result = hutchpp(self.operator, n_matvecs=max(3, maxIter), rtol=tol)
        return result.samples or [result.estimate]

    def density(self, iter=100, n_v=1):  # noqa: A002 - PyHessian's names
        """(eigen_list_full, weight_list_full): per probe, the Ritz nodes and their quadrature weights."""
        result = slq(self.operator, probes=n_v, steps=iter)
        ok = np.isfinite(result.nodes)
        return ([row[mask].tolist() for row, mask in zip(result.nodes, ok)],
                [row[mask].tolist() for row, mask in zip(result.weights, ok)])
