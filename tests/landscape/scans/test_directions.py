"""Directions against their definitions: filter norms of the model, numpy eigh, scikit-learn's PCA, least squares."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

import landscape
from landscape.scans import directions as dirs
from tests.reference import dense_hessian, make


def per_tensor(obj, D):
    return obj.space.unflatten(D), obj.space.unflatten(obj.theta0)


def test_filter_normalization_matches_every_filter_and_zeroes_1d(digits_cnn):
    obj = digits_cnn.objective()
    D = dirs.random(obj, k=2, norm="filter", seed=3).vectors
    for k in range(2):
        parts, weights = per_tensor(obj, D[k])
        for name, w in weights.items():
            d = parts[name]
            if w.ndim <= 1:
                assert torch.count_nonzero(d) == 0, name
                continue
            for i in range(w.shape[0]):
                assert d[i].norm().item() == pytest.approx(w[i].norm().item(), rel=1e-5), (name, i)


def test_include_1d_scales_each_1d_tensor_as_one_filter(digits_cnn):
    obj = digits_cnn.objective()
    D = dirs.random(obj, k=1, norm="filter", include_1d=True, seed=0).vectors[0]
    parts, weights = per_tensor(obj, D)
    for name, w in weights.items():
        if w.ndim == 1:
            assert parts[name].norm().item() == pytest.approx(w.norm().item(), rel=1e-5), name
            assert (parts[name].abs() != w.abs()).any()  # a Gaussian direction, not the weights' magnitudes


def test_layer_and_model_norms(digits_mlp):
    obj = digits_mlp.objective()
    layer = dirs.random(obj, k=1, norm="layer").vectors[0]
    parts, weights = per_tensor(obj, layer)
    for name, w in weights.items():
        expected = 0.0 if w.ndim == 1 else w.norm().item()
        assert parts[name].norm().item() == pytest.approx(expected, rel=1e-5, abs=1e-12), name
    model = dirs.random(obj, k=1, norm="model").vectors[0]
    weights_2d = torch.cat([w.reshape(-1) for w in weights.values() if w.ndim > 1])
    assert model.norm().item() == pytest.approx(weights_2d.norm().item(), rel=1e-5)
    raw = dirs.random(obj, k=1, norm="none", include_1d=True, seed=5).vectors[0]
    g = torch.Generator().manual_seed(5)
    assert torch.equal(raw, torch.randn(1, obj.space.n, generator=g, dtype=torch.float64)[0].float())


def test_seeded_reproducible_and_device_independent(digits_mlp):
    obj = digits_mlp.objective()
    a, b = dirs.random(obj, seed=7), dirs.random(obj, seed=7)
    assert torch.equal(a.vectors, b.vectors) and a.recipe == b.recipe
    assert not torch.equal(a.vectors, dirs.random(obj, seed=8).vectors)
    double = dirs.random(obj.to(dtype=torch.float64), seed=7).vectors  # drawn in float64, then cast
    assert torch.equal(double.float(), a.vectors)


def test_orthogonal_directions_keep_their_norms(digits_mlp):
    obj = digits_mlp.objective(dtype=torch.float64)
    plain = dirs.random(obj, k=3, seed=1).vectors
    ortho = dirs.random(obj, k=3, seed=1, orthogonal=True).vectors
    gram = ortho @ ortho.T
    assert torch.allclose(gram - torch.diag(torch.diagonal(gram)), torch.zeros(3, 3, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(ortho.norm(dim=1), plain.norm(dim=1), rtol=1e-12)
    assert torch.allclose(ortho[0], plain[0], rtol=1e-12, atol=0)  # Gram-Schmidt keeps the first


def test_only_1d_parameters_are_included_by_default(digits_mlp):
    obj = landscape.load("quadratic", n=10).objective()
    d = dirs.random(obj, seed=3)  # the quadratic's one vector, normalized as one filter
    assert d.recipe["include_1d"] is True
    assert torch.allclose(d.vectors.norm(dim=1), obj.theta0.norm().expand(2), rtol=1e-12)
    with pytest.raises(ValueError, match="include_1d=True"):
        dirs.random(obj, include_1d=False)
    biases = digits_mlp.objective(params=["0.bias", "2.bias"])
    assert dirs.random(biases).recipe["include_1d"] is True
    mlp = dirs.random(digits_mlp.objective())  # a weight matrix to move: the biases stay
    assert mlp.recipe["include_1d"] is False
    assert (obj_parts := digits_mlp.objective().space.unflatten(mlp.vectors[0]))["0.bias"].abs().max() == 0
    assert obj_parts["0.weight"].abs().max() > 0
    with pytest.raises(ValueError, match="norm must be one of"):
        dirs.random(obj, norm="filters", include_1d=True)


def test_hessian_directions_are_the_top_eigenvectors_of_the_dense_hessian():
    model, loss_fn, X, y = make("mlp")
    obj = landscape.Objective(model, loss_fn, (X, y))
    H = dense_hessian(model, loss_fn, X, y).numpy()
    values, vectors = np.linalg.eigh(H)
    found = dirs.hessian(obj, k=2, tol=1e-10)
    assert np.allclose(found.recipe["eigenvalues"], values[::-1][:2], rtol=1e-8)
    for i in range(2):
        reference = vectors[:, -1 - i]
        got = found.vectors[i].numpy()
        assert abs(abs(got @ reference) - 1) < 1e-8
        assert got[np.abs(got).argmax()] > 0  # the sign convention
    bottom = dirs.hessian(obj, k=1, which="smallest", tol=1e-10)
    assert bottom.recipe["eigenvalues"][0] == pytest.approx(values[0], abs=1e-8)


def test_pca_matches_scikit_learn():
    model, loss_fn, X, y = make("mlp")
    obj = landscape.Objective(model, loss_fn, (X, y))
    g = torch.Generator().manual_seed(0)
    steps = torch.randn(12, obj.space.n, generator=g, dtype=torch.float64) * torch.linspace(3, 0.1, obj.space.n,
                                                                                               dtype=torch.float64)
    T = obj.theta0 + steps.cumsum(0)
    found = dirs.pca(obj, T, k=3)
    reference = PCA(n_components=3).fit((T - T[-1]).numpy())
    assert np.allclose(found.explained_variance, reference.explained_variance_ratio_, rtol=1e-10)
    for got, expected in zip(found.vectors.numpy(), reference.components_):
        assert abs(abs(got @ expected) - 1) < 1e-10
    assert torch.equal(found.center, T[-1])
    with pytest.raises(ValueError, match="at least 4 distinct checkpoints"):
        dirs.pca(obj, T[:3], k=3)


def test_between_and_given(digits_mlp):
    obj = digits_mlp.objective()
    other = obj.theta0 + 0.5
    d = dirs.between(obj, obj.theta0, other)
    assert torch.allclose(d.vectors[0], other - obj.theta0) and torch.equal(d.center, obj.theta0)
    with pytest.raises(ValueError, match="identical"):
        dirs.between(obj, obj.theta0, obj.theta0)
    V = torch.randn(2, obj.space.n)
    assert torch.equal(dirs.given(obj, V).vectors, V)
    with pytest.raises(ValueError, match=r"shape \[k, 2410\]"):
        dirs.given(obj, torch.randn(2, 5))
    with pytest.raises(ValueError, match="finite and nonzero"):
        dirs.given(obj, torch.zeros(obj.space.n))


def test_projection_recovers_coordinates_in_the_plane_and_the_distance_off_it():
    n = 50
    g = torch.Generator().manual_seed(2)
    center = torch.randn(n, generator=g, dtype=torch.float64)
    D = torch.randn(2, n, generator=g, dtype=torch.float64)
    coords = torch.tensor([[0.0, 0.0], [1.0, -2.0], [0.25, 3.5], [-4.0, 0.125]], dtype=torch.float64)
    T = center + coords @ D
    d = dirs.Directions(D, {"kind": "given"}, center=center)
    placed = dirs.project(d, T)
    assert np.allclose(placed.coords, coords.numpy(), atol=1e-12)
    assert placed.residuals.max() < 1e-12
    normal = torch.randn(n, generator=g, dtype=torch.float64)
    normal -= D.T @ torch.linalg.solve(D @ D.T, D @ normal)  # orthogonal to the plane
    off = dirs.project(d, T + 0.3 * normal / normal.norm())
    assert np.allclose(off.coords, coords.numpy(), atol=1e-12)
    assert np.allclose(off.residuals, 0.3, rtol=1e-12)
    with pytest.raises(ValueError, match="no centre"):
        dirs.project(dirs.Directions(D, {}), T)
