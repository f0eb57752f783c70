"""Lanczos' basis options against numpy.linalg.eigh (dense matrices and a real Hessian), their memory
measured, and CUDA out-of-memory retries of the batched products simulated on the CPU."""

import copy
from functools import cache

import numpy as np
import pytest
import torch
from scipy.linalg import eigvalsh_tridiagonal

import landscape
import landscape.core.hvp as hvp_engine
import landscape.curvature.operators as operators
from landscape import Objective
from landscape.core import memory
from landscape.curvature.operators import MatrixOperator
from landscape.linalg import lanczos as L
from landscape.linalg import three_term
from tests.landscape.core.test_hvp import objective, vectors
from tests.landscape.curvature.test_spectrum import check, ends, symmetric
from tests.reference import dense_hessian, rel

STORED = ("device", "cpu", "float32")
# float32's stated accuracy (landscape/linalg/lanczos.py), relative to |lambda_max|
FLOAT32_EIGENVALUES, FLOAT32_RESIDUALS = 1e-8, 2e-7
A_INDEFINITE = symmetric(np.r_[np.linspace(-50, -45, 5), np.linspace(-1, 1, 110), np.linspace(45, 50, 5)])


@cache
def small_hessian() -> tuple[Objective, np.ndarray]:
    """digits-mlp 64-8-10 on 200 examples (n = 610) in float64, and its dense Hessian."""
    problem = landscape.load("digits-mlp", hidden=8, steps=100, examples=200)
    model = copy.deepcopy(problem.model).double()
    X, y = problem.data
    H = dense_hessian(model, problem.loss_fn, X.double(), y).numpy()
    return Objective(model, problem.loss_fn, (X.double(), y)), (H + H.T) / 2


def check_float32(result, A: np.ndarray, k: int, which: str):
    """Within float32's stated accuracy of eigh, with residuals as measured to within its floor."""
    scale = np.abs(np.linalg.eigvalsh(A)).max()
    assert np.all(np.abs(result.eigenvalues - ends(np.linalg.eigvalsh(A), k, which)) <= FLOAT32_EIGENVALUES * scale)
    V = result.eigenvectors.numpy()
    true_residuals = np.linalg.norm(V @ A - result.eigenvalues[:, None] * V, axis=1)
    assert np.all(true_residuals <= FLOAT32_RESIDUALS * scale)
    assert np.all(np.abs(result.residuals - true_residuals) <= FLOAT32_RESIDUALS * scale)
    assert np.allclose(np.linalg.norm(V, axis=1), 1.0)


# -- each option against eigh ----------------------------------------------------------------


@pytest.mark.parametrize("which", ["largest", "smallest", "both"])
@pytest.mark.parametrize("basis", STORED + ("none",))
def test_each_basis_matches_dense_eigh(basis, which):
    result = L.lanczos(MatrixOperator(A_INDEFINITE), k=3, which=which, tol=1e-10, basis=basis)
    assert result.settings["basis"] == basis
    if basis == "float32":
        check_float32(result, A_INDEFINITE, 3, which)
    else:
        check(result, A_INDEFINITE, 3, which, 1e-8)


@pytest.mark.parametrize("basis", STORED + ("none",))
def test_each_basis_matches_the_dense_hessian(basis):
    obj, H = small_hessian()
    result = landscape.eigenvalues(landscape.hessian(obj), k=4, which="both", tol=1e-10, basis=basis)
    assert result.settings["basis"] == basis
    if basis == "float32":
        check_float32(result, H, 4, "both")
    else:
        check(result, H, 4, "both", 1e-8)


def operator_named(name: str):
    return landscape.hessian(small_hessian()[0]) if name == "hessian" else MatrixOperator(A_INDEFINITE)


@pytest.mark.parametrize("name", ["matrix", "hessian"])
def test_cpu_is_device_bit_for_bit(name):
    device, cpu = (L.lanczos(operator_named(name), k=4, which="both", tol=1e-10, basis=b) for b in ("device", "cpu"))
    assert np.array_equal(device.eigenvalues, cpu.eigenvalues)
    assert torch.equal(device.eigenvectors, cpu.eigenvectors)
    assert np.array_equal(device.residuals, cpu.residuals) and device.n_matvecs == cpu.n_matvecs


@pytest.mark.parametrize("name", ["matrix", "hessian"])
def test_float32_is_within_its_stated_accuracy_of_device(name):
    device, single = (L.lanczos(operator_named(name), k=4, which="both", tol=1e-10, basis=b)
                      for b in ("device", "float32"))
    scale = np.abs(device.eigenvalues).max()
    assert np.abs(single.eigenvalues - device.eigenvalues).max() <= FLOAT32_EIGENVALUES * scale
    assert single.residuals.max() <= FLOAT32_RESIDUALS * scale
    assert not single.converged  # tol 1e-10 is below the float32 products' floor: said, not hidden
    loose = L.lanczos(operator_named(name), k=4, which="both", tol=1e-6, basis="float32")
    assert loose.converged


@pytest.mark.parametrize("tol", [1e-6, 1e-10])
@pytest.mark.parametrize("name", ["matrix", "hessian"])
def test_none_is_within_tol_and_its_second_pass_costs_what_it_says(name, tol):
    A = A_INDEFINITE if name == "matrix" else small_hessian()[1]
    values = L.lanczos(operator_named(name), k=3, which="both", tol=tol, basis="none", eigenvectors=False)
    pairs = L.lanczos(operator_named(name), k=3, which="both", tol=tol, basis="none")
    assert values.eigenvectors is None and values.settings["residuals"] == "estimated"
    assert pairs.settings["residuals"] == "measured" and pairs.settings["regenerated"]
    steps = values.n_matvecs  # eigenvalues only: one pass; with vectors: a second of steps - 1, then k residuals
    assert pairs.n_matvecs == 2 * steps - 1 + 6
    assert np.array_equal(values.eigenvalues, pairs.eigenvalues)
    scale = np.abs(np.linalg.eigvalsh(A)).max()
    assert values.converged and pairs.converged
    assert np.all(np.abs(pairs.eigenvalues - ends(np.linalg.eigvalsh(A), 3, "both")) <= tol * scale)
    if tol == 1e-10:
        check(pairs, A, 3, "both", 1e-8)


def test_ghost_test_leaves_exactly_the_true_distinct_eigenvalues():
    top = np.array([10.0, 9.0, 8.0, 7.0, 6.0])
    A = symmetric(np.r_[top, np.linspace(0, 1, 295)])
    start = torch.randn(300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    alphas, betas = [], []
    for _ in zip(range(201), three_term.krylov(MatrixOperator(A), start / start.norm(), alphas, betas)):
        pass
    raw = eigvalsh_tridiagonal(np.array(alphas), np.array(betas[:-1]))
    assert np.sum(raw > 1.5) > 3 * len(top)  # 200 steps without reorthogonalization: many ghost copies
    good, bounds, _, dropped = three_term.good_ritz(alphas, betas, tol=1e-10)
    assert np.allclose(np.sort(good[good > 1.5])[::-1], top, rtol=0, atol=1e-12 * 10)
    assert dropped >= np.sum(raw > 1.5) - len(top)
    result = L.lanczos(MatrixOperator(A), k=5, tol=1e-12, basis="none")  # through the public path
    assert np.allclose(result.eigenvalues, top, rtol=0, atol=1e-11) and result.converged


@pytest.mark.parametrize("which", ["largest", "both"])
def test_none_finds_each_distinct_eigenvalue_once_and_says_when_that_is_fewer_than_asked(which):
    A = symmetric(np.r_[3.0, 2.0, -1.0, np.zeros(37)])  # four distinct eigenvalues: the recurrence breaks down
    enough = L.lanczos(MatrixOperator(A), k=3, which="largest", basis="none")
    assert enough.converged and np.allclose(enough.eigenvalues, [3, 2, 0], atol=1e-12)
    fewer = L.lanczos(MatrixOperator(A), k=5, which=which, basis="none")
    assert not fewer.converged and np.allclose(fewer.eigenvalues, [3, 2, 0, -1], atol=1e-12)
    assert np.all(fewer.residuals <= 1e-12)


# -- memory ---------------------------------------------------------------------------------


class Diagonal:
    def __init__(self, d: np.ndarray):
        self.d = torch.as_tensor(d)
        self.shape, self.dtype, self.device = (len(d), len(d)), self.d.dtype, self.d.device

    def __matmul__(self, V):
        return V * self.d


def peak_bytes(basis: str, steps: int, n: int = 20_000, k: int = 2) -> int:
    """The most bytes of tensors alive at once while Lanczos runs ``steps`` steps on an [n, n] operator."""
    op = Diagonal(np.random.default_rng(0).uniform(0, 1, n))  # no gap at the top: tol 1e-14 is never met
    with memory.LiveTensors() as live:
        result = L.lanczos(op, k=k, tol=1e-14, max_steps=steps, basis=basis,
                           basis_size=None if basis == "none" else steps)
        assert not result.converged and result.settings["basis"] == basis
    return live.peak


def test_live_tensors_counts_storages_once_and_sees_them_freed():
    with memory.LiveTensors() as live:
        a = torch.zeros(1000, dtype=torch.float64)
        views = (a[10:], a.view(10, 100))
        b = a * 2
        assert live.bytes == 16000 and live.peaks == {"cpu": 16000}
        del a, views, b
        assert live.bytes == 0
    assert live.peak == 16000


def test_none_keeps_the_same_memory_whatever_the_number_of_steps():
    k, vector = 2, 20_000 * 8
    few, many = peak_bytes("none", 10), peak_bytes("none", 40)
    # start, q_{j-1}, q_j, H q_j and the k Ritz vectors of the second pass, transients included;
    # T and the Ritz coefficients add O(steps k) numbers, not vectors of n
    assert (k + 4) * vector <= few <= many <= (k + 4) * vector + 40 * (k + 2) * 8 + 1024
    device_few, device_many = peak_bytes("device", 10), peak_bytes("device", 40)
    assert 2 * 11 * vector <= device_few and 2 * 41 * vector <= device_many  # the basis and its products grow
    single = peak_bytes("float32", 40)
    assert 41 * vector <= single <= 41 * vector + 10 * vector  # half of device's, and scratch of ~2 vectors


def test_auto_takes_the_first_option_that_fits(monkeypatch):
    n, m = 1000, 40
    rows = (m + 1) * n * 8
    budgets = {}
    monkeypatch.setattr(memory, "budget", lambda device, max_memory=None: budgets[torch.device(device).type])
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for device_budget, host_budget, expected in [
            (2 * rows, 0, ("device", cuda, torch.float64, True)),
            (rows, 0, ("device", cuda, torch.float64, False)),
            (rows - 1, 2 * rows, ("cpu", cpu, torch.float64, True)),
            (rows - 1, rows, ("cpu", cpu, torch.float64, False)),
            (rows - 1, rows - 1, ("none", None, None, False))]:
        budgets.update(cuda=device_budget, cpu=host_budget)
        assert L.plan_basis("auto", cuda, n, m, None) == expected
    budgets.update(cuda=rows, cpu=0)
    assert L.plan_basis("float32", cuda, n, m, None) == ("float32", cuda, torch.float32, True)
    budgets.update(cuda=rows // 2, cpu=rows)
    assert L.plan_basis("float32", cuda, n, m, None) == ("float32", cuda, torch.float32, False)
    budgets.update(cuda=rows // 2 - 1, cpu=rows)
    assert L.plan_basis("float32", cuda, n, m, None) == ("float32", cpu, torch.float32, True)
    budgets.update(cpu=rows)  # on a CPU operator the host is the device: no "cpu" step
    assert L.plan_basis("auto", cpu, n, m, rows)[:2] == ("device", cpu)
    budgets.update(cpu=rows - 1)
    assert L.plan_basis("auto", cpu, n, m, rows - 1)[0] == "none"


def test_products_not_kept_cost_k_more_and_change_nothing_else():
    n, m = A_INDEFINITE.shape[0], 40
    kept = L.lanczos(MatrixOperator(A_INDEFINITE), k=3, which="both", tol=1e-10, max_memory=2 * (m + 1) * n * 8)
    recomputed = L.lanczos(MatrixOperator(A_INDEFINITE), k=3, which="both", tol=1e-10, max_memory=(m + 1) * n * 8)
    tiny = L.lanczos(MatrixOperator(A_INDEFINITE), k=3, which="both", tol=1e-10, max_memory=1)
    assert kept.settings["products"] == "kept" and recomputed.settings["products"] == "recomputed"
    assert kept.settings["basis"] == recomputed.settings["basis"] == "device" and tiny.settings["basis"] == "none"
    assert recomputed.n_matvecs == kept.n_matvecs + 6
    assert np.array_equal(kept.eigenvalues, recomputed.eigenvalues)
    assert torch.equal(kept.eigenvectors, recomputed.eigenvectors)
    assert np.allclose(kept.residuals, recomputed.residuals, rtol=1e-3, atol=1e-13 * 50)
    check(recomputed, A_INDEFINITE, 3, "both", 1e-8)
    check(tiny, A_INDEFINITE, 3, "both", 1e-8)


def test_unknown_basis_is_refused():
    with pytest.raises(ValueError, match="basis must be one of"):
        landscape.eigenvalues(MatrixOperator(A_INDEFINITE), basis="disk")


# -- out of memory: halve the chunk and retry ----------------------------------------------


def test_retry_halving_halves_down_to_one_then_names_the_chunk_and_budget():
    tried = []

    def compute(size, limit=5):
        tried.append(size)
        if size > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return size

    assert memory.retry_halving(compute, 40, budget=1234) == 5 and tried == [40, 20, 10, 5]
    tried.clear()
    with pytest.raises(torch.OutOfMemoryError, match=r"chunk of 1 \(halved from 12; memory budget 1,234 bytes\)"):
        memory.retry_halving(lambda size: compute(size, limit=0), 12, budget=1234)
    assert tried == [12, 6, 3, 1]


def failing(real, limit: int, tried: list):
    """``real`` that runs out of memory on chunks of more than ``limit`` (the chunk is the last positional
    argument: the vectors of ``_double_backward`` and of a vmapped product, the labels of the Fisher's examples)."""

    def call(*args, **kwargs):
        size = len(args[-1])
        tried.append(size)
        if size > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    return call


def failing_vmap(real, limit, tried):
    return lambda fn, *args, **kwargs: failing(real(fn, *args, **kwargs), limit, tried)


def distinct(sizes: list) -> list:
    return list(dict.fromkeys(sizes))


@pytest.mark.parametrize("mode", hvp_engine.MODES)
def test_hvp_out_of_memory_halves_the_chunk_and_matches_the_unfailed_run(mode, monkeypatch):
    obj = objective("cnn-bn", "batch_size", max_memory=10**12)  # every chunk holds all 16 vectors
    V = vectors(obj.space.n, 16)
    unfailed = obj.engine.products(V, obj.theta0, mode, vectorize=True)
    with monkeypatch.context() as patch:  # the same computation started at the chunk that fits
        patch.setattr(memory, "chunk_size", lambda k, item, limit: min(k, 2))
        at_two = obj.engine.products(V, obj.theta0, mode, vectorize=True)
    tried, original = [], hvp_engine._double_backward
    if mode == "fwd-rev":
        monkeypatch.setattr(hvp_engine, "vmap", failing_vmap(hvp_engine.vmap, 3, tried))
    else:
        monkeypatch.setattr(hvp_engine, "_double_backward", failing(original, 3, tried))
    retried = obj.engine.products(V, obj.theta0, mode, vectorize=True)
    assert distinct(tried) == [16, 8, 4, 2]
    assert torch.equal(retried, at_two)
    assert rel(retried, unfailed) < 1e-14  # vmapped chunks of another size round differently, at 1e-16
    if mode != "fwd-rev":  # (fwd-rev computes a chunk of one without vmap)
        tried.clear()
        monkeypatch.setattr(hvp_engine, "_double_backward", failing(original, 0, tried))
        with pytest.raises(torch.OutOfMemoryError, match="chunk of 1 .halved from 16; memory budget 1,000,000,000,000"):
            obj.engine.products(V, obj.theta0, mode, vectorize=True)
        assert distinct(tried) == [16, 8, 4, 2, 1]


@pytest.mark.parametrize("kind", ["ggn", "fisher"])
def test_operator_out_of_memory_halves_the_chunk_and_matches_the_unfailed_run(kind, monkeypatch):
    obj = objective("mlp", "batch_size" if kind == "ggn" else "full", max_memory=10**12)
    op = getattr(operators, kind)(obj)
    V = vectors(obj.space.n, 16)
    unfailed = op @ V
    with monkeypatch.context() as patch:
        patch.setattr(memory, "chunk_size", lambda k, item, limit: min(k, 2))
        at_two = op @ V
    tried = []
    monkeypatch.setattr(operators, "vmap", failing_vmap(operators.vmap, 3, tried))
    retried = op @ V
    # ggn: chunks of the 16 vectors; fisher: chunks of the 23 examples, the last of them 1 (23 = 11 x 2 + 1)
    assert distinct(tried) == ([16, 8, 4, 2] if kind == "ggn" else [23, 11, 5, 2, 1])
    assert torch.equal(retried, at_two)
    assert rel(retried, unfailed) < 1e-14


def test_saved_bytes_counts_the_span_a_view_covers_not_its_whole_storage():
    data = torch.randn(10_000, 64)
    w = torch.randn(64, requires_grad=True)
    # (X w).sum() saves X for w's gradient: a slice of 100 rows is 100 * 64 floats
    assert memory.saved_bytes(lambda: (data[:100] @ w).sum(), exclude=(w,)) == 100 * 64 * 4
    assert memory.saved_bytes(lambda: (data @ w).sum() + (data @ w).sum(), exclude=(w,)) == 10_000 * 64 * 4  # once
    # two views covering one storage never count more than the storage
    x = torch.randn(50, 8)
    assert memory.saved_bytes(lambda: ((x[:40] @ w[:8]).sum() + (x[10:] @ w[:8]).sum()), exclude=(w,)) == 50 * 8 * 4


def test_graph_bytes_of_a_sliced_batch_equal_those_of_the_batch_alone():
    from torch import nn
    from torch.nn import functional as F

    from landscape import Objective

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(8192, 64, generator=g), torch.randint(0, 10, (8192,), generator=g)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    sliced = Objective(model, F.cross_entropy, (X, y), batch_size=256).graph_bytes(256)
    alone = Objective(model, F.cross_entropy, (X[:256].clone(), y[:256].clone())).graph_bytes(256)
    assert sliced == alone
