"""Scans against closed forms and direct evaluations: orientation, strategies, BatchNorm, NaN, the resumable store."""

import re
import shutil

import h5py
import numpy as np
import pytest
import torch

import landscape
from landscape.scans import directions as dirs
from landscape.scans import store as scan_store
from landscape.scans.grid import parse_axis
from landscape.scans.scan import scan
from tests.reference import make


def quadratic_reference(problem, center, D, axes):
    """1/2 (t - c)^T A (t - c) at t = center + sum_a x_a d_a, point by point in numpy float64."""
    A, c = problem.model.A.numpy(), problem.model.center.numpy()
    grids = np.meshgrid(*axes, indexing="ij")
    out = np.empty(grids[0].shape)
    for index in np.ndindex(out.shape):
        t = center.numpy() + sum(g[index] * d for g, d in zip(grids, D.numpy()))
        out[index] = 0.5 * (t - c) @ A @ (t - c)
    return out


@pytest.mark.parametrize("grid", [
    ["-2:1:7"],
    ["-1:2:7", "-0.5:0.25:4"],
    ["-1:1:5", "0:3:4", "-0.5:0.5:3"],
])
@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_quadratic_scans_equal_the_closed_form(grid, strategy):
    problem = landscape.load("quadratic", n=12, seed=3)
    obj = problem.objective()
    d = dirs.random(obj, k=len(grid), norm="none", include_1d=True, seed=1)
    result = scan(obj, d, grid, strategy=strategy, progress=False)
    for spec, a in zip(grid, result.axes):
        start, stop, num = (float(v) for v in spec.split(":"))
        assert np.allclose(a, np.linspace(start, stop, int(num)), rtol=0, atol=1e-15)
    expected = quadratic_reference(problem, obj.theta0, d.vectors, result.axes)
    assert result.values["loss"].shape == tuple(int(s.split(":")[2]) for s in grid)
    assert np.allclose(result.values["loss"], expected, rtol=1e-12, atol=0)
    assert result.done.all() and result.points_computed == expected.size


def test_orientation_values_i_j_is_at_x_i_y_j():
    """Along the first two unit axes from the minimum, L = 1/2 v^T A v with v = (x, y, 0, 0): A11 != A22, so a swap shows."""
    problem = landscape.load("quadratic", eigenvalues=[1.0, 2.0, 5.0, 9.0], seed=0)
    obj = problem.objective()
    A = problem.model.A.numpy()
    assert abs(A[0, 0] - A[1, 1]) > 0.5
    d = dirs.given(obj, torch.eye(4, dtype=torch.float64)[:2], center=problem.model.center)
    result = scan(obj, d, ["0:3:4", "0:1:3"], progress=False)
    assert result.values["loss"].shape == (4, 3)
    for i, x in enumerate(result.axes[0]):
        for j, y in enumerate(result.axes[1]):
            v = np.array([x, y, 0, 0])
            assert result.values["loss"][i, j] == pytest.approx(0.5 * v @ A @ v, rel=1e-13)


def test_parse_axis_is_exact_at_the_ends_and_the_centre():
    x = parse_axis("-1:1:51")
    assert x[25] == 0.0 and x[0] == -1.0 and x[-1] == 1.0 and len(x) == 51
    y = parse_axis((-0.3, 0.3, 7))
    assert y[3] == 0.0 and y[0] == -0.3 and y[-1] == 0.3
    assert parse_axis("0.5:0.5:1").tolist() == [0.5]
    assert np.allclose(parse_axis("1e-1:2.5e-1:4"), [0.1, 0.15, 0.2, 0.25])


@pytest.mark.parametrize("spec, message", [
    ("-1:1", "not start:stop:num"), ("a:b:3", "not start:stop:num"), ("-1:1:0", "at least 2"),
    ("0:1:1", "at least 2"), ("-1:1:2.5", "not start:stop:num"), ((0, 1, 2.5), "num must be an integer"),
    ("-inf:1:3", "not start:stop:num"), ((0, float("nan"), 3), "finite"), ("1-2:3:4", "not start:stop:num"),
])
def test_bad_axes_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_axis(spec)


def test_center_point_is_the_model_bit_for_bit(digits_mlp):
    obj = digits_mlp.objective()
    result = scan(obj, dirs.random(obj), ["-1:1:5", "-0.5:0.5:3"], metrics=digits_mlp.metrics, progress=False)
    X, y = digits_mlp.data
    with torch.no_grad():
        outputs = digits_mlp.model(X)
    assert result.values["loss"][2, 1] == torch.nn.functional.cross_entropy(outputs, y).double().item()
    assert result.center_values["accuracy"] == (outputs.argmax(-1) == y).float().mean().item()


@pytest.mark.parametrize("problem_name", ["digits-mlp", "digits-cnn"])
def test_loop_and_batched_agree_and_match_direct_evaluation(problem_name, request):
    problem = request.getfixturevalue(problem_name.replace("-", "_"))
    obj = problem.objective(batch_size=500)  # three batches, the last one uneven
    d = dirs.random(obj, seed=4)
    grid = ["-1:1:4", "-0.5:1:3"]
    loop = scan(obj, d, grid, metrics=problem.metrics, strategy="loop", chunk=5, progress=False)
    batched = scan(obj, d, grid, metrics=problem.metrics, strategy="batched", progress=False)
    for name in ("loss", "accuracy"):
        assert np.allclose(loop.values[name], batched.values[name], rtol=1e-5, atol=1e-6), name
    whole = problem.objective(dtype=torch.float64)  # one batch, float64: an independent evaluation
    for i, x in enumerate(loop.axes[0]):
        for j, y in enumerate(loop.axes[1]):
            theta = obj.theta0.double() + x * d.vectors[0].double() + y * d.vectors[1].double()
            assert loop.values["loss"][i, j] == pytest.approx(whole.loss(theta).item(), rel=2e-5)


def test_a_compiled_scan_agrees_with_float64_and_resumes_only_compiled(digits_cnn, tmp_path):
    obj = digits_cnn.objective(batch_size=500)  # three batches, the last one uneven
    d = dirs.random(obj, seed=4)
    grid = ["-1:1:3", "-0.5:1:2"]
    result = scan(obj, d, grid, metrics=digits_cnn.metrics, compiled=True, store=tmp_path / "c.h5", progress=False)
    assert result.compiled and result.strategy == "loop" and result.to_dict()["compiled"] is True
    whole = digits_cnn.objective(dtype=torch.float64)  # one batch, float64: an independent evaluation
    for i, x in enumerate(result.axes[0]):
        for j, y in enumerate(result.axes[1]):
            theta = obj.theta0.double() + x * d.vectors[0].double() + y * d.vectors[1].double()
            assert result.values["loss"][i, j] == pytest.approx(whole.loss(theta).item(), rel=2e-5)
    with pytest.raises(ValueError, match=r"different scan.*compiled"):
        scan(obj, d, grid, metrics=digits_cnn.metrics, store=tmp_path / "c.h5", progress=False)
    with pytest.raises(ValueError, match="compile applies to the loop strategy"):
        scan(obj, d, grid, strategy="batched", compiled=True, progress=False)


def test_a_compile_failure_is_not_called_the_models(monkeypatch, digits_mlp):
    def broken(model):
        def call(*args, **kwargs):
            raise RuntimeError("the backend could not compile this\nwith more lines")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    obj = digits_mlp.objective()
    with pytest.raises(ValueError, match=r"^torch.compile failed on this model \(RuntimeError: the backend could not "
                                         r"compile this\); evaluate without compiling$"):
        scan(obj, dirs.random(obj, 1, seed=1), "-1:1:3", compiled=True, progress=False)
    with pytest.raises(ValueError, match="strategy must be one of auto, loop, batched, got 'lop'"):
        scan(obj, dirs.random(obj, 1, seed=1), "-1:1:3", strategy="lop", compiled=True, progress=False)


def test_a_model_that_fails_is_named_as_such_when_compiled():
    from landscape.core.errors import UserCodeError

    class Fails(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x):
            raise KeyError("no such input")

    obj = landscape.Objective(Fails(), torch.nn.functional.cross_entropy, (torch.randn(4, 3), torch.zeros(4).long()))
    with pytest.raises(UserCodeError, match="the model failed on its data: KeyError"):
        scan(obj, torch.randn(1, obj.space.n), "-1:1:3", compiled=True, progress=False)


def test_batchnorm_running_statistics_are_untouched(digits_cnn):
    before = {k: v.clone() for k, v in digits_cnn.model.state_dict().items()}
    for train in (False, True):
        obj = digits_cnn.objective(train=train)
        scan(obj, dirs.random(obj, k=1), ["-1:1:3"], strategy="loop", progress=False)
        scan(obj, dirs.random(obj, k=1), ["-1:1:3"], strategy="batched", progress=False)
        assert obj.theta0.equal(digits_cnn.objective().theta0)
    after = digits_cnn.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert digits_cnn.model.training is False


def test_eval_and_train_mode_scans_differ_where_batchnorm_does():
    model, loss_fn, X, y = make("cnn-bn")
    results = {}
    for train in (False, True):
        obj = landscape.Objective(model, loss_fn, (X, y), train=train)
        results[train] = scan(obj, dirs.random(obj, k=1, seed=0), ["-1:1:3"], progress=False).values["loss"]
        copy = make("cnn-bn")[0].train(train)  # a fresh copy: train mode would update the running statistics
        with torch.no_grad():
            direct = loss_fn(copy(X), y).item()
        assert results[train][1] == pytest.approx(direct, rel=1e-12)
    assert not np.allclose(results[False], results[True])


class Tied(torch.nn.Module):
    """Tied weights, a frozen parameter, a buffer, and inputs as a tuple."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(4, 4, bias=False)
        self.out = torch.nn.Linear(4, 4, bias=False)
        self.out.weight = self.embed.weight
        self.frozen = torch.nn.Parameter(torch.linspace(-1, 1, 4), requires_grad=False)
        self.register_buffer("scale", torch.tensor(1.5))

    def forward(self, a, b):
        return self.out(torch.tanh(self.embed(a) + b * self.scale + self.frozen))


class DictInput(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, features, shift):
        return self.fc(features) + shift


def unusual_problems():
    g = torch.Generator().manual_seed(0)
    X, Xb = torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)
    y = torch.randint(0, 4, (10,), generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tied, mlp, bn, dict_model = Tied(), make("mlp")[0].float(), make("cnn-bn")[0], DictInput()
    F = torch.nn.functional
    return {
        "tied, frozen, tuple input": landscape.Objective(tied, F.cross_entropy, ((X, Xb), y), batch_size=4),
        "subset of parameters": landscape.Objective(mlp, F.cross_entropy, (X, y % 3), params="2.*"),
        "float64 objective of a float32 model": landscape.Objective(mlp, F.cross_entropy, (X, y % 3),
                                                                    dtype=torch.float64),
        "batchnorm in train mode": landscape.Objective(bn, F.cross_entropy, make("cnn-bn")[2:], train=True),
        "dict input": landscape.Objective(dict_model, F.cross_entropy, ({"features": X, "shift": Xb[:, :3]}, y % 3)),
    }


@pytest.mark.parametrize("case", list(unusual_problems()))
@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_scans_of_unusual_models_equal_the_objective(case, strategy):
    obj = unusual_problems()[case]
    before = {k: v.clone() for k, v in obj.model.state_dict().items()}
    d = dirs.random(obj, seed=1, include_1d=True)
    result = scan(obj, d, ["-1:1:3", "-1:0.5:2"], strategy=strategy, progress=False)
    tol = 1e-12 if obj.dtype == torch.float64 else 2e-6
    for i, x in enumerate(result.axes[0]):
        for j, y in enumerate(result.axes[1]):
            theta = obj.theta0 + x * d.vectors[0] + y * d.vectors[1]
            assert result.values["loss"][i, j] == pytest.approx(obj.loss(theta).item(), rel=tol), (i, j)
    assert all(torch.equal(v, obj.model.state_dict()[k]) for k, v in before.items())


def test_a_python_float_metric_keeps_float64():
    model, loss_fn, X, y = make("mlp")
    obj = landscape.Objective(model, loss_fn, (X, y), batch_size=10)
    metric = {"mean": lambda outputs, y: outputs.mean().item() + 1e-9}
    result = scan(obj, dirs.random(obj, k=1), ["-1:1:3"], metrics=metric, progress=False)
    for i, x in enumerate(result.axes[0]):
        theta = obj.theta0 + x * dirs.random(obj, k=1).vectors[0]
        assert result.values["mean"][i] == pytest.approx(obj.evaluate(theta, metric)["mean"], rel=1e-15, abs=1e-15)


def test_the_centre_of_random_and_hessian_directions_is_theirs():
    problem = landscape.load("quadratic", n=6)
    obj = problem.objective()
    minimum = problem.model.center
    for d in (dirs.random(obj, k=1, include_1d=True, center=minimum), dirs.hessian(obj, k=1, center=minimum)):
        result = scan(obj, d, ["-1:1:3"], progress=False)
        assert result.center_values["loss"] == pytest.approx(0.0, abs=1e-24)


def nan_problem():
    """With q the quadratic: L = log(2.1 - q), NaN where q > 2.1, and +inf where q > 4.4."""
    problem = landscape.load("quadratic", eigenvalues=[1.0, 1.0], seed=0)
    problem.loss_fn = lambda out, y: torch.where(out.mean() > 4.4, torch.inf, torch.log(2.1 - out.mean()))
    return problem


def test_nan_points_survive_into_the_store(tmp_path):
    problem = nan_problem()
    obj = problem.objective()
    d = dirs.given(obj, torch.eye(2, dtype=torch.float64), center=problem.model.center)
    result = scan(obj, d, ["-3:3:7", "-3:3:7"], store=tmp_path / "s.h5", progress=False)
    x, y = np.meshgrid(result.axes[0], result.axes[1], indexing="ij")
    q = 0.5 * (x ** 2 + y ** 2)  # A is the identity
    with np.errstate(invalid="ignore"):
        expected = np.where(q > 4.4, np.inf, np.log(2.1 - q))
    stored = landscape.load_scan(tmp_path / "s.h5")
    for values in (result.values["loss"], stored.values["loss"]):
        assert np.array_equal(np.isnan(values), np.isnan(expected)) and np.isnan(values).sum() == 12
        assert np.array_equal(np.isposinf(values), np.isposinf(expected)) and np.isposinf(values).sum() == 24
        finite = np.isfinite(expected)
        assert np.allclose(values[finite], expected[finite], rtol=1e-13)
    assert stored.done.all() and result.to_dict()["non_finite"] == 36
    assert result.minimum()[1] == pytest.approx(np.log(2.1 - 2.0))


class Interrupt(BaseException):
    """Like KeyboardInterrupt, not an Exception: the toolkit says which user code failed for those, not for this."""


def interrupting(after):
    """A metric (the mean output) that raises on its ``after``-th call, like a kill mid-scan."""
    calls = {"n": 0}

    def mean_output(outputs, y):
        calls["n"] += 1
        if calls["n"] == after:
            raise Interrupt
        return outputs.mean()

    return mean_output


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_an_interrupted_scan_resumes_to_identical_values(tmp_path, digits_mlp, strategy):
    obj = digits_mlp.objective(batch_size=600)
    d = dirs.random(obj, seed=2)
    grid = ["-1:1:7", "-1:1:5"]
    whole = scan(obj, d, grid, metrics={"mean_output": interrupting(-1)}, strategy=strategy, chunk=4,
                 store=tmp_path / "whole.h5", progress=False)
    path = tmp_path / "part.h5"
    # 6 calls (one per batch, twice: values, then time) evaluate the centre first; then loop: 3 batches x 4
    # points per chunk, so call 6 + 30 falls in the third chunk; batched: one call per batch, 6 + 8 likewise
    with pytest.raises(Interrupt):
        scan(obj, d, grid, metrics={"mean_output": interrupting(36 if strategy == "loop" else 14)},
             strategy=strategy, chunk=4, store=path, progress=False)
    partial = landscape.load_scan(path)
    assert partial.done.sum() == 8 and np.isnan(partial.values["loss"][~partial.done]).all()
    assert np.array_equal(partial.values["loss"][partial.done], whole.values["loss"][partial.done])
    resumed = scan(obj, d, grid, metrics={"mean_output": interrupting(-1)}, strategy=strategy, chunk=99,
                   store=path, progress=False)  # the stored chunk size wins
    assert resumed.points_computed == 35 - 8 and resumed.chunk == 4
    for name in ("loss", "mean_output"):
        assert np.array_equal(resumed.values[name], whole.values[name])
        assert np.array_equal(landscape.load_scan(path).values[name], whole.values[name])


def changed(what):
    """The reference setup of the refusal test, with one thing changed."""
    model, loss_fn, X, y = make("cnn-bn")
    settings = {"batch_size": 10}
    metrics = {"top": lambda outputs, y: outputs.max()}
    if what == "buffers":
        model.get_submodule("1").running_mean += 0.1
    elif what == "frozen parameters":
        model.get_submodule("4").weight.data += 0.1
        settings["params"] = ["0.*", "1.*"]
    elif what == "data":
        X = X + 0.01
    elif what == "batch size":
        settings["batch_size"] = 7
    elif what == "loss_fn":
        loss_fn = lambda outputs, y: torch.nn.functional.cross_entropy(outputs, y, label_smoothing=0.1)  # noqa: E731
    elif what == "a metric of the same name":
        metrics = {"top": lambda outputs, y: outputs.min()}
    elif what == "dtype":
        settings["dtype"] = torch.float32
    elif what == "train mode":
        settings["train"] = True
    if what != "frozen parameters":
        settings["params"] = ["0.*", "1.*"]
    return landscape.Objective(model, loss_fn, (X, y), **settings), metrics


@pytest.mark.parametrize("what, reason", [
    ("buffers", "buffers or the parameters outside theta differ"),
    ("frozen parameters", "buffers or the parameters outside theta differ"),
    ("data", "values at the centre differ"), ("batch size", "values at the centre differ"),
    ("loss_fn", "values at the centre differ"), ("a metric of the same name", "values at the centre differ"),
    ("dtype", "dtype: 'float64' in the file, 'float32' now"), ("train mode", "train: False in the file, True now"),
])
def test_a_resume_refuses_any_change_that_decides_the_values(tmp_path, what, reason):
    obj, metrics = changed(None)
    directions = torch.randn(1, obj.space.n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scan(obj, directions, "-1:1:3", metrics=metrics, store=tmp_path / "s.h5", progress=False)
    obj, metrics = changed(what)
    with pytest.raises(ValueError, match=f"different scan.*{re.escape(reason)}"):
        scan(obj, directions, "-1:1:3", metrics=metrics, store=tmp_path / "s.h5", progress=False)
    obj, metrics = changed(None)
    assert scan(obj, directions, "-1:1:3", metrics=metrics, store=tmp_path / "s.h5", progress=False).done.all()


def test_a_loaded_scan_keeps_its_centre_and_centre_values(tmp_path, digits_mlp):
    obj = digits_mlp.objective()
    d = dirs.random(obj)
    result = scan(obj, d, ["-1:1:3", "-1:1:4"], metrics=digits_mlp.metrics, store=tmp_path / "s.h5", progress=False)
    loaded = landscape.load_scan(tmp_path / "s.h5")
    assert loaded.center_values == result.center_values and loaded.center_values["accuracy"] == 1.0
    assert loaded.center_values["loss"] == pytest.approx(obj.loss().item(), rel=1e-6)  # off the grid: evaluated
    placed = dirs.project(loaded.directions, obj.theta0[None] + d.vectors[:1] * 0.5)
    assert np.allclose(placed.coords, [[0.5, 0.0]], atol=1e-6)


def test_a_different_scan_on_the_same_file_is_refused(tmp_path, digits_mlp):
    obj = digits_mlp.objective()
    path = tmp_path / "s.h5"
    scan(obj, dirs.random(obj, seed=0), ["-1:1:3", "-1:1:3"], store=path, progress=False)
    with pytest.raises(ValueError, match="different scan.*recipe.seed: 0 in the file, 1 now"):
        scan(obj, dirs.random(obj, seed=1), ["-1:1:3", "-1:1:3"], store=path, progress=False)
    with pytest.raises(ValueError, match="different scan.*\\(axis 2: -1:1:3 in the file, -1:1:5 now\\)"):
        scan(obj, dirs.random(obj, seed=0), ["-1:1:3", "-1:1:5"], store=path, progress=False)
    with pytest.raises(ValueError, match="different scan.*metrics"):
        scan(obj, dirs.random(obj, seed=0), ["-1:1:3", "-1:1:3"], metrics=digits_mlp.metrics, store=path,
             progress=False)
    finished = scan(obj, dirs.random(obj, seed=0), ["-1:1:3", "-1:1:3"], store=path, progress=False)
    assert finished.points_computed == 0 and finished.done.all()
    with h5py.File(path, "r") as f:
        assert f["values/loss"].shape == (3, 3) and f["directions"].shape == (2, obj.space.n)
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5 scan file"):
        scan(obj, dirs.random(obj), ["-1:1:3", "-1:1:3"], store=tmp_path / "junk.h5", progress=False)


def test_bad_arguments(digits_mlp):
    obj = digits_mlp.objective()
    d = dirs.random(obj)
    with pytest.raises(ValueError, match="2 directions"):
        scan(obj, d, ["-1:1:3"], progress=False)
    with pytest.raises(ValueError, match="strategy must be"):
        scan(obj, d, ["-1:1:3"] * 2, strategy="fast", progress=False)
    with pytest.raises(ValueError, match="1, 2 or 3 axes"):
        scan(obj, dirs.random(obj, k=4), ["-1:1:3"] * 4, progress=False)
    with pytest.raises(ValueError, match="'loss' is always measured"):
        scan(obj, d, ["-1:1:3"] * 2, metrics={"loss": lambda o, y: o.mean()}, progress=False)


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_a_loss_that_is_not_a_batch_mean_is_refused_before_any_file_is_made(tmp_path, strategy):
    model, _, X, y = make("mlp")
    obj = landscape.Objective(model, lambda outputs, y: torch.nn.functional.cross_entropy(outputs, y, reduction="none"),
                              (X, y))
    with pytest.raises(ValueError, match=r"loss(_fn)? must return a scalar \(the batch mean\), got \(23,\)"):
        scan(obj, dirs.random(obj, k=1), "-1:1:3", strategy=strategy, store=tmp_path / "s.h5", progress=False)
    assert not (tmp_path / "s.h5").exists()


def test_per_rank_files_of_another_scan_are_refused_before_a_file_is_made_and_leave_nothing_open(tmp_path):
    obj, metrics = changed(None)
    directions = torch.randn(1, obj.space.n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    whole = scan(obj, directions, "-1:1:5", chunk=2, store=tmp_path / "whole.h5", progress=False)
    with h5py.File(tmp_path / "whole.h5", "r+") as f:  # as rank 0 of an interrupted 2-process scan leaves it
        f["done"][2:] = False
    scan(obj, directions, "-1:1:3", metrics=metrics, store=tmp_path / "old.h5", progress=False)  # another scan
    before = (tmp_path / "old.h5").read_bytes()
    for name in ("new", "old"):  # leftovers of the 5-point scan beside a missing and an existing 3-point store
        shutil.copy(tmp_path / "whole.h5", scan_store.part_path(tmp_path / f"{name}.h5", 0, 2))
        with pytest.raises(ValueError, match=rf"{name}.part-0-of-2.h5 is a per-rank file of a different scan") as error:
            scan(obj, directions, "-1:1:3", metrics=metrics, store=tmp_path / f"{name}.h5", progress=False)
        assert "\n" not in str(error.value)
    assert not (tmp_path / "new.h5").exists()
    assert (tmp_path / "old.h5").read_bytes() == before
    open_files = [f.name.decode() for f in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE)]
    assert not [name for name in open_files if name.startswith(str(tmp_path))]
    resumed = scan(obj, directions, "-1:1:5", chunk=99, store=tmp_path / "new.h5", progress=False)  # the right scan
    assert resumed.points_computed == 3 and resumed.chunk == 2 and not scan_store.parts(tmp_path / "new.h5")
    assert np.array_equal(resumed.values["loss"], whole.values["loss"])


def test_a_grid_larger_than_the_machine_is_refused_before_any_file_is_made(tmp_path, monkeypatch, digits_mlp):
    from collections import namedtuple

    from landscape.core import memory
    from landscape.scans import scan as scan_module

    obj = digits_mlp.objective()
    d = dirs.random(obj, seed=0)
    grid, metrics = ["-1:1:5", "-1:1:3"], digits_mlp.metrics
    need = scan_module.footprint(15, 2, 3 * obj.space.n * 4, tmp_path / "s.h5")
    assert need == {"memory": 15 * (2 * 8 + 1), "disk": 15 * 17 + 3 * 2410 * 4}  # values + done; + directions, centre
    assert scan_module.footprint(15, 2, 100, None)["disk"] == 0
    monkeypatch.setattr(memory, "host_available", lambda: 200)
    with pytest.raises(ValueError, match=r"the grid's values need 255 B of memory .*more than the 200 B available; "
                                         r"use fewer points, or force=True \(--force\)"):
        scan(obj, d, grid, metrics=metrics, store=tmp_path / "s.h5", progress=False)
    assert not (tmp_path / "s.h5").exists()
    forced = scan(obj, d, grid, metrics=metrics, progress=False, force=True)
    assert forced.done.all()
    monkeypatch.setattr(memory, "host_available", lambda: None)  # a system that does not say: no refusal
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(scan_module.shutil, "disk_usage", lambda folder: Usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(ValueError, match=r"the scan's store needs 29.2 kB on disk, more than the 1.0 kB free in "):
        scan(obj, d, grid, metrics=metrics, store=tmp_path / "new" / "s.h5", progress=False)
    assert not (tmp_path / "new").exists()
    assert scan(obj, d, grid, metrics=metrics, progress=False).done.all()  # no store, no disk needed


def test_a_scan_says_its_footprint_and_duration_before_the_first_point(capsys, digits_mlp):
    obj = digits_mlp.objective()
    scan(obj, dirs.random(obj, seed=0), ["-1:1:5", "-1:1:3"], metrics=digits_mlp.metrics)
    first = capsys.readouterr().err.strip().splitlines()[0]
    assert re.fullmatch(r"scan: 15 points, 255 B in memory, under a second at the centre's \S+ ms a point", first)


def test_auto_times_both_strategies_and_keeps_the_faster(digits_mlp, tmp_path):
    from landscape.scans import points
    from landscape.scans.scan import MEASURE_FROM

    obj = digits_mlp.objective()
    d = dirs.random(obj, seed=5)
    thetas = obj.theta0 + torch.linspace(-1, 1, 6)[:, None] * d.vectors[0]
    chosen, last, measured = points.choose(obj, digits_mlp.metrics, thetas)
    assert measured["points"] == 6 and measured["loop"] > 0 and measured["batched"] > 0
    assert not last and chosen == max(("loop", "batched"), key=measured.get)  # an MLP: no channels_last
    loop = points.evaluator(obj, digits_mlp.metrics, "loop")(thetas)
    batched = points.evaluator(obj, digits_mlp.metrics, "batched")(thetas)
    assert measured["agreement"] == np.max(np.abs(batched - loop) / np.abs(loop)) < 1e-5  # float32 rounding
    attention = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.TransformerEncoderLayer(4, 1, 8, batch_first=True))
    other = landscape.Objective(attention, lambda out, y: out.pow(2).mean(), (torch.randn(2, 3, 4), torch.zeros(2)))
    assert points.choose(other, None, other.theta0.expand(4, -1)) == ("loop", False, None)  # attention: no vmap

    side = int(np.ceil(np.sqrt(MEASURE_FROM)))
    grid = [f"-1:1:{side}", f"-1:1:{side}"]
    measured_scan = scan(obj, d, grid, progress=False)
    m = measured_scan.strategy_measured
    assert m["points"] == 16 and measured_scan.strategy == max(("loop", "batched"), key=m.get)
    assert measured_scan.to_dict()["strategy_measured"] == m
    small = scan(obj, d, [f"-1:1:{side - 1}"] * 2, progress=False)  # under MEASURE_FROM: the device's rule
    assert small.strategy_measured is None and small.strategy == "loop"
    stored = scan(obj, d, grid, strategy="batched", store=tmp_path / "s.h5", progress=False)
    resumed = scan(obj, d, grid, store=tmp_path / "s.h5", progress=False)  # auto keeps the stored strategy
    assert resumed.strategy == "batched" and resumed.strategy_measured is None and resumed.points_computed == 0
    np.testing.assert_array_equal(resumed.values["loss"], stored.values["loss"])


def test_the_precision_of_convolutions_and_products_is_chosen_and_restored(digits_mlp):
    from landscape.scans import points

    switches = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)  # torch 2.9 on: fp32_precision
    before = [s.fp32_precision for s in switches]
    for kind, value in (("float32", "ieee"), ("tf32", "tf32")):
        with points.precision(kind):
            assert [s.fp32_precision for s in switches] == [value, value]
        assert [s.fp32_precision for s in switches] == before
    obj = digits_mlp.objective()
    d = dirs.random(obj, seed=6)
    with pytest.raises(ValueError, match="precision must be one of float32, tf32, got 'bf16'"):
        scan(obj, d, ["-1:1:3"] * 2, precision="bf16", progress=False)

    class Recording(torch.nn.Linear):
        seen: list = []  # a class attribute: the copies the strategies make share it

        def forward(self, x):
            Recording.seen.append(torch.backends.cudnn.conv.fp32_precision)
            return super().forward(x)

    X, y = digits_mlp.data
    small = landscape.Objective(Recording(64, 10), torch.nn.functional.cross_entropy, (X, y))
    for strategy in ("loop", "batched"):  # on the CPU torch's switches are left as they are, and it says float32
        Recording.seen.clear()
        result = scan(small, dirs.random(small, seed=6), ["-1:1:3"] * 2, precision="tf32", strategy=strategy,
                      progress=False)
        assert Recording.seen and set(Recording.seen) == {before[1]} and result.precision == "float32"
        assert result.to_dict()["precision"] == "float32"
    tf32 = scan(obj, d, ["-1:1:3"] * 2, precision="tf32", strategy="loop", progress=False)
    plain = scan(obj, d, ["-1:1:3"] * 2, strategy="loop", progress=False)
    np.testing.assert_array_equal(plain.values["loss"], tf32.values["loss"])  # the CPU has no TF32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_scan_in_float32_agrees_with_float64_and_tf32_is_said(digits_cnn):
    obj = digits_cnn.objective(device="cuda")
    d = dirs.random(obj, seed=7)
    exact = digits_cnn.objective(device="cuda", dtype=torch.float64)
    for strategy in ("loop", "batched"):
        full = scan(obj, d, ["-1:1:3"] * 2, strategy=strategy, progress=False)
        reference = scan(exact, d, ["-1:1:3"] * 2, strategy=strategy, progress=False)
        assert np.max(np.abs(full.values["loss"] / reference.values["loss"] - 1)) < 1e-5
        seen = []
        with torch.nn.modules.module.register_module_forward_hook(
                lambda m, i, o: seen.append(torch.backends.cudnn.conv.fp32_precision)):
            fast = scan(obj, d, ["-1:1:3"] * 2, strategy=strategy, precision="tf32", progress=False)
        assert fast.precision == "tf32" and set(seen) == {"tf32"}
    last = scan(obj, d, ["-1:1:3"] * 2, channels_last=True, progress=False)
    assert np.max(np.abs(last.values["loss"] / reference.values["loss"] - 1)) < 1e-5


class Flattens(torch.nn.Module):
    """A CNN that views its feature maps as if contiguous: it fails on channels_last inputs, as such code does."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).view(len(x), -1))


def test_channels_last_gives_the_same_values_and_auto_measures_it(tmp_path):
    from landscape.core.errors import UserCodeError
    from landscape.scans import points
    from landscape.scans.scan import MEASURE_FROM
    from landscape.vision import ResNet

    torch.manual_seed(0)
    model = ResNet(8, width=4).eval()
    X, y = torch.rand(24, 3, 12, 12), torch.randint(0, 10, (24,))
    obj = landscape.Objective(model, torch.nn.functional.cross_entropy, (X, y), batch_size=10)  # uneven last batch
    d = dirs.random(obj, seed=2)
    grid = ["-1:1:3", "-0.5:1:2"]
    result = scan(obj, d, grid, channels_last=True, store=tmp_path / "c.h5", progress=False)
    assert result.channels_last and result.strategy == "loop" and result.to_dict()["channels_last"] is True
    whole = landscape.Objective(ResNet(8, width=4), torch.nn.functional.cross_entropy, (X.double(), y),
                                dtype=torch.float64)
    whole.model.load_state_dict(model.state_dict())
    for i, a in enumerate(result.axes[0]):
        for j, b in enumerate(result.axes[1]):
            theta = obj.theta0.double() + a * d.vectors[0].double() + b * d.vectors[1].double()
            assert result.values["loss"][i, j] == pytest.approx(whole.loss(theta).item(), rel=2e-6)
    with pytest.raises(ValueError, match=r"different scan.*channels_last"):  # its kernels round differently
        scan(obj, d, grid, strategy="loop", store=tmp_path / "c.h5", progress=False)

    thetas = obj.theta0 + torch.linspace(-1, 1, 4)[:, None] * d.vectors[0]
    strategy, last, measured = points.choose(obj, None, thetas)
    labels = ("loop", "loop (channels_last)", "batched")
    assert measured["points"] == 4 and all(measured[label] > 0 for label in labels)
    assert (strategy, last) == {"loop": ("loop", False), "loop (channels_last)": ("loop", True),
                                "batched": ("batched", False)}[max(labels, key=measured.get)]
    values = [points.evaluator(obj, None, s, channels_last=c)(thetas) for s, c in
              (("loop", False), ("loop", True), ("batched", False))]
    assert measured["agreement"] == max(np.max(np.abs(v - values[0]) / values[0]) for v in values) < 1e-5
    assert "loop (channels_last)" not in points.choose(obj, None, thetas, channels_last=False)[2]
    side = int(np.ceil(np.sqrt(MEASURE_FROM)))
    measured_scan = scan(obj, d, [f"-1:1:{side}"] * 2, progress=False)
    fastest = max(labels, key=measured_scan.strategy_measured.get)
    assert measured_scan.channels_last == (fastest == "loop (channels_last)")
    big = [f"-1:1:{side}"] * 2
    stored = scan(obj, d, big, channels_last=True, store=tmp_path / "big.h5", progress=False)
    resumed = scan(obj, d, big, store=tmp_path / "big.h5", progress=False)  # auto keeps the stored layout
    assert resumed.channels_last and resumed.points_computed == 0
    np.testing.assert_array_equal(resumed.values["loss"], stored.values["loss"])
    with pytest.raises(ValueError, match=r"different scan.*channels_last"):  # asked otherwise: refused
        scan(obj, d, big, channels_last=False, store=tmp_path / "big.h5", progress=False)

    flat = landscape.Objective(Flattens(), torch.nn.functional.cross_entropy, (torch.rand(5, 3, 6, 6),
                                                                                 torch.randint(0, 3, (5,))))
    strategy, last, measured = points.choose(flat, None, flat.theta0.expand(3, -1))
    assert not last and "loop (channels_last)" not in measured  # left out, and said why
    assert measured["left out"]["loop (channels_last)"].startswith(
        "the model failed on its data laid out channels_last: view size is not compatible")
    assert set(measured) == {"points", "loop", "batched", "agreement", "left out"}
    with pytest.raises(UserCodeError, match="^the model failed on its data laid out channels_last: view size"):
        scan(flat, dirs.random(flat, 1, seed=0), "-1:1:3", channels_last=True, progress=False)
    with pytest.raises(ValueError, match="channels_last applies to the loop strategy"):
        scan(obj, d, grid, strategy="batched", channels_last=True, progress=False)
    mlp = landscape.Objective(torch.nn.Linear(4, 2), torch.nn.functional.cross_entropy,
                              (torch.randn(3, 4), torch.zeros(3).long()))
    with pytest.raises(ValueError, match="channels_last lays images out for 2D convolutions, and this model has none"):
        scan(mlp, dirs.random(mlp, 1, seed=0), "-1:1:3", channels_last=True, progress=False)
