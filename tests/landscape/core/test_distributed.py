"""Two processes on the CPU (gloo) against one: the data-parallel objective, spectra, traces, dynamics, sharded scans.

One ``torch.multiprocessing.spawn`` of 2 ranks (a ``file://`` rendezvous in tmp, no port) runs
every distributed check and saves what each rank found; the tests compare that with the
single-process results computed here. Spawning (4.3 s on the 2-core dev machine) starts faster
than a torchrun subprocess (5.4 s), which only the CLI test uses. 301 examples split 151/150,
in batches of 40, so shard sizes and batches are uneven.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

import landscape
from dynamics import linearized
from dynamics.descent import gradient_descent
from dynamics.edge_of_stability import SharpnessTracker
from landscape import cli
from landscape.cli import common
from landscape.core import data_parallel, distributed, memory
from landscape.core.hvp import MODES
from landscape.paths import curves
from landscape.problems import accuracy
from landscape.scans import directions as dirs
from landscape.scans import store as scan_store
from tests.landscape.scans.test_scan import Interrupt, interrupting
from tests.reference import make

EXAMPLES, BATCH = 301, 40
GRID = ["-1:1:9", "-0.5:1:6"]  # 54 points, not square
CHUNK = 5  # 11 chunks, the last one short: 6 for rank 0, 5 for rank 1
ROOT = Path(__file__).resolve().parents[3]
SMALL = ["-1:1:7", "-1:1:5"]  # the interrupted scans: 35 points, chunks of 4


def objective() -> landscape.Objective:
    model, loss_fn, X, y = make("cnn-bn", n_examples=EXAMPLES)  # BatchNorm in eval mode: buffers travel too
    return landscape.Objective(model, loss_fn, (X, y), batch_size=BATCH)


def vectors(n: int) -> torch.Tensor:
    return torch.randn(3, n, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


def computations(obj, budget=None) -> dict:
    """Everything compared between the data-parallel and the single-process objective."""
    V = vectors(obj.space.n)
    theta = obj.theta0 + 0.1 * V[0]
    out = {"loss": obj.loss(theta), "grad": obj.grad(theta), "loss_many": obj.loss_many(theta + V),
           "evaluate": torch.tensor(list(obj.evaluate(theta, metrics={"accuracy": accuracy}).values()))}
    for mode in MODES:
        out[f"hvp {mode}"] = obj.hvp(V[0], theta, mode=mode)
        out[f"batched hvp {mode}"] = obj.hvp(V, theta, mode=mode)
    out["ggn"] = landscape.ggn(obj, theta) @ V
    out["fisher"] = landscape.fisher(obj, theta) @ V
    H = landscape.hessian(obj)
    top = landscape.eigenvalues(H, k=3, max_memory=budget)
    out["eigenvalues"], out["eigenvectors"] = torch.from_numpy(top.eigenvalues.copy()), top.eigenvectors
    out["hutchinson"] = torch.tensor(landscape.trace(H, method="hutchinson", n_matvecs=20, seed=3).estimate)
    out["hutch++"] = torch.tensor(landscape.trace(H, n_matvecs=30, seed=3).estimate)
    run = gradient_descent(obj, lr=0.5, steps=4, tracker=SharpnessTracker(obj, every=2, tol=1e-8), progress=False)
    out["gd theta"], out["gd sharpness"] = run.theta, torch.from_numpy(run.sharpness.sharpness)
    return out


def worker(rank: int, rendezvous: str, out: str) -> None:
    """Rank ``rank`` of 2: every distributed check, its findings saved to ``out/rank{rank}.pt``."""
    torch.set_num_threads(1)
    out = Path(out)
    world = distributed.init(init_method=f"file://{rendezvous}", rank=rank, size=2, timeout=90)  # no endless hang
    found, ok = {"world": world.to_dict()}, False
    try:
        full = objective()
        obj = data_parallel.data_parallel(full, world)
        found["n_examples"] = obj.n_examples
        found["float32 stays data-parallel"] = isinstance(obj.to(torch.float32), data_parallel.DataParallelObjective)
        found["auto mode"] = obj.resolve_mode()
        values = computations(obj, budget=world.budget())
        found["values"] = values
        found["total_examples"] = obj.total_examples
        found["same bits on both ranks"] = {name: world.identical(v) for name, v in values.items()}
        found["a difference is seen"] = not world.identical(torch.tensor(1.0 + 2.0**-52 * rank, dtype=torch.float64))
        model, loss_fn, X, y = make("cnn-bn", n_examples=EXAMPLES)
        batches = [(X[i:i + BATCH], y[i:i + BATCH]) for i in range(0, EXAMPLES, BATCH)]  # 8, the last of 21
        strided = data_parallel.DataParallelObjective(model, loss_fn, batches, world=world)  # batches 0, 2, 4, 6 or 1, 3, 5, 7
        V = vectors(strided.space.n)
        found["iterable"] = {"loss": strided.loss(), "grad": strided.grad(), "batched hvp": strided.hvp(V),
                             "n_examples": strided.n_examples}

        d = dirs.random(full, k=2, seed=5)
        path = curves.curve(full, full.theta0, full.theta0 + 0.1 * vectors(full.space.n)[0])
        refusals = {"landscape.scan": lambda: landscape.scan(obj, d, GRID, progress=False),
                    "linearized.linearize": lambda: linearized.linearize(obj),
                    "linearized.compare": lambda: linearized.compare(obj, steps=1),
                    "curves.train_curve": lambda: curves.train_curve(obj, path, progress=False),
                    "curves.batchnorm_statistics": lambda: curves.batchnorm_statistics(obj, obj.theta0),
                    "curves.evaluate_curve": lambda: curves.evaluate_curve(obj, path, progress=False)}
        found["refusals"] = {}
        for name, call in refusals.items():  # each would see only this rank's shard
            try:
                call()
            except ValueError as error:
                found["refusals"][name] = str(error)
        args = cli.parser().parse_args(["spectrum", "--problem", "digits-mlp", "--problem-arg", "steps=0",
                                        "--problem-arg", "examples=301", "--out", str(out / "unused")])
        args.world = world
        sharded = common.objective(args, common.load_problem(args.problem, args.problem_arg), data_parallel=True)
        found["cli objective"] = {"type": type(sharded).__name__, "n_examples": sharded.n_examples,
                                  "on the device": sum(size for _, _, size in sharded.batches())}
        for strategy in ("loop", "batched"):
            result = landscape.scan(full, d, GRID, store=out / f"{strategy}.h5", strategy=strategy, chunk=CHUNK,
                                    world=world, progress=False)
            found[f"scan {strategy}"] = {"computed": result.points_computed, "done": bool(result.done.all()),
                                         "loss": result.values["loss"]}
        found["scan in memory"] = landscape.scan(full, d, GRID, chunk=CHUNK, world=world, progress=False).values

        # interrupted on both ranks: 8 calls for the centre (one per batch), then 8 batches x 4 points per
        # chunk: call 8 + 32 + 9 falls in each rank's second chunk (rank 0 has 5 chunks of the 9, rank 1 has 4)
        for name in ("resumed", "left"):
            try:
                landscape.scan(full, d, SMALL, metrics={"mean_output": interrupting(49)}, store=out / f"{name}.h5",
                               chunk=4, world=world, progress=False)
            except Interrupt:
                found[f"{name} interrupted"] = True
        world.barrier()
        found["parts after the interruption"] = sorted(f.name for f in scan_store.parts(out / "resumed.h5"))
        found["done after the interruption"] = int(scan_store.progress(out / "resumed.h5")[1].sum())
        result = landscape.scan(full, d, SMALL, metrics={"mean_output": interrupting(-1)}, store=out / "resumed.h5",
                                chunk=99, world=world, progress=False)  # the stored chunk size wins
        found["resume"] = {"computed": result.points_computed, "chunk": result.chunk}

        # ranks that do not hold the same data refuse before any work
        model, loss_fn, X, y = make("cnn-bn", n_examples=EXAMPLES)
        other = landscape.Objective(model, loss_fn, (X + 0.01 * rank, y), batch_size=BATCH)
        try:
            landscape.scan(other, d, GRID, store=out / "refused.h5", world=world, progress=False)
        except ValueError as error:
            found["refusal"] = str(error)

        # free memory that differs between the ranks: one plan (a Lanczos basis without its products: k more)
        rows = 41 * full.space.n * 8  # the basis of 40 + 1 float64 vectors
        free = {0: 4 * rows, 1: 3 * rows // 2}[rank]
        real = memory.budget
        memory.budget = lambda device, max_memory=None: free if max_memory is None else memory.parse_bytes(max_memory)
        try:
            fresh = data_parallel.data_parallel(objective(), world)
            top = landscape.eigenvalues(landscape.hessian(fresh), k=2, tol=1e-10)
            found["budgets"] = {"device": fresh.memory_budget(), "host": fresh.host_budget(), "rows": rows}
        finally:
            memory.budget = real
        found["budgets"]["cached"] = fresh.memory_budget()  # found once: no collective, no new measurement
        found["plan"] = {"settings": top.settings, "n_matvecs": top.n_matvecs, "eigenvalues": top.eigenvalues,
                         "same vectors": world.identical(top.eigenvectors)}
        ok = True
    finally:
        torch.save(found, out / f"rank{rank}.pt")
        distributed.shutdown(synchronize=ok)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What the two ranks found, and their output folder."""
    out = tmp_path_factory.mktemp("distributed")
    mp.spawn(worker, args=(str(out / "rendezvous"), str(out)), nprocs=2)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)], out


@pytest.fixture(scope="module")
def single():
    return computations(objective())


def test_world_and_uneven_shards(ranks):
    found, _ = ranks
    assert [f["world"]["rank"] for f in found] == [0, 1]
    assert all(f["world"]["size"] == 2 and f["world"]["backend"] == "gloo" for f in found)
    assert [f["n_examples"] for f in found] == [151, 150]
    assert all(f["total_examples"] == EXAMPLES for f in found)
    assert all(f["float32 stays data-parallel"] for f in found)
    assert found[0]["auto mode"] == found[1]["auto mode"] == "cached"
    assert all(f["a difference is seen"] for f in found)


@pytest.mark.parametrize("name", ["loss", "grad", "loss_many", "evaluate", "ggn", "fisher"]
                         + [f"hvp {m}" for m in MODES] + [f"batched hvp {m}" for m in MODES])
def test_data_parallel_evaluations_equal_one_process(ranks, single, name):
    found, _ = ranks
    for f in found:
        got, want = f["values"][name], single[name]
        assert got.shape == want.shape
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-14), (got - want).abs().max()
        assert f["same bits on both ranks"][name]


def test_code_that_reads_the_batches_itself_refuses_a_data_parallel_objective(ranks):
    found, _ = ranks
    names = ["landscape.scan", "linearized.linearize", "linearized.compare", "curves.train_curve",
             "curves.batchnorm_statistics", "curves.evaluate_curve"]
    for rank, f in enumerate(found):
        assert f["refusals"] == {name: f"{name} needs all the data in one process; this data-parallel objective "
                                       f"holds rank {rank}'s shard of 2" for name in names}


def test_ranks_with_different_free_memory_make_one_lanczos_plan(ranks):
    found, _ = ranks
    rows = found[0]["budgets"]["rows"]
    least = 3 * rows // 2  # rank 1's: the basis fits, its products beside it do not
    alone = landscape.eigenvalues(landscape.hessian(objective()), k=2, tol=1e-10, max_memory=least)
    assert (alone.settings["basis"], alone.settings["products"]) == ("device", "recomputed")
    for f in found:
        assert f["budgets"] == {"device": least, "host": least, "cached": least, "rows": rows}
        plan = {key: value for key, value in f["plan"]["settings"].items() if key != "operator"}  # its HVP mode differs
        assert plan == {key: value for key, value in alone.settings.items() if key != "operator"}
        assert f["plan"]["n_matvecs"] == alone.n_matvecs
        assert np.allclose(f["plan"]["eigenvalues"], alone.eigenvalues, rtol=1e-10, atol=0)
        assert f["plan"]["same vectors"]


def test_the_cli_moves_only_each_rank_s_shard_to_its_device(ranks):
    found, _ = ranks
    assert [f["cli objective"] for f in found] == [
        {"type": "DataParallelObjective", "n_examples": n, "on the device": n} for n in (151, 150)]


def test_every_other_batch_of_an_iterable(ranks):
    found, _ = ranks
    obj = objective()
    V = vectors(obj.space.n)
    assert [f["iterable"]["n_examples"] for f in found] == [160, 141]
    for f in found:
        got = f["iterable"]
        assert torch.allclose(got["loss"], obj.loss(), rtol=1e-13, atol=0)
        assert torch.allclose(got["grad"], obj.grad(), rtol=1e-12, atol=1e-15)
        assert torch.allclose(got["batched hvp"], obj.hvp(V), rtol=1e-12, atol=1e-14)


def test_spectrum_trace_and_dynamics_equal_one_process_with_identical_vectors(ranks, single):
    found, _ = ranks
    for f in found:
        values = f["values"]
        assert torch.allclose(values["eigenvalues"], single["eigenvalues"], rtol=1e-10, atol=0)
        overlap = (values["eigenvectors"] * single["eigenvectors"]).sum(1).abs()
        assert torch.allclose(overlap, torch.ones(3, dtype=torch.float64), atol=1e-8)
        for name in ("hutchinson", "hutch++"):
            assert values[name].item() == pytest.approx(single[name].item(), rel=1e-12)
        assert torch.allclose(values["gd theta"], single["gd theta"], rtol=0, atol=1e-12)
        assert torch.allclose(values["gd sharpness"], single["gd sharpness"], rtol=1e-10, atol=0)
        for name in ("eigenvectors", "eigenvalues", "hutchinson", "hutch++", "gd theta", "gd sharpness"):
            assert f["same bits on both ranks"][name], name
    assert torch.equal(found[0]["values"]["eigenvectors"], found[1]["values"]["eigenvectors"])


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_sharded_scan_store_is_the_single_process_store_bit_for_bit(ranks, tmp_path, strategy):
    found, out = ranks
    obj = objective()
    d = dirs.random(obj, k=2, seed=5)
    alone = landscape.scan(obj, d, GRID, store=tmp_path / "alone.h5", strategy=strategy, chunk=CHUNK, progress=False)
    merged = scan_store.read(out / f"{strategy}.h5")
    reference = scan_store.read(tmp_path / "alone.h5")
    assert merged["key"] == reference["key"]
    assert merged["done"].all() and merged["values"]["loss"].shape == (9, 6)
    assert np.array_equal(merged["values"]["loss"], reference["values"]["loss"])  # bit for bit, NaN-free
    assert np.array_equal(merged["directions"], reference["directions"])
    assert not scan_store.parts(out / f"{strategy}.h5")  # merged, then removed
    for f in found:
        assert f[f"scan {strategy}"]["computed"] == 54 and f[f"scan {strategy}"]["done"]
        assert np.array_equal(f[f"scan {strategy}"]["loss"], alone.values["loss"])
        if strategy == "loop":
            assert np.array_equal(f["scan in memory"]["loss"], alone.values["loss"])


def test_an_interrupted_distributed_scan_resumes(ranks, tmp_path):
    found, out = ranks
    obj = objective()
    d = dirs.random(obj, k=2, seed=5)
    whole = landscape.scan(obj, d, SMALL, metrics={"mean_output": interrupting(-1)}, chunk=4, progress=False)
    assert all(f["resumed interrupted"] and f["left interrupted"] for f in found)
    assert found[0]["parts after the interruption"] == ["resumed.part-0-of-2.h5", "resumed.part-1-of-2.h5"]
    assert found[0]["done after the interruption"] == 8  # one chunk of 4 on each rank
    assert found[0]["resume"] == {"computed": 35 - 8, "chunk": 4}
    resumed = landscape.load_scan(out / "resumed.h5")
    assert resumed.done.all() and not scan_store.parts(out / "resumed.h5")
    for name in ("loss", "mean_output"):
        assert np.array_equal(resumed.values[name], whole.values[name])
    # the other one resumes in one process: the parts are folded in, only the rest is computed
    assert len(scan_store.parts(out / "left.h5")) == 2
    alone = landscape.scan(obj, d, SMALL, metrics={"mean_output": interrupting(-1)}, chunk=4,
                           store=out / "left.h5", progress=False)
    assert alone.points_computed == 35 - 8 and not scan_store.parts(out / "left.h5")
    for name in ("loss", "mean_output"):
        assert np.array_equal(alone.values[name], whole.values[name])


def test_ranks_with_different_data_refuse_to_scan(ranks):
    found, out = ranks
    for f in found:
        assert "rank 1's scan differs from rank 0's in probe" in f["refusal"]
    assert not (out / "refused.h5").exists()


def test_a_data_parallel_objective_is_refused_by_a_scan_and_a_single_process_world_is_a_no_op():
    world = distributed.init()
    assert world.size == 1 and world.rank == 0 and not world.active and world.backend is None
    obj = data_parallel.data_parallel(objective(), world)
    plain = objective()
    assert obj.n_examples == EXAMPLES
    assert torch.equal(obj.loss(), plain.loss())
    assert data_parallel.shard_range(301, 0, 2) == (0, 151) and data_parallel.shard_range(301, 1, 2) == (151, 301)
    assert [data_parallel.shard_range(10, r, 4) for r in range(4)] == [(0, 3), (3, 6), (6, 8), (8, 10)]
    batches = [(torch.zeros(1), torch.zeros(1)) for _ in range(5)]
    assert len(data_parallel.shard(batches, distributed.World(rank=1, size=2))) == 2
    with pytest.raises(ValueError, match="cannot be shared by 3 processes"):
        data_parallel.shard(batches[:2], distributed.World(rank=0, size=3))
    with pytest.raises(ValueError, match="splits the grid, not the data"):
        landscape.scan(obj, dirs.random(plain, k=1), "-1:1:3", world=distributed.World(rank=0, size=2),
                       progress=False)


def test_a_shuffled_data_loader_is_refused_by_shard():
    X, y = torch.randn(30, 2), torch.zeros(30)
    two = distributed.World(rank=0, size=2)
    for loader in (DataLoader(TensorDataset(X, y), batch_size=4, shuffle=True),
                   DataLoader(TensorDataset(X, y), batch_sampler=BatchSampler(RandomSampler(X), 4, False))):
        with pytest.raises(ValueError, match="shuffled DataLoader.*DistributedSampler and pass sharded=True"):
            data_parallel.shard(loader, two)
        assert data_parallel.shard(loader, distributed.World()) is loader  # one process reads every batch
    in_order = data_parallel.shard(DataLoader(TensorDataset(X, y), batch_size=4), two)
    assert [len(b[1]) for b in in_order] == [4, 4, 4, 4]  # batches 0, 2, 4, 6 of 8


def test_a_command_runs_from_its_parsed_arguments_alone(tmp_path):
    args = cli.parser().parse_args(["spectrum", "--problem", "quadratic", "--problem-arg", "n=12", "--k", "2",
                                    "--tol", "1e-10", "--out", str(tmp_path)])
    assert args.world == distributed.World() and not args.world.active
    assert args.run(args) == 0
    found = json.loads((tmp_path / "spectrum.json").read_text())["eigenvalues"]["eigenvalues"]
    assert np.allclose(found, [100.0, 10 ** (2 - 4 / 11)], rtol=1e-9, atol=0)  # logspace(2, -2, 12)
    assert cli.parser().parse_args(["scan", "--grid=-1:1:3", "--out", str(tmp_path)]).world == distributed.World()
    assert "world" not in vars(cli.parser().parse_args(["info"]))  # only the torchrun commands (infoplane saves args)


def test_cli_scan_under_torchrun_writes_the_single_process_store(tmp_path):
    args = ["scan", "--problem", "quadratic", "--problem-arg", "n=40", "--grid", "-1:1:7", "--grid", "-1:2:5",
            "--chunk", "3", "--dtype", "float64", "--include-1d"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "landscape", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert cli.main([*args, "--out", str(tmp_path / "one")]) == 0
    two, one = scan_store.read(tmp_path / "two" / "scan.h5"), scan_store.read(tmp_path / "one" / "scan.h5")
    assert two["key"] == one["key"] and two["done"].all()
    assert np.array_equal(two["values"]["loss"], one["values"]["loss"])
    assert run.stdout.count("wrote        ") == 1  # rank 0 alone prints
    assert "2 processes" in run.stdout
    summary = json.loads((tmp_path / "two" / "scan.json").read_text())
    assert summary["points_computed"] == 35 and summary["done"] == 35
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["scan.h5", "scan.json"]
    with h5py.File(tmp_path / "two" / "scan.h5") as f:
        assert json.loads(f.attrs["meta"])["problem"] == "quadratic"


def test_cli_spectrum_under_torchrun_is_data_parallel_and_equals_one_process(tmp_path):
    args = ["spectrum", "--problem", "digits-mlp", "--problem-arg", "hidden=8", "--problem-arg", "steps=20",
            "--problem-arg", "examples=301", "--dtype", "float64", "--k", "3", "--tol", "1e-10", "--trace",
            "--trace-budget", "21"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "landscape", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "data-parallel over 2 processes (gloo)" in run.stdout and run.stdout.count("eigenvalues  ") == 1
    assert cli.main([*args, "--out", str(tmp_path / "one")]) == 0
    two, one = (json.loads((tmp_path / name / "spectrum.json").read_text()) for name in ("two", "one"))
    assert two["processes"] == 2 and "processes" not in one
    assert np.allclose(two["eigenvalues"]["eigenvalues"], one["eigenvalues"]["eigenvalues"], rtol=1e-10, atol=0)
    assert two["eigenvalues"]["converged"] and one["eigenvalues"]["converged"]
    assert two["trace"]["estimate"] == pytest.approx(one["trace"]["estimate"], rel=1e-12)
