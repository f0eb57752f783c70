"""CUDA out-of-memory retries of the batched products, simulated on the CPU."""

import pytest
import torch

import landscape.hvp as hvp_engine
import landscape.operators as operators
from landscape import memory
from tests.landscape.test_hvp import objective, vectors
from tests.reference import rel


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
    unfailed = hvp_engine.hvp(obj, V, obj.theta0, mode, vectorize=True)
    with monkeypatch.context() as patch:  # the same computation started at the chunk that fits
        patch.setattr(memory, "chunk_size", lambda k, item, limit: min(k, 2))
        at_two = hvp_engine.hvp(obj, V, obj.theta0, mode, vectorize=True)
    tried, original = [], hvp_engine._double_backward
    if mode == "fwd-rev":
        monkeypatch.setattr(hvp_engine, "vmap", failing_vmap(hvp_engine.vmap, 3, tried))
    else:
        monkeypatch.setattr(hvp_engine, "_double_backward", failing(original, 3, tried))
    retried = hvp_engine.hvp(obj, V, obj.theta0, mode, vectorize=True)
    assert distinct(tried) == [16, 8, 4, 2]
    assert torch.equal(retried, at_two)
    assert rel(retried, unfailed) < 1e-14  # vmapped chunks of another size round differently, at 1e-16
    if mode != "fwd-rev":  # (fwd-rev computes a chunk of one without vmap)
        tried.clear()
        monkeypatch.setattr(hvp_engine, "_double_backward", failing(original, 0, tried))
        with pytest.raises(torch.OutOfMemoryError, match="chunk of 1 .halved from 16; memory budget 1,000,000,000,000"):
            hvp_engine.hvp(obj, V, obj.theta0, mode, vectorize=True)
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
