"""Benchmark for a session with a GPU (issue 18): ResNets and a transformer at real scale, in one run.

    python scripts/bench_gpu.py --device cuda --out out/     # ~6 minutes on one H200, estimated (--compile: more)
    python scripts/bench_gpu.py --device cuda --autotune     # the same with cuDNN autotuning, ResNet-56 only
    python scripts/bench_gpu.py                              # the CPU half, smaller sizes (12 minutes on 2 cores)
    python scripts/bench_gpu.py --size tiny                  # that it runs, in seconds (a test does this)

1. HVP cost on the CIFAR ResNet-20 and ResNet-56 (``landscape.vision.ResNet``, eval mode, random weights) over
   CIFAR-shaped examples in batches, and on the built-in tiny-gpt: the seconds of one gradient, of landscape's
   cached HVP (and its rev-rev and fwd-rev paths, to rank them on the device), of a hand-written cached double
   backward (every batch's gradient graph kept, one ``torch.autograd.grad`` per product) and of PyHessian's
   product (its data as one batch, as PyHessian takes it), each over the gradient's; and 16 vectors at once
   (landscape's ``H @ V``) against 16 single products.
2. Where the time of a gradient and of a cached HVP goes on the larger ResNet: the operations by self time on
   the device (torch.profiler), the full tables in OUT/bench_gpu-profile-ResNet-<depth>.txt.
3. Scan rate on ResNet-56 (ResNet-20 on the CPU) over synthetic CIFAR-shaped examples: points per second of
   landscape's scan per strategy (loop, loop with channels_last, batched) and of a plain torch loop
   (``vector_to_parameters``, ``no_grad``, the batches' mean), on a 3 x 3 grid, with each one's largest relative
   difference from a float64 reference computed at the same points, all in full float32 (TF32 off), and what
   "auto" would take there (``points.choose``, as a scan of 256 points or more does; below, a scan takes the
   device's rule: batched on CUDA, the loop on the CPU). Beside them, the plain loop with one idea each:
   channels_last, TF32, 4x larger batches, and with ``--compile`` landscape's compiled loop, torch.compile and
   its CUDA graphs.

cuDNN autotuning is a run of its own (``--autotune``): cuDNN keeps, per convolution shape, the first plan it
found (torch's plan cache is keyed without the ``cudnn.benchmark`` switch), so switching it on after an untuned
row measures the untuned plans again. It repeats 1-3 for the larger ResNet and the scan's loops.

Writes OUT/bench_gpu.json and OUT/bench_gpu.md (markdown tables of the three parts); with ``--autotune``
OUT/bench_gpu_autotuned.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
from pathlib import Path

import benchlib
import numpy as np
import torch
from torch.nn import functional as F
from torch.nn.utils import vector_to_parameters

import landscape
from landscape.core.hvp import twice_differentiable
from landscape.language import causal_lm_loss
from landscape.scans import directions
from landscape.scans.points import choose, precision
from landscape.vision import ResNet

SIZES = {"cuda": {"hvp_examples": 2048, "hvp_batch": 512, "hvp_depths": (20, 56), "gpt_windows": 256, "scan_depth": 56,
                  "scan_examples": 50_000, "scan_batch": 2500, "repeats": 5,
                  "scan_repeats": 1},  # batched ran 0.4 points/s there: 9 points x 2 runs of it are 45 s
         "cpu": {"hvp_examples": 256, "hvp_batch": 128, "hvp_depths": (8, 20), "gpt_windows": 256, "scan_depth": 20,
                 "scan_examples": 1024, "scan_batch": 256, "repeats": 3,
                 "scan_repeats": 3},
         "tiny": {"hvp_examples": 16, "hvp_batch": 8, "hvp_depths": (8,), "gpt_windows": 8, "scan_depth": 8,
                  "scan_examples": 32, "scan_batch": 16, "repeats": 1, "scan_repeats": 1,  # that it runs: seconds
                  "gpt": {"steps": 2, "examples": 8, "context": 16, "width": 16, "layers": 1}}}


def cifar(m: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``m`` synthetic CIFAR-shaped examples: images ``[m, 3, 32, 32]`` and labels in 0..9."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (m,), generator=g).to(device)


def resnet(depth: int, device: torch.device) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ResNet(depth).to(device).eval()


def hvp_costs(name: str, model, loss_fn, batches: list, device, repeats: int, peer_data=None) -> dict:
    """Seconds of a gradient, landscape's cached HVP, a hand-written double backward and PyHessian's product; 16
    vectors batched against 16 singles; every product's relative difference from the hand-written one."""
    data = batches if len(batches) > 1 else batches[0]
    obj = landscape.Objective(model, loss_fn, data, hvp_mode="cached")
    n = obj.space.n
    g = torch.Generator().manual_seed(2)
    v = torch.randn(n, generator=g).to(device)
    V = torch.randn(16, n, generator=g).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    sizes = [p.numel() for p in params]
    pieces = [part.view_as(p) for part, p in zip(v.split(sizes), params)]
    total = sum(_count(b) for b in batches)
    graphs = []
    with twice_differentiable():  # attention on its math kernel: the fused ones have no double backward
        for batch in batches:  # the hand-written cached double backward: each batch's gradient, its graph kept
            loss = _loss(model, loss_fn, batch) * (_count(batch) / total)
            graphs.append(torch.autograd.grad(loss, params, create_graph=True))

    def hand_hvp():
        out = torch.zeros(n, device=device)
        for grads in graphs:
            out += torch.cat([h.reshape(-1) for h in torch.autograd.grad(grads, params, pieces, retain_graph=True)])
        return out

    items = {"gradient": lambda: obj.grad(), "HVP (landscape, cached)": lambda: obj.hvp(v),
             "HVP (hand-written double backward)": hand_hvp}
    for mode in ("rev-rev", "fwd-rev"):  # the other paths to the same product, to rank them on this device
        try:
            obj.hvp(v, mode=mode)
        except (RuntimeError, ValueError, NotImplementedError) as error:  # a rule missing on this path
            print(f"{name}: no {mode} HVP ({type(error).__name__}: {str(error).splitlines()[0][:100]})")
            continue
        items[f"HVP (landscape, {mode})"] = lambda mode=mode: obj.hvp(v, mode=mode)
    try:  # a dev dependency: a device machine without it still measures the rest
        from pyhessian import hessian as PyHessian
        from pyhessian.utils import hessian_vector_product
    except ImportError:
        peer_data = None
    if peer_data is not None:
        peer = PyHessian(model, loss_fn, data=peer_data, cuda=device.type == "cuda")
        items["HVP (PyHessian)"] = lambda: torch.cat(
            [h.reshape(-1) for h in hessian_vector_product(peer.gradsH, peer.params, pieces)])
    H = landscape.hessian(obj)
    items["16 HVPs batched (landscape, H @ V)"] = lambda: H @ V
    items["16 HVPs one by one (landscape)"] = lambda: torch.stack([obj.hvp(V[i]) for i in range(16)])
    obj.hvp(v)  # the cached graph, built once
    seconds = benchlib.median_times(items, device, repeats)
    reference = hand_hvp()
    agree = {label: float((items[label]() - reference).norm() / reference.norm())
             for label in items if label.startswith("HVP")}
    single = items["16 HVPs one by one (landscape)"]()
    agree["16 batched against singles"] = float(((H @ V) - single).norm() / single.norm())
    grad = seconds["gradient"]
    model.zero_grad(set_to_none=True)
    return {"model": name, "parameters": n, "examples": total, "batches": len(batches), "seconds": seconds,
            "x gradient": {k: t / grad for k, t in seconds.items()}, "relative difference": agree}


def profile(name: str, model, batches: list, device, out: Path, stem: str) -> dict:
    """Where the time of one gradient and of one cached HVP goes on ``model`` (cross-entropy over ``batches``): the
    operations by self time on the device (the CPU's without a GPU), the top 10 of each with their share, and
    both full tables, grouped by input shapes, in ``out/<stem>-profile-<name>.txt``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiled

    obj = landscape.Objective(model, F.cross_entropy, batches, hvp_mode="cached")
    v = torch.randn(obj.space.n, generator=torch.Generator().manual_seed(2)).to(device)
    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * (device.type == "cuda")
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    found, tables = {}, []
    for label, fn in (("gradient", obj.grad), ("HVP (landscape, cached)", lambda: obj.hvp(v))):
        fn()  # warm; the HVP's graph is built here
        benchlib.sync(device)
        with profiled(activities=activities, record_shapes=True) as run:
            fn()
            benchlib.sync(device)
        events = sorted(run.key_averages(), key=lambda e: getattr(e, key), reverse=True)
        total = sum(getattr(e, key) for e in events)
        found[label] = {"ms": total / 1e3, "top": [{"op": e.key, "ms": getattr(e, key) / 1e3, "calls": e.count,
                                                    "share": getattr(e, key) / total} for e in events[:10]]}
        tables.append(f"{name}, {label}, by {key}\n"
                      + run.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=40))
    out.mkdir(parents=True, exist_ok=True)
    file = f"{stem}-profile-{name}.txt"
    (out / file).write_text("\n\n".join(tables))
    return {"model": name, "time": key, "file": file, **found}


def _loss(model, loss_fn, batch):
    if isinstance(batch, dict):
        return loss_fn(model(**batch), batch)
    return loss_fn(model(batch[0]), batch[1])


def _count(batch) -> int:
    return int((batch["labels"][:, 1:] != -100).sum()) if isinstance(batch, dict) else len(batch[1])


def scan_rates(depth: int, examples: int, batch: int, device, repeats: int, compile_: bool, few: bool) -> dict:
    """Points per second of landscape's scan per strategy and of a plain torch loop on a 3 x 3 grid, and each one's
    largest relative difference from float64 losses at the same points; ``few``: only the loops (landscape's and
    the plain one, each contiguous and channels_last) and TF32, without what auto would take."""
    model = resnet(depth, device)
    X, y = cifar(examples, device, seed=3)
    data = [(X[i:i + batch], y[i:i + batch]) for i in range(0, examples, batch)]
    obj = landscape.Objective(model, F.cross_entropy, data)
    d = directions.random(obj, 2, seed=0)
    axes = [np.linspace(-0.5, 0.5, 3)] * 2
    points = torch.stack([obj.theta0 + a * d.vectors[0] + b * d.vectors[1] for a in axes[0] for b in axes[1]])
    reference = losses(copy.deepcopy(model).double(), points, data, examples)
    chosen = None if few else dict(zip(("strategy", "channels_last", "measured"), choose(obj, None, points)))
    runs = {}
    for strategy, compiled, last in ([("loop", False, False), ("loop", False, True)]
                                     + [("batched", False, False)] * (not few) + [("loop", True, False)] * compile_):
        options = {"strategy": strategy, "compiled": compiled, "channels_last": last, "progress": False}

        def run(options=options):  # the scan's own seconds: its grid, not the centre it checks first
            benchlib.sync(device)
            result = landscape.scan(obj, d, [(-0.5, 0.5, 3)] * 2, **options)
            benchlib.sync(device)
            return result.seconds, result.values["loss"].reshape(-1)

        runs[f"landscape scan ({strategy}{', compiled' * compiled}{', channels_last' * last})"] = run
    plain = copy.deepcopy(model)
    runs["plain torch loop"] = benchlib.timed(lambda: losses(plain, points, data, examples,
                                                             context=lambda: precision("float32")), device)
    runs.update(ideas(model, points, data, examples, device, compile_, few))
    rows = {label: (len(points) / seconds, values) for label, (seconds, values) in
            benchlib.interleaved(runs, repeats).items()}
    plain_rate = rows["plain torch loop"][0]
    return {"model": f"ResNet-{depth}", "parameters": obj.space.n, "examples": examples, "batch": batch,
            "points": len(points),
            "precision": "float32 (TF32 off) everywhere but the TF32 row",
            **({"auto on these points (points.choose)": chosen} if chosen else {}),
            "rows": {label: {"points/s": rate, "x plain loop": rate / plain_rate,
                             "max rel. difference from float64": float(np.max(np.abs(v - reference) / reference))}
                     for label, (rate, v) in rows.items()}}


def losses(m, points, batches: list, examples: int, load=vector_to_parameters,
           context=contextlib.nullcontext) -> np.ndarray:
    """The mean cross-entropy of ``m`` over ``batches`` at each of ``points [k, n]`` (in ``m``'s dtype), its
    parameters set by ``load(theta, parameters)``: a plain torch loop."""
    params = list(m.parameters())
    dtype = params[0].dtype
    out = []
    with torch.no_grad(), context():
        for theta in points:
            load(theta.to(dtype), params)
            out.append(sum(float(F.cross_entropy(m(Xb.to(dtype)), yb, reduction="sum")) for Xb, yb in batches)
                       / examples)
    return np.array(out)


def copy_into(theta, params) -> None:
    """``theta`` copied into the parameters in place (a compiled model keeps its tensors)."""
    offset = 0
    for p in params:
        p.copy_(theta[offset:offset + p.numel()].view_as(p))
        offset += p.numel()


def ideas(model, points, data, examples: int, device, compile_: bool, few: bool) -> dict:
    """The plain loop with one idea each, as runs for ``benchlib.interleaved``: channels_last memory, TF32
    convolutions and products, batches 4 times as large (as free memory could allow a forward without a graph;
    not with ``few``), and, with ``compile_``, ``torch.compile`` and its CUDA graphs (mode "reduce-overhead").
    Parameters are copied in place (a compiled model keeps its tensors)."""
    def channels_last(m):
        return m.to(memory_format=torch.channels_last)

    def same(m):
        return m

    full = lambda: precision("float32")  # noqa: E731  every idea but TF32's in full float32, as the scans
    X, y = torch.cat([Xb for Xb, _ in data]), torch.cat([yb for _, yb in data])
    larger = 4 * len(data[0][1])
    variants = {"plain + channels_last": (channels_last, True, full, data),
                "plain + TF32": (same, False, lambda: precision("tf32"), data)}
    if not few:
        variants[f"plain + batches of {larger:,}"] = (same, False, full, [(X[i:i + larger], y[i:i + larger])
                                                                          for i in range(0, len(y), larger)])
    if compile_:
        variants["plain + torch.compile"] = (torch.compile, False, full, data)
        variants["plain + torch.compile (CUDA graphs)"] = (lambda m: torch.compile(m, mode="reduce-overhead"), False,
                                                           full, data)
    runs = {}
    for label, (prepare, last, context, given) in variants.items():
        m = prepare(copy.deepcopy(model))
        batches = [(Xb.contiguous(memory_format=torch.channels_last) if last else Xb, yb) for Xb, yb in given]
        runs[label] = benchlib.timed(lambda m=m, batches=batches, context=context: losses(
            m, points, batches, examples, load=copy_into, context=context), device)
    return runs


def markdown(report: dict) -> str:
    tuned = "on (cudnn.benchmark, from the first convolution)" if report["autotune"] else "off"
    lines = [f"Device: {report['device']}; torch {report['torch']}; {report['date']}; cuDNN autotuning {tuned}.", "",
             "| model | parameters | examples (batches) | gradient s | HVP x gradient | rev-rev | fwd-rev | "
             "hand-written x gradient | PyHessian x gradient | 16 batched / 16 singles |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["hvp"]:
        x = r["x gradient"]
        ratio = r["seconds"]["16 HVPs batched (landscape, H @ V)"] / r["seconds"]["16 HVPs one by one (landscape)"]
        peer, rev, fwd = (f"{x[k]:.2f}" if k in x else "-" for k in (
            "HVP (PyHessian)", "HVP (landscape, rev-rev)", "HVP (landscape, fwd-rev)"))
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['examples']:,} ({r['batches']}) | "
                     f"{r['seconds']['gradient']:.4f} | {x['HVP (landscape, cached)']:.2f} | {rev} | {fwd} | "
                     f"{x['HVP (hand-written double backward)']:.2f} | {peer} | {ratio:.2f} |")
    p = report["profile"]
    lines += ["", f"Where the time goes on {p['model']} ({p['time']}, profiled; full tables in {p['file']}):",
              "", "| product | operation | ms | share | calls |", "|---|---|---|---|---|"]
    for label in ("gradient", "HVP (landscape, cached)"):
        lines += [f"| {label} ({p[label]['ms']:.1f} ms) | {op['op']} | {op['ms']:.2f} | {op['share']:.0%} | "
                  f"{op['calls']} |" for op in p[label]["top"][:6]]
    s = report["scan"]
    auto = s.get("auto on these points (points.choose)")
    lines += ["", f"Scan: {s['model']} ({s['parameters']:,} parameters) over {s['examples']:,} examples in batches of "
              f"{s['batch']}, {s['points']} points; precision {s['precision']}"
              + (f"; auto would take {auto['strategy']}{' (channels_last)' * auto['channels_last']}." if auto else "."),
              "",
              "| evaluator | points/s | x plain loop | max rel. difference from float64 |", "|---|---|---|---|"]
    for label, row in s["rows"].items():
        lines.append(f"| {label} | {row['points/s']:.3g} | {row['x plain loop']:.2f} | "
                     f"{row['max rel. difference from float64']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="out")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile and its CUDA graphs (minutes "
                        "of compilation)")
    parser.add_argument("--size", choices=("device", "tiny"), default="device",
                        help="device: the sizes above for the device's kind; tiny: a check that the script runs")
    parser.add_argument("--autotune", action="store_true",
                        help="cuDNN autotuning (cudnn.benchmark) from the process's first convolution, in a run of "
                             "its own: cuDNN keeps the plan it first found for a shape whatever the switch says "
                             "later. Only the larger ResNet's HVPs and profile and the scan's loops; writes "
                             "bench_gpu_autotuned.json and .md")
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = SIZES[device.type if args.size == "device" else "tiny"]
    torch.backends.cudnn.benchmark = args.autotune
    stem = "bench_gpu_autotuned" if args.autotune else "bench_gpu"
    start = time.perf_counter()
    report = benchlib.header(device, sizes=sizes, autotune=args.autotune, hvp=[])
    X, y = cifar(sizes["hvp_examples"], device, seed=1)
    b = sizes["hvp_batch"]
    batches = [(X[i:i + b], y[i:i + b]) for i in range(0, len(y), b)]
    for depth in sizes["hvp_depths"][-1:] if args.autotune else sizes["hvp_depths"]:
        report["hvp"].append(hvp_costs(f"ResNet-{depth}", resnet(depth, device), F.cross_entropy, batches, device,
                                       sizes["repeats"], peer_data=(X, y)))
        print(f"{report['hvp'][-1]['model']}: {time.perf_counter() - start:.0f} s", flush=True)
        benchlib.write(report, args.out, f"{stem}.json")  # each part as soon as it exists: a cut run keeps it
    depth = sizes["hvp_depths"][-1]
    report["profile"] = profile(f"ResNet-{depth}", resnet(depth, device), batches, device, Path(args.out), stem)
    benchlib.write(report, args.out, f"{stem}.json")
    if not args.autotune:  # no convolutions
        tiny = landscape.load("tiny-gpt", **sizes.get("gpt", {}))
        windows = {k: t[:sizes["gpt_windows"]].to(device) for k, t in tiny.data.items()}
        chunks = [{k: t[i:i + 64] for k, t in windows.items()} for i in range(0, len(windows["input_ids"]), 64)]
        report["hvp"].append(hvp_costs("tiny-gpt", tiny.model.to(device), causal_lm_loss, chunks, device,
                                       sizes["repeats"]))
        print(f"tiny-gpt: {time.perf_counter() - start:.0f} s", flush=True)
        benchlib.write(report, args.out, f"{stem}.json")
    report["scan"] = scan_rates(sizes["scan_depth"], sizes["scan_examples"], sizes["scan_batch"], device,
                                sizes["scan_repeats"], args.compile, few=args.autotune)
    report["seconds"] = time.perf_counter() - start
    table = markdown(report)
    print(table)
    benchlib.write(report, args.out, f"{stem}.json")
    (Path(args.out) / f"{stem}.md").write_text(table)


if __name__ == "__main__":
    main()
