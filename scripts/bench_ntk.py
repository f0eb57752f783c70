"""Benchmark: the empirical NTK, against the two recipes research code uses.

No installable PyTorch library computes an empirical NTK (neural-tangents is JAX; curvlinops has
no kernel), so the peers are the recipes people copy:

- "autograd loop": one ``torch.autograd.grad`` per output of the batch (m * C reverse passes over
  the whole batch, ``retain_graph=True``), the rows stacked into J ``[mC, n]``, then J J^T;
- "torch.func recipe": the PyTorch tutorial's ``vmap(jacrev(f_single))`` over the whole batch at
  once, then an einsum (no chunking: it holds every example's Jacobian).

Ours is ``landscape.kernels.ntk.kernel`` with ``method="jacobian"`` (the same contraction, chunked to the
memory budget, the symmetric half reused) and ``method="products"`` (vjp then jvp per column,
no Jacobian held). The model is digits-mlp (tanh 64-h-10) at init, float32, on m digits, the
full kernel over the 10 outputs. Reported: seconds (fastest of interleaved repeats), each
recipe's time over ours (the recipes interleaved in each round), and the largest difference
from ours relative to max |Theta|.

    python scripts/bench_ntk.py [--repeats 3] [--device cpu] [--out DIR]

prints a table and writes DIR/bench_ntk.json (default: out/).
"""

from __future__ import annotations

import argparse
import time

import benchlib
import torch
from torch.func import functional_call, jacrev, vmap

from landscape import problems
from landscape.kernels import ntk


def autograd_loop(model, X) -> torch.Tensor:
    params = [p for p in model.parameters()]
    f = model(X).reshape(-1)
    rows = []
    for i in range(f.numel()):
        grads = torch.autograd.grad(f[i], params, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    J = torch.stack(rows)
    return J @ J.T


def func_recipe(model, X) -> torch.Tensor:
    params = {k: v.detach() for k, v in model.named_parameters()}

    def single(p, x):
        return functional_call(model, p, (x.unsqueeze(0),)).squeeze(0)

    jac = vmap(jacrev(single), (None, 0))(params, X)
    jac = [j.flatten(2) for j in jac.values()]
    return sum(torch.einsum("Naf,Mbf->NMab", j, j) for j in jac)


def flat(full: torch.Tensor) -> torch.Tensor:
    m, _, C, _ = full.shape
    return full.permute(0, 2, 1, 3).reshape(m * C, m * C)


def timed(fns: dict, repeats: int, device: torch.device) -> dict:
    """{name: (fastest seconds, value)} over ``repeats`` rounds, the functions interleaved in each round."""
    best = {name: (float("inf"), None) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            value = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = (min(best[name][0], time.perf_counter() - start), value)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="out")
    args = parser.parse_args()
    device = torch.device(args.device)
    report = benchlib.header(device, cases=[])
    print(f"{'hidden':>6} {'m':>4} {'n':>7} {'[mC, mC]':>10} {'ours s':>8} {'products':>9} {'loop':>8} "
          f"{'func':>8} {'max diff':>9}")
    for hidden, m in ((32, 64), (256, 64), (256, 256), (1024, 256)):
        problem = problems.digits_mlp(hidden=hidden, steps=0, loss="mse", examples=m)
        obj = problem.objective(device=device)
        model = problem.model.to(device)
        X = problem.data[0].to(device)
        fns = {"ours": lambda: flat(ntk.kernel(obj, X)),
               "products": lambda: flat(ntk.kernel(obj, X, method="products")),
               "loop": lambda: autograd_loop(model, X),
               "func": lambda: flat(func_recipe(model, X))}
        if m * 10 * obj.space.n > 2e8:
            del fns["loop"]  # minutes: m C reverse passes over the whole batch
        best = timed(fns, args.repeats, device)
        ours_s, ours = best.pop("ours")
        row = {"hidden": hidden, "m": m, "n": obj.space.n, "ours_s": ours_s, "loop_s": None}
        scale = ours.abs().max().item()
        for name, (seconds, value) in best.items():
            row[f"{name}_s"] = seconds
        row["max_rel_diff"] = max((value.detach() - ours).abs().max().item() / scale for _, value in best.values())
        report["cases"].append(row)
        ratio = {k: ("-" if row[f"{k}_s"] is None else f"{row[f'{k}_s'] / ours_s:.2f}x")
                 for k in ("products", "loop", "func")}
        print(f"{hidden:>6} {m:>4} {obj.space.n:>7} {m * 10:>10} {ours_s:>8.3f} {ratio['products']:>9} "
              f"{ratio['loop']:>8} {ratio['func']:>8} {row['max_rel_diff']:>9.1e}", flush=True)
    benchlib.write(report, args.out, "bench_ntk.json")


if __name__ == "__main__":
    main()
