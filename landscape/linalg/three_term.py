"""Lanczos without a stored basis (``lanczos(..., basis="none")``): the plain three-term recurrence.

Without reorthogonalization the Lanczos vectors lose orthogonality as soon as a
Ritz value converges, and T then holds further copies ("ghosts") of the converged
eigenvalues, plus spurious values while each copy forms. The Cullum-Willoughby test
(Cullum and Willoughby 1985) removes them: of the eigenvalues of T, a cluster of numerically
equal copies (within ``GHOST_TOL = 1e-12`` relative) counts once, and a simple one that is
also an eigenvalue of T with its first row and column deleted is spurious (a genuine one has
a component along the start vector). Good Ritz values closer than tol * |lambda_max| are then
merged, as the other options do not tell them apart either; each distinct eigenvalue is
found once, so an operator with fewer distinct eigenvalues than asked for gives fewer
(``converged`` False). The eigenvectors are the Ritz vectors y = sum_j s_j q_j of a second
pass that regenerates the same q_j from the same start by the same recurrence (bit for bit
when the operator is deterministic), normalized, with residuals measured by one product
each; without eigenvectors the residuals are the bounds beta |s_last|.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal, eigvalsh_tridiagonal

Tensor = torch.Tensor
GHOST_TOL = 1e-12  # relative to max |theta|: copies of a converged eigenvalue agree to ~1e-15 (measured)


def wanted(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices into ascending ``theta`` of the wanted Ritz values."""
    m = len(theta)
    if which == "largest":
        return np.arange(max(0, m - k), m)
    if which == "smallest":
        return np.arange(min(k, m))
    low, high = np.arange(min(k, m)), np.arange(max(0, m - k), m)
    return np.unique(np.concatenate([low, high]))


def apply(op, V: Tensor) -> Tensor:
    """``op @ V`` for ``V [n]`` or ``[r, n]`` float64 anywhere -> float64 on the operator's device."""
    out = op @ V.to(op.device, op.dtype).reshape(-1, op.shape[0])
    if not torch.linalg.vector_norm(out, float("inf")).isfinite():  # NaN propagates; no [n] temporary
        raise ValueError("the operator returned a non-finite product (NaN or inf); is the loss finite "
                         "at this point?")
    return out.to(torch.float64).reshape(V.shape)


def krylov(op, q: Tensor, alphas: list, betas: list):
    """The plain three-term recurrence from the unit vector ``q``: yields q_0, q_1, ... and appends
    alpha_j = q_j . H q_j and beta_j = ||H q_j - alpha_j q_j - beta_{j-1} q_{j-1}|| as it goes.

    Three vectors of n are alive at a time (q_{j-1}, q_j and the next one); it ends at an exact breakdown.
    """
    q_prev, beta_prev = None, 0.0
    while True:
        yield q
        w = apply(op, q)
        if q_prev is not None:
            w.sub_(q_prev, alpha=beta_prev)
        alpha = torch.dot(q, w).item()
        w.sub_(q, alpha=alpha)
        beta = w.norm().item()
        alphas.append(alpha)
        betas.append(beta)
        if beta == 0.0:
            return
        q_prev, q, beta_prev = q, w.div_(beta), beta


def good_ritz(alphas, betas, tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Ritz values of the tridiagonal T (``alphas``, ``betas[:-1]``) with ghosts removed.

    Returns the good values (ascending), their bounds beta_last |s_last|, their columns of
    T's eigenvectors ``S [m, good]``, and how many Ritz values were dropped. Cullum-Willoughby:
    numerically equal copies (within ``GHOST_TOL * max |theta|``) count once, a simple value
    within that of an eigenvalue of T without its first row and column is spurious; then
    values within ``tol * max |theta|`` of each other are merged. Each kept value is the copy
    with the smallest bound.
    """
    alphas, betas = np.asarray(alphas), np.asarray(betas)
    m = len(alphas)
    theta, S = eigh_tridiagonal(alphas, betas[:m - 1])
    bounds = betas[m - 1] * np.abs(S[-1])
    scale = max(np.abs(theta).max(), np.finfo(float).tiny)
    hat = eigvalsh_tridiagonal(alphas[1:], betas[1:m - 1]) if m > 1 else np.empty(0)
    keep = []
    for group in _clusters(theta, GHOST_TOL * scale):
        spurious = len(group) == 1 and len(hat) and np.abs(hat - theta[group[0]]).min() <= GHOST_TOL * scale
        if not spurious:
            keep.append(group[np.argmin(bounds[group])])
    keep = np.array(keep, dtype=int)
    if len(keep) > 1:
        keep = np.array([g[np.argmin(bounds[g])] for g in _clusters(theta[keep], tol * scale, keep)], dtype=int)
    return theta[keep], bounds[keep], S[:, keep], m - len(keep)


def _clusters(values: np.ndarray, gap: float, labels: np.ndarray | None = None) -> list[np.ndarray]:
    """Runs of ascending ``values`` whose neighbours are at most ``gap`` apart, as index arrays (or ``labels``)."""
    labels = np.arange(len(values)) if labels is None else labels
    cuts = np.flatnonzero(np.diff(values) > gap) + 1
    return np.split(labels, cuts)


def three_term(op, start, k, which, tol, max_steps, want, eigenvectors, bar, settings):
    """Lanczos without a basis: eigenvalues from the recurrence's T, eigenvectors from a second pass."""
    alphas, betas = [], []
    steps, norm_T, last_check = 0, 0.0, 0
    recurrence = krylov(op, start, alphas, betas)
    next(recurrence)
    while True:
        exhausted = next(recurrence, None) is None
        steps += 1
        norm_T = max(norm_T, abs(alphas[-1]) + betas[-1] + (betas[-2] if steps > 1 else 0.0))
        breakdown = exhausted or betas[-1] <= 1e-12 * norm_T
        last = breakdown or steps >= max_steps
        if last or steps <= 50 or steps - last_check >= steps // 20:  # eigh of T: at most ~5% extra steps
            last_check = steps
            theta, bounds, S, ghosts = good_ritz(alphas, betas, tol)
            scale = max(np.abs(theta).max(), np.finfo(float).tiny)
            idx = wanted(theta, k, which)
            done = len(idx) == want and steps > want and np.all(bounds[idx] <= tol * scale)
            bar.set_postfix(residual=f"{bounds[idx].max() / scale:.1e}", refresh=False)
        bar.update()
        if done or last:
            break
    recurrence.close()
    if breakdown:  # T is exact: its Ritz values are eigenvalues; the bounds are ~0
        done = len(idx) == want
    idx = idx[np.argsort(-theta[idx], kind="stable")]
    values = theta[idx]
    settings.update(ghosts=ghosts, residuals="measured" if eigenvectors else "estimated")
    if not eigenvectors:
        residuals = bounds[idx]
        return values, None, residuals, bool(done and np.all(residuals <= tol * scale)), steps, 0
    coef = torch.as_tensor(S[:, idx], device=start.device)  # [steps, k]
    Y = torch.zeros(len(idx), len(start), dtype=torch.float64, device=start.device)
    again, again_betas = [], []
    recurrence = krylov(op, start, again, again_betas)
    for j, q in zip(range(len(S)), recurrence):
        Y.addr_(coef[j], q)
    recurrence.close()
    q = None  # the generator's vectors go with it
    steps += len(S) - 1
    settings["regenerated"] = again == alphas[:len(again)] and again_betas == betas[:len(again)]
    Y /= Y.norm(dim=1, keepdim=True)
    residuals = np.array([apply(op, y).sub_(y, alpha=value).norm().item() for y, value in zip(Y, values)])
    steps += len(idx)
    return values, Y, residuals, bool(done and np.all(residuals <= tol * scale)), steps, 0
