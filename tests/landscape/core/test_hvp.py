"""Every HVP mode, single and batched, against a dense float64 Hessian built independently."""

from functools import cache

import pytest
import torch
from torch import nn

from landscape import Objective
from landscape.core.hvp import MODES
from tests.reference import MODELS, dense_hessian, fd_hessian, make, rel

LAYOUTS = ("full", "batch_size", "uneven_list")


@cache
def reference(name: str) -> torch.Tensor:
    model, loss_fn, X, y = make(name)
    return dense_hessian(model, loss_fn, X, y)


def objective(name: str, layout: str, **kwargs) -> Objective:
    model, loss_fn, X, y = make(name)
    if layout == "full":
        return Objective(model, loss_fn, (X, y), **kwargs)
    if layout == "batch_size":
        return Objective(model, loss_fn, (X, y), batch_size=10, **kwargs)  # 10 + 10 + 3
    cuts = [0, 7, 20, len(y)]
    return Objective(model, loss_fn, [(X[a:b], y[a:b]) for a, b in zip(cuts, cuts[1:])], **kwargs)


def vectors(n: int, k: int) -> torch.Tensor:
    return torch.randn(k, n, generator=torch.Generator().manual_seed(k), dtype=torch.float64)


@pytest.mark.parametrize("name", MODELS)
def test_reference_agrees_with_finite_differences(name):
    model, loss_fn, X, y = make(name)
    assert rel(reference(name), fd_hessian(model, loss_fn, X, y)) < 1e-8


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mode", MODES + ("auto",))
@pytest.mark.parametrize("name", MODELS)
def test_hvp_equals_dense_hessian(name, mode, layout):
    obj = objective(name, layout, hvp_mode=mode)
    if name == "buffers" and mode == "fwd-rev":  # F.mse_loss: torch's forward-mode bug, pytorch issue 123996
        obj.loss_fn = lambda out, y: ((out - y) ** 2).mean()
    H = reference(name)
    v = vectors(obj.space.n, 1)[0]
    assert rel(obj.hvp(v), H @ v) < 1e-10
    V = vectors(obj.space.n, 5)
    assert rel(obj.hvp(V), V @ H) < 1e-10
    if mode != "auto":  # the vmapped path CUDA takes, and the loop the CPU takes
        for vectorize in (True, False):
            assert rel(obj.engine.products(V, obj.theta0, mode, vectorize=vectorize), V @ H) < 1e-10


@pytest.mark.parametrize("mode", MODES)
def test_several_vectors_on_the_cpu_are_the_single_products_in_a_loop(mode):
    obj = objective("cnn-bn", "batch_size", hvp_mode=mode)  # vmapped, they cost more than a loop there
    V = vectors(obj.space.n, 3)
    assert torch.equal(obj.hvp(V), torch.stack([obj.hvp(v) for v in V]))


@pytest.mark.parametrize("mode", MODES)
def test_batched_hvp_in_chunks_of_one(mode):
    obj = objective("cnn-bn", "batch_size", hvp_mode=mode, max_memory=1)  # every chunk holds one vector
    V = vectors(obj.space.n, 4)
    assert rel(obj.engine.products(V, obj.theta0, mode, vectorize=True), V @ reference("cnn-bn")) < 1e-10


@pytest.mark.parametrize("mode", MODES)
def test_parameter_subset_is_the_hessian_block(mode):
    model, loss_fn, X, y = make("mlp")
    obj = Objective(model, loss_fn, (X, y), params=["0.*", "2.bias"], hvp_mode=mode)
    names = ["0.weight", "0.bias", "2.bias"]
    assert obj.space.names == tuple(names)
    H = dense_hessian(model, loss_fn, X, y, names=names)
    V = vectors(obj.space.n, 3)
    assert rel(obj.hvp(V), V @ H) < 1e-10


@pytest.mark.parametrize("mode", MODES)
def test_unused_parameter_has_zero_curvature(mode):
    obj = objective("unused", "full", hvp_mode=mode)
    cut = obj.space.slices()["unused.weight"]
    HV = obj.hvp(vectors(obj.space.n, 3))
    assert torch.all(HV[:, cut] == 0)
    assert torch.all(obj.grad()[cut] == 0)


@pytest.mark.parametrize("mode", MODES)
def test_loss_linear_in_theta_has_zero_hessian(mode):
    model = nn.Linear(3, 2).double()
    X = torch.randn(5, 3, dtype=torch.float64)
    obj = Objective(model, lambda out, y: out.mean(), (X, X[:, 0]), hvp_mode=mode)
    assert torch.all(obj.hvp(vectors(obj.space.n, 2)) == 0)
    assert torch.all(obj.hvp(vectors(obj.space.n, 1)[0]) == 0)


@pytest.mark.parametrize("mode", MODES)
def test_train_mode_uses_batch_statistics_and_leaves_buffers(mode):
    model, loss_fn, X, y = make("cnn-bn")
    bn = model[1]
    before = bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()
    obj = Objective(model, loss_fn, (X, y), train=True, hvp_mode=mode)
    V = vectors(obj.space.n, 3)
    HV = obj.hvp(V)
    assert all(torch.equal(a, b) for a, b in zip(before, (bn.running_mean, bn.running_var, bn.num_batches_tracked)))
    assert not model.training and bn.track_running_stats
    model.train()
    H = dense_hessian(model, loss_fn, X, y)  # the module in train mode: batch statistics
    model.eval()
    assert rel(HV, V @ H) < 1e-10
    assert rel(HV, V @ reference("cnn-bn")) > 1e-3  # and that is not the eval-mode Hessian


def test_fwd_rev_names_the_torch_bug_it_hits():
    obj = objective("buffers", "full", hvp_mode="fwd-rev")  # F.mse_loss
    with pytest.raises(ValueError, match="fwd-rev HVP failed inside torch.*use hvp_mode='rev-rev'"):
        obj.hvp(vectors(obj.space.n, 1)[0])


def test_hessian_is_symmetric():
    obj = objective("layernorm", "uneven_list")
    u, v = vectors(obj.space.n, 2)
    assert abs(u @ obj.hvp(v) - v @ obj.hvp(u)) < 1e-12 * obj.hvp(v).norm() * u.norm()


def test_cached_graph_follows_theta():
    obj = objective("mlp", "full", hvp_mode="cached")
    model, loss_fn, X, y = make("mlp")
    v = vectors(obj.space.n, 1)[0]
    theta = obj.theta0 + 0.3 * vectors(obj.space.n, 2)[1]
    obj.hvp(v)  # builds the graph at theta0
    with torch.no_grad():  # move the module itself to theta for the reference
        for p, t in zip(model.parameters(), obj.space.unflatten(theta).values()):
            p.copy_(t)
    assert rel(obj.hvp(v, theta), dense_hessian(model, loss_fn, X, y) @ v) < 1e-10
    assert rel(obj.hvp(v), reference("mlp") @ v) < 1e-10  # back at theta0


def test_hvp_counts_vectors():
    obj = objective("mlp", "full")
    obj.hvp(vectors(obj.space.n, 4))
    obj.hvp(vectors(obj.space.n, 1)[0])
    assert obj.counts["n_matvecs"] == 5


def test_hvp_rejects_wrong_shapes():
    obj = objective("mlp", "full")
    with pytest.raises(ValueError, match=r"V must have shape \[51\] or \[k, 51\]"):
        obj.hvp(torch.zeros(50))
    with pytest.raises(ValueError, match="theta must have shape"):
        obj.hvp(torch.zeros(51), theta=torch.zeros(3))
    with pytest.raises(ValueError, match="unknown HVP mode"):
        obj.hvp(torch.zeros(51), mode="exact")
