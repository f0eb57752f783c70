"""Paths between minima: barriers against closed forms, curve geometry, trained curves, BatchNorm statistics."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from landscape import problems
from landscape.core.objective import Objective
from landscape.paths import curves as C
from landscape.scans import directions

K = 0.3  # tilt of the double well: the two minima have different heights


class DoubleWell(nn.Module):
    """L(x, y) = (x^2 - 1)^2 + K x + y^2 as every output (two minima on the x axis)."""

    def __init__(self, start):
        super().__init__()
        self.theta = nn.Parameter(torch.as_tensor(start, dtype=torch.float64).clone())

    def forward(self, X):
        x, y = self.theta
        return ((x ** 2 - 1) ** 2 + K * x + y ** 2 + torch.log(x + 2)).expand(X.shape[0])


def f(x):  # the loss on the x axis
    return (x ** 2 - 1) ** 2 + K * x + np.log(x + 2)


def fprime(x):
    return 4 * x ** 3 - 4 * x + K + 1 / (x + 2)


def newton(g, gprime, x):
    for _ in range(60):
        x = x - g(x) / gprime(x)
    return x


@pytest.fixture(scope="module")
def well():
    fsecond = lambda x: 12 * x ** 2 - 4 - 1 / (x + 2) ** 2  # noqa: E731
    lo, hi = newton(fprime, fsecond, -1.0), newton(fprime, fsecond, 1.0)  # the two minima
    obj = Objective(DoubleWell([lo, 0.0]), lambda out, y: out.mean(),
                    (torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)))
    return obj, lo, hi, fsecond


def test_both_barrier_definitions_equal_the_closed_form_with_the_right_sign(well):
    obj, lo, hi, fsecond = well
    a, b = torch.tensor([lo, 0.0], dtype=torch.float64), torch.tensor([hi, 0.0], dtype=torch.float64)
    assert abs(fprime(lo)) < 1e-14 and abs(fprime(hi)) < 1e-14 and f(lo) != pytest.approx(f(hi))
    span = hi - lo
    slope = (f(hi) - f(lo)) / span
    # mean (Frankle): max f on the segment, at the hump f'(x) = 0; linear (Entezari): f'(x) = chord slope
    x_mean = newton(fprime, fsecond, 0.0)
    x_line = newton(lambda x: fprime(x) - slope, fsecond, 0.0)
    t_mean, t_line = (x_mean - lo) / span, (x_line - lo) / span
    mean = f(x_mean) - (f(lo) + f(hi)) / 2
    linear = f(x_line) - (f(lo) + (t_line * (f(hi) - f(lo))))
    assert t_mean != pytest.approx(t_line, abs=1e-3)  # the two definitions peak at different points
    t = np.union1d(np.linspace(0, 1, 11), [t_mean, t_line])
    path = C.interpolate(obj, a, b, t=t, progress=False)
    assert path.barrier_mean == pytest.approx(mean, abs=1e-12)
    assert path.barrier_linear == pytest.approx(linear, abs=1e-12)
    assert path.t_barrier == pytest.approx(t_line, abs=1e-15)
    assert linear > 0 and mean > 0 and linear != pytest.approx(mean, abs=1e-3)
    assert path.values["loss"][0] == pytest.approx(f(lo), abs=1e-14)
    assert path.values["loss"][-1] == pytest.approx(f(hi), abs=1e-14)
    assert path.length == pytest.approx(span, abs=1e-14)
    # a uniform grid only ever sees less than the true maximum, and converges to it
    coarse = C.interpolate(obj, a, b, num=25, progress=False)
    fine = C.interpolate(obj, a, b, num=401, progress=False)
    assert coarse.barrier_linear <= linear and linear - fine.barrier_linear < 1e-4 < linear - coarse.barrier_linear


def test_a_path_below_its_ends_has_no_barrier_and_a_nan_point_an_unknown_one():
    t = np.linspace(0, 1, 11)
    dip = (2 * t - 1) ** 2  # highest at the ends
    assert C.barriers(t, dip) == {"linear": 0.0, "mean": 0.0, "t_linear": 0.0, "t_mean": 0.0}
    hole = dip.copy()
    hole[5] = np.nan
    assert all(math.isnan(v) for v in C.barriers(t, hole).values())
    outside = np.r_[-0.5, t, 1.5]
    assert C.barriers(outside, np.r_[100.0, dip, 100.0])["linear"] == 0.0  # t outside [0, 1] is not the path
    with pytest.raises(ValueError, match="t = 0 and t = 1"):
        C.barriers(t[1:], dip[1:])


def test_extrapolation_adds_the_ends_and_keeps_them_exact(well):
    obj, lo, hi, _ = well
    a, b = torch.tensor([lo, 0.0], dtype=torch.float64), torch.tensor([hi, 0.0], dtype=torch.float64)
    path = C.interpolate(obj, a, b, t=np.linspace(-0.3, 1.3, 7), progress=False)
    assert 0.0 in path.t and 1.0 in path.t and len(path.t) == 9
    assert path.values["loss"][path.t == 1.0][0] == obj.loss(b).item()
    x = lo + path.t * (hi - lo)
    assert np.allclose(path.values["loss"], f(x), atol=1e-13)


def quadratic_bezier_length(P0, P1, P2):
    """The closed form of int_0^1 |B'(t)| dt for a quadratic Bezier curve."""
    A, B = P1 - P0, P2 - 2 * P1 + P0
    a, b, c = 4 * B @ B, 8 * A @ B, 4 * A @ A  # |B'(t)|^2 = a t^2 + b t + c

    def antiderivative(t):
        q = math.sqrt(a * t * t + b * t + c)
        return ((2 * a * t + b) * q / (4 * a)
                + (4 * a * c - b * b) / (8 * a ** 1.5) * math.log(abs(2 * math.sqrt(a) * q + 2 * a * t + b)))

    return antiderivative(1.0) - antiderivative(0.0)


def test_curve_geometry_against_closed_forms():
    g = torch.Generator().manual_seed(1)
    P = torch.randn(3, 7, generator=g, dtype=torch.float64)
    bezier, chain = C.Curve("bezier", P), C.Curve("polychain", P)
    assert torch.equal(bezier(0.0), P[0]) and torch.equal(bezier(1.0), P[2])
    assert torch.allclose(bezier(0.5), (P[0] + 2 * P[1] + P[2]) / 4, atol=1e-15)
    assert torch.allclose(chain(0.5), P[1], atol=1e-15) and torch.allclose(chain(0.25), (P[0] + P[1]) / 2)
    assert bezier.length() == pytest.approx(quadratic_bezier_length(*P.numpy()), rel=1e-12)
    assert chain.length() == pytest.approx(float((P[1] - P[0]).norm() + (P[2] - P[1]).norm()), rel=1e-15)
    cubic = C.Curve("bezier", torch.randn(4, 5, generator=g, dtype=torch.float64))
    fine = cubic(np.linspace(0, 1, 200001))
    assert cubic.length() == pytest.approx(float((fine[1:] - fine[:-1]).norm(dim=1).sum()), rel=1e-9)
    for c in (bezier, chain, cubic):  # derivative weights against central differences
        h, s = 1e-6, np.array([0.1, 0.4, 0.9])
        fd = (c.weights(s + h) - c.weights(s - h)) / (2 * h)
        assert torch.allclose(c.weights(s, derivative=True), fd, atol=1e-7)
        assert torch.allclose(c.weights(np.linspace(0, 1, 9)).sum(dim=1), torch.ones(9, dtype=torch.float64))


def test_a_curve_saves_and_loads(tmp_path):
    P = torch.randn(4, 6)
    buffers = ({"bn.running_mean": torch.ones(3)}, {"bn.running_mean": torch.zeros(3)})
    original = C.Curve("polychain", P, buffers, {"epochs": 3, "loss": [1.0, 0.5]})
    loaded = C.Curve.load(original.save(tmp_path / "c.pt"))
    assert loaded.kind == "polychain" and loaded.bends == 2 and torch.equal(loaded.points, P)
    assert torch.equal(loaded.buffers[1]["bn.running_mean"], torch.zeros(3)) and loaded.training == original.training
    torch.save({"weights": P}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a curve saved by landscape"):
        C.Curve.load(tmp_path / "other.pt")


def test_bad_curves_and_endpoints_are_refused(digits_mlp):
    obj = digits_mlp.objective()
    small = problems.digits_mlp(hidden=16, steps=0).model
    with pytest.raises(ValueError, match=r"0.weight has shape \(16, 64\) in model b"):
        C.curve(obj, digits_mlp.model, small)
    with pytest.raises(ValueError, match="kind must be one of"):
        C.curve(obj, digits_mlp.model, digits_mlp.model, kind="spline")
    with pytest.raises(ValueError, match="needs at least one bend"):
        C.curve(obj, digits_mlp.model, digits_mlp.model, bends=0)
    with pytest.raises(ValueError, match="shape \\[2410\\]"):
        C.interpolate(obj, obj.theta0, obj.theta0[:10])
    with pytest.raises(ValueError, match="no bends to train"):
        C.train_curve(obj, C.curve(obj, obj.theta0, obj.theta0, kind="line"))
    broken = copy.deepcopy(digits_mlp.model)
    with torch.no_grad():
        broken[2].bias[0] = math.nan
    with pytest.raises(ValueError, match="model b: 2.bias has non-finite values"):
        C.interpolate(obj, digits_mlp.model, broken)


@pytest.fixture(scope="module")
def two_mlps(digits_mlp):
    return digits_mlp, problems.digits_mlp(seed=1)


def test_the_ends_of_a_path_are_the_models_themselves(two_mlps):
    a, b = two_mlps
    obj = a.objective()
    path = C.interpolate(obj, a.model, b.model, num=5, metrics=a.metrics, progress=False)
    X, y = a.data
    with torch.no_grad():
        for model, i in ((a.model, 0), (b.model, -1)):
            out = model(X)
            assert path.values["loss"][i] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)
            assert path.values["accuracy"][i] == pytest.approx((out.argmax(1) == y).float().mean().item(), abs=1e-7)
    theta_a, theta_b = obj.space.flatten(dict(a.model.named_parameters())), obj.space.flatten(dict(b.model.named_parameters()))
    assert path.length == pytest.approx((theta_b - theta_a).norm().item(), rel=1e-6)
    middle = Objective(a.model, F.cross_entropy, a.data).loss((theta_a + theta_b) / 2).item()
    assert path.values["loss"][2] == pytest.approx(middle, rel=1e-6)
    assert path.strategy == "loop"  # the CPU's rule, recorded


def test_a_trained_bezier_curve_is_far_below_the_line_between_two_seeds(two_mlps):
    a, b = two_mlps
    obj = a.objective()
    line = C.interpolate(obj, a.model, b.model, progress=False)
    trained = C.train_curve(obj, C.curve(obj, a.model, b.model, "bezier"), epochs=30, batch_size=128,
                            progress=False)
    assert torch.equal(trained.points[0], obj.theta0)  # the ends never move
    assert trained.training["steps"] == 30 * 12 and trained.training["loss"][-1] < trained.training["loss"][0]
    bezier = C.evaluate_curve(obj, trained, progress=False)
    assert len(bezier.t) == 61
    assert line.barrier_linear > 0.1 and bezier.max_loss < 0.2 * line.max_loss
    assert bezier.barrier_linear < 0.1 * line.barrier_linear
    assert bezier.length > line.length  # a detour, not a shortcut
    chain = C.train_curve(obj, C.curve(obj, a.model, b.model, "polychain", bends=2), epochs=30, batch_size=128,
                          progress=False)
    assert C.evaluate_curve(obj, chain, progress=False).max_loss < 0.2 * line.max_loss


def test_the_plane_of_a_curve_holds_it(two_mlps):
    a, b = two_mlps
    obj = a.objective(dtype=torch.float64)
    c = C.curve(obj, a.model, b.model)
    c.points[1] += 0.3 * torch.randn(obj.space.n, dtype=torch.float64)
    d = directions.plane(obj, c.points[0], c.points[1], c.points[2])
    u, v = d.vectors
    assert torch.equal(d.center, c.points[0]) and torch.allclose(u, c.points[2] - c.points[0])
    assert abs(float(u @ v)) < 1e-10 * float(u @ u) and float(v.norm()) == pytest.approx(float(u.norm()), rel=1e-12)
    placed = directions.project(d, c(np.linspace(0, 1, 11)))
    assert placed.residuals.max() < 1e-10 * c.length()
    assert np.allclose(placed.coords[[0, -1]], [[0, 0], [1, 0]], atol=1e-12)
    with pytest.raises(ValueError, match="lies on the straight line"):
        directions.plane(obj, c.points[0], (c.points[0] + c.points[2]) / 2, c.points[2])


@pytest.fixture(scope="module")
def two_cnns(digits_cnn):
    return digits_cnn, problems.digits_cnn(seed=1)


def test_recomputed_batchnorm_statistics_equal_torchs_update_bn(two_cnns):
    a, b = two_cnns
    X, y = a.data[0][:1400], a.data[1][:1400]  # 7 equal batches, where update_bn's plain average is ours
    obj = Objective(a.model, F.cross_entropy, (X, y), batch_size=200, dtype=torch.float64)
    theta = 0.6 * obj.theta0 + 0.4 * obj.space.flatten(dict(b.model.named_parameters())).double()
    ours = C.batchnorm_statistics(obj, theta)
    reference = copy.deepcopy(a.model).double()
    torch.nn.utils.vector_to_parameters(theta, reference.parameters())
    torch.optim.swa_utils.update_bn([X[i:i + 200].double() for i in range(0, 1400, 200)], reference)
    state = reference.state_dict()
    assert set(ours) == {k for k in state if "running" in k or "num_batches" in k}
    for name in ours:
        if "running" in name:
            assert torch.allclose(ours[name], state[name], rtol=1e-10, atol=1e-12), name
    assert all(m.momentum == 0.1 and not m.training for m in a.model.modules() if isinstance(m, nn.BatchNorm2d))


def test_recomputing_batchnorm_changes_an_eval_mode_path_and_not_a_batch_statistics_one(two_cnns, two_mlps):
    """The issue's "train-mode BN network" read as a network whose BatchNorm layers keep running statistics
    (evaluated with them: eval mode), and its "eval-mode one" as a network whose BatchNorm never uses them
    (an objective in train mode, on batch statistics), and a network without BatchNorm."""
    a, b = two_cnns
    obj = a.objective()
    kept = C.interpolate(obj, a.model, b.model, num=5, progress=False)
    redone = C.interpolate(obj, a.model, b.model, num=5, recompute_bn=True, progress=False)
    assert (kept.statistics, redone.statistics) == ("interpolated", "recomputed")
    middle = slice(1, -1)
    assert np.all(np.abs(redone.values["loss"][middle] - kept.values["loss"][middle]) > 0.01 * kept.values["loss"][middle])
    assert redone.n_forward == 2 * kept.n_forward
    batch = obj.to(train=True)  # BatchNorm on batch statistics: the running ones are never used
    plain = C.interpolate(batch, a.model, b.model, num=5, progress=False)
    again = C.interpolate(batch, a.model, b.model, num=5, recompute_bn=True, progress=False)
    assert plain.statistics == again.statistics == "batch"
    assert np.array_equal(plain.values["loss"], again.values["loss"])
    # one batch holding all the data: recomputed statistics are the batch's, up to Bessel's n/(n-1) in the variance
    assert np.allclose(redone.values["loss"], plain.values["loss"], rtol=2e-3)
    m, m2 = two_mlps
    mlp = m.objective()
    no_bn = [C.interpolate(mlp, m.model, m2.model, num=5, recompute_bn=flag, progress=False) for flag in (False, True)]
    assert no_bn[0].statistics == "none" and np.array_equal(no_bn[0].values["loss"], no_bn[1].values["loss"])


def test_a_batchnorm_curve_trains_on_batch_statistics_and_is_evaluated_on_recomputed_ones(two_cnns):
    a, b = two_cnns
    obj = a.objective()
    before = {k: v.clone() for k, v in a.model.state_dict().items()}
    line = C.interpolate(obj, a.model, b.model, progress=False)
    start = C.curve(obj, a.model, b.model)
    trained = C.train_curve(obj, start, epochs=5, batch_size=256, progress=False)
    assert trained.training["statistics"] == "batch" and trained.training["steps"] == 5 * 6
    assert trained.buffers[0]["1.running_mean"].equal(dict(a.model.named_buffers())["1.running_mean"])
    curve = C.evaluate_curve(obj, trained, num=21, progress=False)
    assert curve.statistics == "recomputed" and line.statistics == "interpolated"
    assert curve.max_loss < 0.2 * line.max_loss
    assert all(torch.equal(v, before[k]) for k, v in a.model.state_dict().items())  # the model is left as it was
    assert not any(m.training for m in a.model.modules())
    again = C.train_curve(obj, start, epochs=5, batch_size=256, progress=False)
    assert torch.equal(again.points, trained.points)  # the same seed, the same curve


def test_interpolated_statistics_are_those_of_the_averaged_state_dict(two_cnns):
    a, b = two_cnns
    obj = a.objective()
    path = C.interpolate(obj, a.model, b.model, t=[0.25], progress=False)
    mixed = copy.deepcopy(a.model)
    A, B = a.model.state_dict(), b.model.state_dict()
    mixed.load_state_dict({k: torch.lerp(A[k], B[k], 0.25) if A[k].is_floating_point() else A[k] for k in A})
    X, y = a.data
    with torch.no_grad():
        assert path.values["loss"][1] == pytest.approx(F.cross_entropy(mixed(X), y).item(), rel=1e-5)


def test_recomputed_statistics_weight_uneven_batches_by_size(two_cnns):
    a, _ = two_cnns
    X, y = a.data  # 1437 examples in batches of 500: 500, 500, 437
    obj = Objective(a.model, F.cross_entropy, (X, y), batch_size=500, dtype=torch.float64)
    ours = C.batchnorm_statistics(obj, obj.theta0)
    reference = copy.deepcopy(a.model).double().train()  # BatchNorm on batch statistics, as ours
    seen = {}

    def keep(name):
        def hook(module, args):
            x = args[0].transpose(0, 1).reshape(args[0].shape[1], -1)
            total = seen.setdefault(name, [0, 0.0, 0.0])
            n = args[0].shape[0]
            total[0] += n
            total[1] = total[1] + n * x.mean(dim=1)
            total[2] = total[2] + n * x.var(dim=1, unbiased=True)
        return hook

    for name, m in reference.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats = False
            m.register_forward_pre_hook(keep(name))
    with torch.no_grad():
        for i in range(0, len(y), 500):
            reference(X[i:i + 500].double())
    for name, (n, mean, var) in seen.items():
        assert torch.allclose(ours[f"{name}.running_mean"], mean / n, rtol=1e-10, atol=1e-12)
        assert torch.allclose(ours[f"{name}.running_var"], var / n, rtol=1e-10, atol=1e-12)


def test_statistics_past_the_ends_from_vectors_and_parameter_subsets(two_cnns):
    a, b = two_cnns
    obj = a.objective()
    outside = C.interpolate(obj, a.model, b.model, t=[-0.5, 1.5], progress=False)
    assert np.isfinite(outside.values["loss"]).all()  # a's statistics held before 0, b's after 1
    shifted = copy.deepcopy(b.model)
    with torch.no_grad():
        for p_a, p_b, p in zip(a.model.parameters(), b.model.parameters(), shifted.parameters()):
            p.copy_(p_b + 0.5 * (p_b - p_a))  # theta at t = 1.5, with b's statistics
    X, y = a.data
    with torch.no_grad():
        assert outside.values["loss"][-1] == pytest.approx(F.cross_entropy(shifted(X), y).item(), rel=1e-5)
    vectors = C.interpolate(obj, obj.theta0, obj.space.flatten(dict(b.model.named_parameters())), num=3,
                            progress=False)
    assert vectors.statistics == "fixed"
    with pytest.raises(ValueError, match="both ends as models or both as flat vectors"):
        C.interpolate(obj, a.model, obj.theta0)
    last = a.objective(params="9.*")  # only the last layer is theta: b's other layers differ
    with pytest.raises(ValueError, match="model b differs from the objective's model in 0.weight, which is not part"):
        C.interpolate(last, a.model, b.model)
    with pytest.raises(ValueError, match="models a and b are identical"):
        C.curve(obj, a.model, a.model)


def test_the_plane_of_a_chain_with_two_bends(two_mlps):
    a, b = two_mlps
    obj = a.objective(dtype=torch.float64)
    chain = C.curve(obj, a.model, b.model, "polychain", bends=2)
    g = torch.Generator().manual_seed(2)
    w = torch.randn(obj.space.n, generator=g, dtype=torch.float64)
    chain.points[1] += 0.2 * w
    chain.points[2] += 0.1 * w  # both bends on one side of the line, in one plane
    d = directions.plane(obj, chain.points[0], chain.points[1:-1], chain.points[-1])
    placed = directions.project(d, chain.points)
    assert placed.residuals.max() < 1e-10 * chain.length()
    assert (placed.coords[1:3, 1] > 0).all() and placed.coords[1, 1] == pytest.approx(2 * placed.coords[2, 1])


def test_alignment_lowers_the_line_barrier_between_two_seeds(two_mlps):
    from landscape.paths.align import weight_matching

    a, b = two_mlps
    obj = a.objective()
    alignment = weight_matching(a.model, b.model, a.data[0][:4], seed=3)
    again = weight_matching(a.model, b.model, a.data[0][:4], seed=3)
    assert all(torch.equal(p, again.permutations[k]) for k, p in alignment.permutations.items())
    aligned = alignment.apply(b.model)
    before = C.interpolate(obj, a.model, b.model, progress=False)
    after = C.interpolate(obj, a.model, aligned, progress=False)
    assert after.values["loss"][-1] == pytest.approx(before.values["loss"][-1], rel=1e-5)  # the same network b
    assert after.barrier_linear < 0.2 * before.barrier_linear and after.length < before.length


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_path_of_a_transformer_takes_the_loop_and_equals_the_cpus():
    tiny = problems.load("tiny-gpt", steps=0, examples=16)  # attention: vmap cannot serve it on CUDA
    cpu = tiny.objective()
    far = cpu.theta0 + 0.1 * torch.randn(cpu.space.n, generator=torch.Generator().manual_seed(0))
    here = C.interpolate(cpu, cpu.theta0, far, num=5, progress=False)
    there = C.interpolate(tiny.objective(device="cuda"), cpu.theta0, far, num=5, progress=False)
    assert there.strategy == "loop" and there.to_dict()["strategy"] == "loop"
    np.testing.assert_allclose(there.values["loss"], here.values["loss"], rtol=1e-5)
