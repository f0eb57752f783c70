"""The one many-point evaluator: the loss and metrics of an objective at many parameter vectors.

    evaluate = points.evaluator(obj, metrics={"accuracy": accuracy}, strategy="auto")
    values = evaluate(thetas)              # float64 [c, 1 + len(metrics)]: loss first, then the metrics

Each value is a batch mean ``fn(outputs, y)`` weighted by batch size, like the loss,
accumulated in float64. A non-finite value is returned as it is (NaN or inf).

Strategies:

- ``"loop"``: a private copy of the model whose parameters are views of one flat buffer;
  each point is copied into the buffer and the model called directly, data outer, points
  inner (each batch is moved to the device once per call). Per-point ``buffers`` (BatchNorm
  statistics along a path) are copied into the model's buffers before each point. With
  ``compiled``, the copy runs through ``torch.compile`` (compiled once per batch shape, on the first
  points: seconds to a minute; then faster where the model's kernels fuse). With ``channels_last``, its 4D
  inputs (images) are laid out channels_last (NHWC) once per call, and the convolutions follow them: the same
  function, other kernels (faster for a ResNet on a CPU: docs/benchmarks.md; a GPU is measured, not
  assumed).
- ``"batched"``: ``Objective.evaluate_many``, ``torch.func.vmap`` over ``functional_call``
  for a chunk of points at once.
- ``"auto"``: ``choose`` times the loop, the loop with channels_last (a model with 2D convolutions) and
  batched on a few points and keeps the fastest (a ResNet on a GPU and an MLP on digits want different ones);
  where nothing is measured (``resolve``), batched on CUDA and loop on the CPU, without channels_last. Loop,
  unmeasured, for a model that vmap cannot serve (``core.data.vmappable``: attention, Hugging Face); asked for
  by name on CUDA, batched is refused for such a model rather than risk the process.

Scans (``landscape.scans.scan``) and paths (``landscape.paths.curves``) evaluate through it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from landscape.core.data import inputs, vmappable
from landscape.core.errors import UserCodeError, calling
from landscape.core.objective import Objective, measure

Tensor = torch.Tensor
STRATEGIES = ("auto", "loop", "batched")
PRECISIONS = ("float32", "tf32")
Evaluate = Callable[..., np.ndarray]


def resolve(obj: Objective, strategy: str, compiled: bool = False, channels_last: bool = False) -> str:
    """``strategy`` checked; ``"auto"`` becomes batched on CUDA for a model vmap can serve, loop otherwise, and
    the loop when ``compiled`` or ``channels_last`` (options of the loop's model call)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    for option, given in (("compile", compiled), ("channels_last", channels_last)):
        if given and strategy == "batched":
            raise ValueError(f"{option} applies to the loop strategy (one model call per point); the batched one "
                             f"vmaps the model instead")
    if channels_last and not _convolutional(obj.model):
        raise ValueError("channels_last lays images out for 2D convolutions, and this model has none")
    if compiled or channels_last:
        return "loop"
    can = vmappable(obj.model)
    if strategy == "auto":
        return "batched" if obj.device.type == "cuda" and can else "loop"
    if strategy == "batched" and obj.device.type == "cuda" and not can:
        raise ValueError("the batched strategy vmaps the model over points, which this model (attention, or a Hugging "
                         "Face model) cannot take on CUDA without risking the process; use strategy='loop'")
    return strategy


@contextmanager
def precision(kind: str = "float32") -> Iterator[None]:
    """Convolutions and matrix products in ``kind``: ``"float32"`` (full float32 products) or ``"tf32"`` (NVIDIA
    GPUs since Ampere round the inputs of both to TF32's 10-bit mantissa: faster, ~1e-3 relative per product).
    torch's own default is TF32 for cuDNN convolutions and float32 for matrix products; inside, both follow
    ``kind``, through torch's ``fp32_precision`` switches (torch 2.9 on; ``allow_tf32`` before), and both are
    restored after. Nothing changes on the CPU or in float64."""
    _known(kind)
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        switches, value = (torch.backends.cuda.matmul, torch.backends.cudnn.conv), "tf32" if kind == "tf32" else "ieee"
        name = "fp32_precision"
    else:
        switches, value, name = (torch.backends.cuda.matmul, torch.backends.cudnn), kind == "tf32", "allow_tf32"
    before = [getattr(switch, name) for switch in switches]
    for switch in switches:
        setattr(switch, name, value)
    try:
        yield
    finally:
        for switch, old in zip(switches, before):
            setattr(switch, name, old)


def _known(kind: str) -> None:
    if kind not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {kind!r}")


def _convolutional(model: nn.Module) -> bool:
    """Whether ``model`` has a 2D convolution (``nn.Conv2d`` or a subclass): where channels_last can matter."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def choose(obj: Objective, metrics: Mapping[str, Callable[[Tensor, Tensor], Tensor]] | None,
           thetas: Tensor, kind: str = "float32", channels_last: bool | None = None) -> tuple[str, bool, dict | None]:
    """The fastest way to evaluate ``thetas [k, n]``: ``(strategy, channels_last, measured)``.

    The candidates: the loop; the loop with channels_last inputs, for a model with 2D convolutions (unless
    ``channels_last`` is False); batched, for a model vmap can serve. Each is warmed on one point (vmap's
    tracing, cuDNN's choice of kernels), then timed on all k: ``measured = {"points": k, "loop": points/s,
    "loop (channels_last)": points/s, "batched": points/s, "agreement": the largest |value - loop's| / |loop's|
    of the others}``. A model that fails on channels_last inputs (one that views them as if contiguous) leaves
    that candidate out, said in ``measured["left out"] = {label: the error's first line}``. One candidate, or
    fewer than 2 points: the loop, unmeasured (None), and so where only the loop is left. ``kind``: the
    ``precision`` all run in."""
    candidates = {"loop": ("loop", False)}
    if channels_last is not False and _convolutional(obj.model):
        candidates["loop (channels_last)"] = ("loop", True)
    if vmappable(obj.model):
        candidates["batched"] = ("batched", False)
    if len(candidates) < 2 or len(thetas) < 2:
        return "loop", False, None
    rates, values, left = {}, {}, {}
    for label, (strategy, last) in candidates.items():
        evaluate = evaluator(obj, metrics, strategy, kind, channels_last=last)
        try:
            evaluate(thetas[:1])
        except UserCodeError as error:
            if not last:
                raise
            left[label] = str(error)
            continue
        if obj.device.type == "cuda":
            torch.cuda.synchronize(obj.device)
        start = time.perf_counter()
        values[label] = evaluate(thetas)
        if obj.device.type == "cuda":
            torch.cuda.synchronize(obj.device)
        rates[label] = len(thetas) / max(time.perf_counter() - start, 1e-9)
    if len(rates) < 2:
        return "loop", False, None
    loop, gaps = values.pop("loop"), []
    for other in values.values():
        both = np.isfinite(loop) & np.isfinite(other)
        gaps += (np.abs(other - loop)[both] / np.maximum(np.abs(loop[both]), np.finfo(np.float64).tiny)).tolist()
    best = max(rates, key=rates.get)
    return *candidates[best], {"points": len(thetas), **rates, "agreement": max(gaps, default=float("nan")),
                               **({"left out": left} if left else {})}


def evaluator(obj: Objective, metrics: Mapping[str, Callable[[Tensor, Tensor], Tensor]] | None = None,
              strategy: str = "auto", kind: str = "float32", compiled: bool = False,
              channels_last: bool = False) -> Evaluate:
    """``evaluate(thetas [c, n], buffers=None) -> float64 [c, 1 + len(metrics)]`` by ``strategy``, on CUDA in the
    ``precision`` ``kind``; ``compiled``: the loop's model through ``torch.compile``; ``channels_last``: the loop's
    4D inputs laid out channels_last (both: auto then means loop).

    ``buffers`` (loop only): one ``{name: tensor}`` per point, put in the model's buffers before it.
    Each call counts ``c`` full-data forward passes in ``obj.counts["n_forward"]``.
    """
    _known(kind)
    fns = obj.functions(metrics)
    looped = resolve(obj, strategy, compiled, channels_last) == "loop"
    inner = _loop(obj, fns, compiled, channels_last) if looped else _batched(obj, metrics)
    if obj.device.type != "cuda":  # no TF32 there: torch's switches are left alone
        return inner

    def evaluate(thetas: Tensor, buffers: list[dict[str, Tensor]] | None = None) -> np.ndarray:
        with precision(kind):
            return inner(thetas, buffers)

    return evaluate


def _inplace_copy(obj: Objective) -> tuple[nn.Module, Tensor]:
    """A copy of the model, on the objective's device and dtype, whose selected parameters view ``buf [n]``."""
    try:
        model = copy.deepcopy(obj.model)
    except Exception as error:
        raise ValueError(f"the loop strategy copies the model, and copy.deepcopy failed ({type(error).__name__}: "
                         f"{error}); use strategy='batched'") from error
    model.to(device=obj.device, dtype=obj.dtype).requires_grad_(False)
    buf = obj.theta0.clone()
    views = {name: nn.Parameter(t, requires_grad=False) for name, t in obj.space.unflatten(buf).items()}
    first: dict[int, str] = {}
    for name, p in list(model.named_parameters(remove_duplicate=False)):
        origin = first.setdefault(id(p), name)
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        if origin in views:
            setattr(module, attr, views[origin])
        elif origin == name:
            p.data.copy_(obj.fixed[name])
    for name, b in model.named_buffers():
        b.copy_(obj.fixed[name])
    return model, buf


def _named(model: nn.Module, failed: str) -> Callable:
    """``model``, whose failures are a ``UserCodeError`` saying ``failed``."""
    def call(*args, **kwargs):
        with calling(failed):
            return model(*args, **kwargs)

    return call


def _compile(model: nn.Module, failed: str) -> Callable:
    """``torch.compile(model)``, whose failures are told apart from the model's own: where the compiled call
    fails and the model itself runs, a one-line error says torch.compile failed; where the model fails too, that
    is the error (a ``UserCodeError`` saying ``failed``)."""
    fast = torch.compile(model)

    def call(*args, **kwargs):
        try:
            return fast(*args, **kwargs)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:
            _named(model, failed)(*args, **kwargs)
            first = (str(error).strip().splitlines() or [""])[0]
            raise ValueError(f"torch.compile failed on this model ({type(error).__name__}: {first}); evaluate "
                             f"without compiling") from error

    return call


def _loop(obj: Objective, fns: dict, compiled: bool = False, channels_last: bool = False) -> Evaluate:
    """Points one at a time on an in-place copy of the model (through ``torch.compile`` if ``compiled``, its 4D
    inputs channels_last if ``channels_last``); data outer, points inner."""
    model, buf = _inplace_copy(obj)
    own = dict(model.named_buffers())
    failed = "the model failed on its data" + " laid out channels_last" * channels_last
    run = _compile(model, failed) if compiled else _named(model, failed)

    def evaluate(thetas: Tensor, buffers: list[dict[str, Tensor]] | None = None) -> np.ndarray:
        acc = torch.zeros(thetas.shape[0], len(fns), dtype=torch.float64, device=obj.device)
        with torch.no_grad(), obj.configured(model):
            for X, y, size in obj.batches():
                args, kwargs = inputs(X, obj.model)
                if channels_last:
                    args, kwargs = [_nhwc(a) for a in args], {k: _nhwc(a) for k, a in kwargs.items()}
                found = []  # per point; nothing but the model and the metrics runs per point
                for i, theta in enumerate(thetas):
                    buf.copy_(theta)
                    for name, t in (buffers[i] if buffers else {}).items():
                        own[name].copy_(t)
                    outputs = run(*args, **kwargs)
                    found.append(measure(fns, outputs, y, obj.device))
                acc += torch.stack(found) * size
        obj.counts["n_forward"] += thetas.shape[0]
        return (acc / obj.n_examples).cpu().numpy()

    return evaluate


def _nhwc(value):
    """A 4D tensor in channels_last memory (the same values, strides N, H, W, C); anything else as it is."""
    if isinstance(value, Tensor) and value.dim() == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value


def _batched(obj: Objective, metrics: Mapping[str, Callable] | None) -> Evaluate:
    """A chunk of points at once: ``Objective.evaluate_many`` (vmap over the points of functional_call)."""
    def evaluate(thetas: Tensor, buffers: list[dict[str, Tensor]] | None = None) -> np.ndarray:
        if buffers:
            raise ValueError("the batched strategy evaluates every point with the objective's buffers; "
                             "per-point buffers need strategy='loop'")
        try:
            return obj.evaluate_many(thetas, metrics, chunk=len(thetas)).cpu().numpy()  # the caller's chunk, as it is
        except torch.OutOfMemoryError as error:
            raise ValueError(f"{thetas.shape[0]} points at once do not fit in the device's memory; "
                             f"use a smaller chunk") from error
        except (RuntimeError, UserCodeError) as error:  # vmap's refusals come from inside the model or a metric
            first = (str(error).strip().splitlines() or [""])[0]
            raise ValueError(f"the batched strategy cannot vmap this model or a metric ({first}); "
                             f"use strategy='loop'") from error

    return evaluate
