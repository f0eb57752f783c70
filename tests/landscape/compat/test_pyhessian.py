"""The PyHessian drop-in against PyHessian itself and against the dense truth."""

import numpy as np
import pytest
import torch
from pyhessian import hessian as PyHessian

from landscape.compat.pyhessian import hessian
from tests.reference import dense_hessian, make


@pytest.fixture(scope="module")
def setup():
    model, loss_fn, X, y = make("cnn-bn")
    H = dense_hessian(model, loss_fn, X, y).numpy()
    return model, loss_fn, X, y, np.linalg.eigvalsh((H + H.T) / 2)[::-1], np.trace(H)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")  # PyHessian's own call
def test_top_eigenvalues_agree_with_pyhessian_and_far_better_with_the_truth(setup):
    model, loss_fn, X, y, eig, _ = setup
    ours, vectors = hessian(model, loss_fn, data=(X, y), cuda=False).eigenvalues(top_n=3)
    torch.manual_seed(0)
    theirs, _ = PyHessian(model, loss_fn, data=(X, y), cuda=False).eigenvalues(top_n=3)
    model.zero_grad(set_to_none=True)
    assert isinstance(ours, list) and all(isinstance(v, float) for v in ours)
    assert [[t.shape for t in v] for v in vectors] == [[p.shape for p in model.parameters()]] * 3
    assert np.allclose(ours[:2], theirs[:2], rtol=2e-2)  # PyHessian's own accuracy
    assert np.allclose(ours, eig[:3], rtol=1e-4)  # at PyHessian's default tol=1e-3, here a residual tolerance
    assert np.max(np.abs(np.array(theirs[:2]) - eig[:2]) / eig[:2]) > 10 * np.max(np.abs(ours - eig[:3]) / eig[:3])
    # PyHessian's power iteration ranks by magnitude: its third is this model's most negative eigenvalue
    assert theirs[2] == pytest.approx(eig[-1], rel=2e-2) and eig[-1] < 0 < eig[2] < abs(eig[-1])


def test_trace_and_density_have_pyhessians_types(setup):
    model, loss_fn, X, y, eig, trace = setup
    comp = hessian(model, loss_fn, dataloader=[(X[:10], y[:10]), (X[10:], y[10:])], cuda=False)
    samples = comp.trace(maxIter=200)
    assert isinstance(samples, list) and abs(np.mean(samples) - trace) < 0.05 * abs(trace)
    nodes, weights = comp.density(iter=30, n_v=2)
    assert len(nodes) == len(weights) == 2 and len(nodes[0]) == 30
    assert np.allclose([sum(w) for w in weights], 1.0)
    assert min(min(n) for n in nodes) >= eig[-1] - 1e-8 and max(max(n) for n in nodes) <= eig[0] + 1e-8


def test_bad_arguments():
    model, loss_fn, X, y = make("mlp")
    with pytest.raises(ValueError, match="exactly one of data"):
        hessian(model, loss_fn, cuda=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="pass cuda=False"):
            hessian(model, loss_fn, data=(X, y))
