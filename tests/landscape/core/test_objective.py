"""Objective and ParamSpace: values against plain autograd on the module, batching, modes, errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from landscape import Objective, ParamSpace
from tests.reference import dense_hessian, flat_grad, make, rel


def test_unflatten_gives_views_of_theta():
    model, *_ = make("cnn-bn")
    space = ParamSpace(model)
    theta = torch.randn(space.n, dtype=torch.float64)
    named = space.unflatten(theta)
    assert [tuple(t.shape) for t in named.values()] == [tuple(p.shape) for p in model.parameters()]
    assert all(t.untyped_storage().data_ptr() == theta.untyped_storage().data_ptr() for t in named.values())
    theta[0] = 123.0
    assert named["0.weight"].reshape(-1)[0] == 123.0
    batch = torch.randn(4, space.n)
    views = space.unflatten(batch)
    assert views["4.weight"].shape == (4, 3, 32)
    assert torch.equal(views["4.weight"][2], space.unflatten(batch[2])["4.weight"])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=3), min_size=1, max_size=5))
def test_flatten_inverts_unflatten(shapes):
    model = nn.Module()
    for i, shape in enumerate(shapes):
        model.register_parameter(f"p{i}", nn.Parameter(torch.randn(tuple(shape))))
    space = ParamSpace(model)
    theta = torch.randn(space.n)
    assert torch.equal(space.flatten(space.unflatten(theta)), theta)
    assert space.n == sum(p.numel() for p in model.parameters())


def test_unknown_parameter_pattern_lists_the_names():
    model, *_ = make("mlp")
    with pytest.raises(ValueError, match=r"'fc\.\*' matches no trainable parameter; the model has: 0.weight, 0.bias"):
        ParamSpace(model, ["fc.*"])


@pytest.mark.parametrize("name", ["mlp", "cnn-bn", "layernorm", "buffers"])
def test_loss_and_grad_equal_autograd_on_the_module(name):
    model, loss_fn, X, y = make(name)
    obj = Objective(model, loss_fn, (X, y), batch_size=10)
    loss, g = obj.loss_and_grad()
    with torch.no_grad():
        assert abs(loss.item() - loss_fn(model(X), y).item()) < 1e-14
    assert rel(g, flat_grad(model, loss_fn, X, y)) < 1e-13
    assert torch.equal(obj.loss(), loss)


def test_uneven_batches_give_the_full_batch_values():
    model, loss_fn, X, y = make("layernorm", n_examples=31)
    full = Objective(model, loss_fn, (X, y))
    cuts = [0, 1, 13, 30, 31]
    pieces = Objective(model, loss_fn, [(X[a:b], y[a:b]) for a, b in zip(cuts, cuts[1:])])
    loader = Objective(model, loss_fn, DataLoader(TensorDataset(X, y), batch_size=8))  # 8, 8, 8, 7
    v = torch.randn(full.space.n, dtype=torch.float64)
    for other in (pieces, loader):
        assert abs(other.loss() - full.loss()) < 1e-14
        assert rel(other.grad(), full.grad()) < 1e-13
        assert rel(other.hvp(v), full.hvp(v)) < 1e-13
    # a plain average of batch means would be biased by the one-example batch
    naive = sum(loss_fn(model(X[a:b]), y[a:b]) for a, b in zip(cuts, cuts[1:])) / 4
    assert abs(naive.item() - full.loss().item()) > 1e-3


def test_eval_mode_by_default_and_the_models_mode_restored():
    model, loss_fn, X, y = make("cnn-bn")
    model.train()
    obj = Objective(model, loss_fn, (X, y))
    loss = obj.loss()
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        assert abs(loss - loss_fn(model(X), y)) < 1e-14
        model.train()
        assert abs(Objective(model, loss_fn, (X, y), train=True).loss() - loss_fn(model(X), y)) < 1e-14


def test_float64_on_request_leaves_the_model_alone():
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    X, y = torch.randn(9, 4), torch.randint(0, 3, (9,))
    obj = Objective(model, F.cross_entropy, (X, y), dtype=torch.float64)
    assert obj.theta0.dtype == obj.loss().dtype == obj.hvp(torch.ones(obj.space.n)).dtype == torch.float64
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ref = model.double()
    H = dense_hessian(ref, F.cross_entropy, X.double(), y)
    v = torch.randn(obj.space.n, dtype=torch.float64)
    assert rel(obj.hvp(v), H @ v) < 1e-12


def test_theta_changes_the_point_not_the_model():
    model, loss_fn, X, y = make("mlp")
    obj = Objective(model, loss_fn, (X, y))
    theta = obj.theta0 + 0.1
    loss = obj.loss(theta)
    with torch.no_grad():
        assert torch.equal(obj.space.flatten(dict(model.named_parameters())), obj.theta0)
        for p, t in zip(model.parameters(), obj.space.unflatten(theta).values()):
            p.copy_(t)
        assert abs(loss - loss_fn(model(X), y)) < 1e-14


def test_loss_many_equals_one_at_a_time():
    model, loss_fn, X, y = make("cnn-bn")
    obj = Objective(model, loss_fn, (X, y), batch_size=7, max_memory=1)  # one point per chunk
    thetas = obj.theta0 + 0.2 * torch.randn(5, obj.space.n, generator=torch.Generator().manual_seed(0),
                                             dtype=torch.float64)
    many = obj.loss_many(thetas)
    assert many.shape == (5,)
    assert torch.allclose(many, torch.stack([obj.loss(t) for t in thetas]), rtol=1e-14, atol=0)
    whole = Objective(model, loss_fn, (X, y), batch_size=7).loss_many(thetas)  # all points in one chunk
    assert torch.allclose(whole, many, rtol=1e-14, atol=0)


def test_evaluate_weights_metrics_like_the_loss():
    model, loss_fn, X, y = make("mlp")
    obj = Objective(model, loss_fn, (X, y), batch_size=10)
    acc = lambda out, target: (out.argmax(-1) == target).double().mean()  # noqa: E731
    values = obj.evaluate(metrics={"accuracy": acc})
    with torch.no_grad():
        assert values["accuracy"] == pytest.approx(acc(model(X), y).item(), abs=1e-15)
        assert values["loss"] == pytest.approx(loss_fn(model(X), y).item(), abs=1e-15)


def test_counts():
    model, loss_fn, X, y = make("mlp")
    obj = Objective(model, loss_fn, (X, y))
    obj.loss()
    obj.grad()
    obj.hvp(torch.ones(3, obj.space.n, dtype=torch.float64))
    obj.loss_many(torch.stack([obj.theta0] * 4))
    assert dict(obj.counts) == {"n_forward": 6, "n_gradients": 1, "n_matvecs": 3}


def test_frozen_parameters_stay_fixed():
    model, loss_fn, X, y = make("mlp")
    model[0].weight.requires_grad_(False)
    obj = Objective(model, loss_fn, (X, y))
    assert obj.space.names == ("0.bias", "2.weight", "2.bias")
    names = ["0.bias", "2.weight", "2.bias"]
    v = torch.randn(obj.space.n, dtype=torch.float64)
    model[0].weight.requires_grad_(True)
    assert rel(obj.hvp(v), dense_hessian(model, loss_fn, X, y, names=names) @ v) < 1e-12


@pytest.mark.parametrize("data, message", [
    ((x for x in [(torch.zeros(2, 4), torch.zeros(2))]), "one-shot iterator"),
    ((torch.zeros(3, 4), torch.zeros(2)), "X has 3 examples but y has 2"),
    ((torch.zeros(0, 4), torch.zeros(0)), "empty"),
    (42, "must be an \\(X, y\\) pair"),
])
def test_bad_data_is_refused(data, message):
    with pytest.raises(ValueError, match=message):
        Objective(nn.Linear(4, 3), F.cross_entropy, data)


def test_batch_size_needs_tensors():
    with pytest.raises(ValueError, match="batch_size applies to an"):
        Objective(nn.Linear(4, 3), F.cross_entropy, [(torch.zeros(2, 4), torch.zeros(2))], batch_size=4)


def test_check_hvp_passes_exact_derivatives():
    model, loss_fn, X, y = make("layernorm")
    check = Objective(model, loss_fn, (X, y), batch_size=10).check_hvp()
    assert check.ok and check.rel_error < 1e-8 and len(check.rel_errors) == 3
    assert check.to_dict()["dtype"] == "float64"


def test_head_is_the_first_examples_in_the_same_batches():
    model, loss_fn, X, y = make("layernorm")
    obj = Objective(model, loss_fn, (X, y), batch_size=10)
    head = obj.head(15)  # a batch of 10 and one cut to 5
    assert [size for _, _, size in head.batches()] == [10, 5] and head.n_examples == 15
    reference = Objective(model, loss_fn, (X[:15], y[:15]), batch_size=10)
    torch.testing.assert_close(head.loss(), reference.loss(), rtol=0, atol=0)
    v = torch.randn(obj.space.n, dtype=obj.dtype)
    torch.testing.assert_close(head.hvp(v), reference.hvp(v), rtol=0, atol=0)
    batches = Objective(model, loss_fn, [{"x": X[:4], "y": y[:4]}, {"x": X[4:8], "y": y[4:8]}])
    assert [size for _, _, size in batches.head(6).batches()] == [4, 2]
    assert [size for _, _, size in obj.head(1000).batches()] == [10] * (len(X) // 10) + [len(X) % 10] * bool(len(X) % 10)
    with pytest.raises(ValueError, match="examples must be a positive integer, got 0"):
        obj.head(0)
    check = obj.check_hvp(examples=15)  # the check on the head: the same error as on its own objective
    assert check.ok and check.rel_errors == reference.check_hvp().rel_errors and check.examples == 15
    assert obj.check_hvp().examples is None
    # a language model's batches: examples are sequences, whatever the loss averages over (label tokens)
    from landscape.language import TinyGPT, causal_lm_loss

    ids = torch.randint(0, 20, (6, 8), generator=torch.Generator().manual_seed(0))
    lm = Objective(TinyGPT(context=8, width=8, heads=2, layers=1), causal_lm_loss,
                   [{"input_ids": ids[:4], "labels": ids[:4]}, {"input_ids": ids[4:], "labels": ids[4:]}])
    assert [int(X["input_ids"].shape[0]) for X, _, _ in lm.head(5).batches()] == [4, 1]


class SloppyCube(torch.autograd.Function):
    """x^3 whose backward is right to first order but hides x from the second derivative."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * 3 * x.detach() ** 2


def test_check_hvp_catches_a_wrong_second_derivative():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return SloppyCube.apply(self.fc(x))

    model, _, X, y = make("mlp")
    obj = Objective(Model().double(), F.cross_entropy, (X, y))
    check = obj.check_hvp(mode="rev-rev")
    assert not check.ok and check.rel_error > 1e-2


class Float32OnlySloppyCube(SloppyCube):
    """x^3, exact in float64 but, in float32, with SloppyCube's wrong second derivative (a kernel that differs
    by dtype)."""

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * 3 * (x.detach() if x.dtype == torch.float32 else x) ** 2


def test_check_hvp_exercises_the_products_own_dtype():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return Float32OnlySloppyCube.apply(self.fc(x))

    X, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    obj = Objective(Model(), F.cross_entropy, (X, y))
    check = obj.check_hvp(mode="rev-rev")
    assert check.dtype == "float64" and check.agrees and check.rel_error < 1e-6  # float64 alone would say ok
    own = check.in_own_dtype
    assert own.dtype == "float32" and not own.agrees and own.rel_error > 0.1
    assert not check.ok and check.to_dict()["in_own_dtype"]["dtype"] == "float32"
    right = Objective(nn.Sequential(nn.Linear(4, 3), nn.Tanh()), F.cross_entropy, (X, y)).check_hvp()
    assert right.ok and right.in_own_dtype.agrees and right.in_own_dtype.rel_error < 1e-5
    assert right.in_own_dtype.tolerance == torch.finfo(torch.float32).eps ** 0.5
    assert Objective(Model().double(), F.cross_entropy, (X.double(), y)).check_hvp(mode="rev-rev").in_own_dtype is None


def test_check_hvp_in_float32_keeps_the_dtype():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    X, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    check = Objective(model, F.cross_entropy, (X, y)).check_hvp(dtype=None)
    assert check.dtype == "float32" and check.ok and check.rel_error < 1e-2


def test_derivatives_work_inside_no_grad():
    model, loss_fn, X, y = make("mlp")
    obj = Objective(model, loss_fn, (X, y))
    v = torch.randn(obj.space.n, dtype=torch.float64)
    expected = obj.hvp(v), obj.grad()
    with torch.no_grad():
        for mode in ("cached", "rev-rev", "fwd-rev"):
            assert rel(obj.hvp(v, mode=mode), expected[0]) < 1e-12
        assert torch.equal(obj.grad(), expected[1])
    with torch.inference_mode():
        assert torch.equal(obj.grad(), expected[1])


def test_a_subset_of_unused_parameters_is_all_zeros():
    model, loss_fn, X, y = make("unused")
    obj = Objective(model, loss_fn, (X, y), params="unused.*")
    assert torch.all(obj.grad() == 0)
    for mode in ("cached", "rev-rev", "fwd-rev"):
        assert torch.all(obj.hvp(torch.ones(2, obj.space.n, dtype=torch.float64), mode=mode) == 0)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(2, 3)

    def forward(self, x, z):
        return torch.tanh(self.a(x)) + self.b(z)


def test_tuple_and_dict_inputs_in_the_pair_form():
    model = TwoInputs().double()
    X, Z = torch.randn(11, 4, dtype=torch.float64), torch.randn(11, 2, dtype=torch.float64)
    y = torch.randint(0, 3, (11,))
    with torch.no_grad():
        expected = F.cross_entropy(model(X, Z), y)
    for data in (((X, Z), y), ({"x": X, "z": Z}, y)):
        obj = Objective(model, F.cross_entropy, data, batch_size=4)
        assert abs(obj.loss() - expected) < 1e-14
        assert obj.n_examples == 11


def test_tied_weights_answer_to_either_name():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.dec = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
            self.dec.weight = self.enc.weight

        def forward(self, x):
            return self.dec(torch.tanh(self.enc(x)))

    model = Tied().double()
    X, y = torch.randn(9, 4, dtype=torch.float64), torch.randint(0, 4, (9,))
    obj = Objective(model, F.cross_entropy, (X, y), params="dec.weight")
    assert obj.space.names == ("enc.weight",) and obj.space.n == 16
    H = dense_hessian(model, F.cross_entropy, X, y)
    v = torch.randn(16, dtype=torch.float64)
    assert rel(obj.hvp(v), H @ v) < 1e-12


def test_buffers_are_a_snapshot():
    model, loss_fn, X, y = make("cnn-bn")
    obj = Objective(model, loss_fn, (X, y), hvp_mode="cached")
    v = torch.randn(obj.space.n, dtype=torch.float64)
    before = obj.loss(), obj.hvp(v)
    with torch.no_grad():
        model[1].running_mean.add_(1.0)
    assert torch.equal(obj.loss(), before[0]) and torch.equal(obj.hvp(v), before[1])


def test_train_mode_with_dropout_is_refused():
    model = nn.Sequential(nn.Linear(4, 5), nn.Dropout(0.5), nn.Linear(5, 3))
    with pytest.raises(ValueError, match="active dropout makes the loss a random function"):
        Objective(model, F.cross_entropy, (torch.randn(3, 4), torch.zeros(3, dtype=torch.long)), train=True)
    Objective(model, F.cross_entropy, (torch.randn(3, 4), torch.zeros(3, dtype=torch.long)))  # eval: fine


@pytest.mark.parametrize("kwargs, message", [
    ({"params": []}, "params is empty"),
    ({"dtype": "float64"}, "dtype must be a floating torch dtype"),
    ({"dtype": torch.int32}, "dtype must be a floating torch dtype"),
    ({"device": "gpu0"}, "not a device name"),
    ({"batch_size": True}, "batch_size must be a positive integer"),
    ({"hvp_mode": "exact"}, "hvp_mode must be one of"),
])
def test_bad_arguments_say_what_is_wrong(kwargs, message):
    model, loss_fn, X, y = make("mlp")
    with pytest.raises(ValueError, match=message):
        Objective(model, loss_fn, (X, y), **kwargs)


def test_a_loss_that_is_not_a_batch_mean_is_refused():
    model, _, X, y = make("mlp")
    obj = Objective(model, lambda out, t: F.cross_entropy(out, t, reduction="none"), (X, y))
    with pytest.raises(ValueError, match=r"loss_fn must return a scalar \(the batch mean\), got \(23,\)"):
        obj.loss()


def test_theta_may_be_numpy_and_empty_batches_of_vectors_are_refused():
    model, loss_fn, X, y = make("mlp")
    obj = Objective(model, loss_fn, (X, y))
    assert torch.equal(obj.loss(obj.theta0.numpy()), obj.loss())
    with pytest.raises(ValueError, match="V has no rows"):
        obj.hvp(torch.zeros(0, obj.space.n))
    with pytest.raises(ValueError, match="n_vectors must be at least 1"):
        obj.check_hvp(n_vectors=0)


def test_auto_mode_is_decided_once():
    model, loss_fn, X, y = make("mlp")
    obj = Objective(model, loss_fn, (X, y))
    assert obj.resolve_mode() == "cached"
    obj.max_memory = 1  # whatever the budget says later, the choice stands (and the cache with it)
    assert obj.resolve_mode() == "cached"
    assert Objective(model, loss_fn, (X, y), max_memory=1).resolve_mode() == "rev-rev"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["cached", "rev-rev", "fwd-rev"])
def test_cuda_hvps_equal_the_cpu_reference(mode):
    model, loss_fn, X, y = make("cnn-bn")
    obj = Objective(model, loss_fn, (X, y), batch_size=10, device="cuda", hvp_mode=mode)
    V = torch.randn(4, obj.space.n, dtype=torch.float64)
    assert obj.hvp(V).device.type == "cuda"
    assert rel(obj.hvp(V).cpu(), V @ dense_hessian(model, loss_fn, X, y)) < 1e-10


def test_restrict_shares_the_snapshot_and_keeps_its_point():
    model, loss_fn, X, y = make("mlp")
    obj = Objective(model, loss_fn, (X, y))
    with torch.no_grad():
        model[0].weight.add_(1.0)  # the model moves on; the objective's snapshot does not
    block = obj.restrict("2.*")
    assert block.space.names == ("2.weight", "2.bias")
    assert block.fixed["0.weight"].untyped_storage().data_ptr() == obj.theta0.untyped_storage().data_ptr()
    assert torch.equal(block.theta0, obj.theta0[30:])
    assert torch.equal(block.loss(), obj.loss())
    assert torch.equal(obj.to(dtype=torch.float64).theta0, obj.theta0)  # already float64: shared values


def test_forward_with_other_buffers_equals_the_model_holding_them(digits_cnn):
    import copy

    obj = digits_cnn.objective()
    other = copy.deepcopy(digits_cnn.model)
    g = torch.Generator().manual_seed(3)
    buffers = {name: b + 0.3 * torch.rand(b.shape, generator=g) if b.is_floating_point() else b
               for name, b in other.named_buffers()}
    other.load_state_dict({**other.state_dict(), **buffers})
    X, y = digits_cnn.data
    with torch.no_grad(), obj.configured():
        expected = other(X)
        assert torch.allclose(obj.forward(obj.theta0, X, buffers), expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(obj.forward(obj.theta0, X), expected, rtol=1e-3, atol=1e-3)  # snapshot untouched
    batch = obj.to(train=True)
    assert batch.train and not obj.train and torch.equal(batch.theta0, obj.theta0)
    digits_cnn.model.train()
    try:
        with torch.no_grad():
            in_train_mode = torch.nn.functional.cross_entropy(
                torch.func.functional_call(digits_cnn.model, {k: v.clone() for k, v in digits_cnn.model.state_dict().items()},
                                           (X,)), y).item()  # copies: train mode updates the running statistics
    finally:
        digits_cnn.model.eval()
    assert batch.loss().item() == pytest.approx(in_train_mode, rel=1e-6)


def test_numpy_arrays_are_taken_as_tensors():
    X, Z, y = torch.randn(12, 4, dtype=torch.float64), torch.randn(12, 2, dtype=torch.float64), torch.randint(0, 3, (12,))
    one, two = nn.Linear(4, 3).double(), TwoInputs().double()
    for model, tensors, arrays in ((one, (X, y), (X.numpy(), y.numpy())),
                                   (two, ({"x": X, "z": Z}, y), ({"x": X.numpy(), "z": Z.numpy()}, y.numpy()))):
        expected = Objective(model, F.cross_entropy, tensors)
        obj = Objective(model, F.cross_entropy, arrays, batch_size=5)
        assert obj.loss().item() == pytest.approx(expected.loss().item(), rel=1e-14)
        assert rel(obj.grad(), expected.grad()) < 1e-14
