"""Benchmark: Hessians of transformers, side by side with PyHessian, hessian-eigenthings and a hand-written double
backward, on the built-in tiny-gpt and a GPT-2 built from a config (Hugging Face, its default sdpa attention).

For each model, on one batch of token windows (the same batch for every method), in one run:
  1. the cost of one HVP: landscape's cached mode, a hand-written cached double backward (the gradient graph kept,
     one torch.autograd.grad per product), PyHessian's product and hessian-eigenthings' product, each over the
     time of one gradient; the peers get eager attention by hand, as their documentation says (GPT-2 reloaded with
     attn_implementation="eager"; tiny-gpt, which has no eager path, inside sdpa_kernel(MATH));
  2. the top 5 eigenvalues: products, seconds and the largest relative error against a tight reference
     (landscape, tol 1e-7), for landscape (Lanczos), PyHessian (power iteration with deflation) and
     hessian-eigenthings (Lanczos, k = 5), each at its defaults and at the cheapest of a few settings that reaches
     1e-4 (PyHessian's tightened run only on CUDA and for tiny-gpt: hundreds of products of a 3.4M model). The
     peers' defaults look for the largest |eigenvalue|: on an indefinite Hessian (the random GPT-2) that returns
     negative ones; hessian-eigenthings is then also asked for the largest algebraically (which="LA");
  3. a 21 x 21 scan (filter-normalized directions): landscape's points per second against a plain torch loop
     (vector_to_parameters, forward, .item()), and the largest relative difference between the two.

    python scripts/bench_transformers.py [--device cuda] [--repeats 7] [--out DIR]

Peers: ``pip install --no-deps hessian-eigenthings`` (1.0.0a5 is what PyPI has) and PyHessian 0.1 (a dev
dependency). Prints tables and writes DIR/bench_transformers.json (default out/).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time

import benchlib
import torch
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import landscape
from landscape.language import causal_lm_loss
from landscape.scans import directions

SIZES = {"cpu": {"gpt2": dict(n_embd=256, n_layer=4, n_head=4, vocab_size=1000), "sequences": 16, "context": 64},
         "cuda": {"gpt2": dict(n_embd=256, n_layer=4, n_head=4, vocab_size=1000), "sequences": 64, "context": 128}}


class Logits(torch.nn.Module):
    """``model(input_ids) -> logits``: the (inputs, targets) form PyHessian calls."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).logits


def shifted_ce(logits, labels):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))


def models(device, sizes):
    """(name, model, eager copy for the peers or None, batch) for tiny-gpt and the GPT-2 config."""
    import transformers

    transformers.logging.set_verbosity_error()
    tiny = landscape.load("tiny-gpt", examples=sizes["sequences"], steps=600)
    batch = {k: v[: sizes["sequences"]].to(device) for k, v in tiny.data.items()}
    yield "tiny-gpt", tiny.model.to(device), None, batch
    config = transformers.GPT2Config(n_positions=sizes["context"], bos_token_id=0, eos_token_id=0, **sizes["gpt2"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        gpt2 = transformers.GPT2LMHeadModel(config).to(device).eval()
    eager = transformers.GPT2LMHeadModel._from_config(config, attn_implementation="eager").to(device).eval()
    eager.load_state_dict(gpt2.state_dict())
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (sizes["sequences"], sizes["context"]), generator=g).to(device)
    yield "gpt2", gpt2, eager, {"input_ids": ids, "labels": ids.clone()}


def peer_kernel(eager):
    """What the peers run in: the model's eager copy as it is, or, without one, the math attention kernel by hand."""
    return contextlib.nullcontext if eager is not None else (lambda: sdpa_kernel(SDPBackend.MATH))


def hvp_costs(name, model, eager, batch, device, repeats) -> dict:
    """Seconds of one gradient and one HVP per method; the products' agreement."""
    from hessian_eigenthings import HessianOperator
    from pyhessian import hessian as PyHessian

    obj = landscape.Objective(model, causal_lm_loss, batch, hvp_mode="cached")
    peer_model = eager if eager is not None else model
    math_kernel = peer_kernel(eager)
    v = torch.randn(obj.space.n, generator=torch.Generator().manual_seed(2)).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    pieces = [part.view_as(p) for part, p in zip(v.split([p.numel() for p in params]), params)]
    with sdpa_kernel(SDPBackend.MATH):
        loss = causal_lm_loss(model(**batch), batch)
        hand_grads = torch.autograd.grad(loss, params, create_graph=True)

    def hand_hvp():
        return torch.cat([h.reshape(-1) for h in torch.autograd.grad(hand_grads, params, pieces, retain_graph=True)])

    with math_kernel():
        peer = PyHessian(Logits(peer_model), shifted_ce, data=(batch["input_ids"], batch["labels"]),
                         cuda=device.type == "cuda")
        eigenthings = HessianOperator(peer_model, [batch], lambda m, b: m(**b).loss)
    from pyhessian.utils import hessian_vector_product

    def pyhessian_hvp():
        with math_kernel():
            return torch.cat([h.reshape(-1) for h in hessian_vector_product(peer.gradsH, peer.params, pieces)])

    def eigenthings_hvp():
        with math_kernel():
            return eigenthings.matvec(v)

    obj.hvp(v)  # builds the cached graph
    items = {"gradient (landscape)": lambda: obj.grad(), "HVP cached (landscape)": lambda: obj.hvp(v),
             "HVP, hand-written double backward": hand_hvp, "PyHessian HVP": pyhessian_hvp,
             "hessian-eigenthings HVP": eigenthings_hvp}
    seconds = benchlib.median_times(items, device, repeats)
    ref = hand_hvp()
    agree = {label: ((fn() - ref).norm() / ref.norm()).item() for label, fn in list(items.items())[1:]}
    grad = seconds["gradient (landscape)"]
    return {"parameters": obj.space.n, "tokens": obj.n_examples, "seconds": seconds,
            "x gradient": {k: t / grad for k, t in seconds.items()},
            "ours / hand-written": seconds["HVP cached (landscape)"] / seconds["HVP, hand-written double backward"],
            "max rel. difference from the hand-written product": max(agree.values())}


class Counted:
    """Counts the products an operator's matvec makes."""

    def __init__(self, fn):
        self.fn, self.count = fn, 0

    def __call__(self, *args, **kwargs):
        self.count += 1
        return self.fn(*args, **kwargs)


def top5(name, model, eager, batch, device, tight_pyhessian: bool) -> list[dict]:
    """Top-5 eigenvalues per method: products, seconds, largest relative error against a tight Lanczos run; each
    method at its defaults and at the cheapest of a few settings that reaches 1e-4 (``reached``)."""
    import hessian_eigenthings
    from hessian_eigenthings import HessianOperator
    from pyhessian import hessian as PyHessian

    obj = landscape.Objective(model, causal_lm_loss, batch)
    reference = landscape.eigenvalues(landscape.hessian(obj), k=5, tol=1e-7).eigenvalues
    rows = []

    def row(who, setting, run) -> float:
        start = time.perf_counter()
        values, products = run()
        values = sorted(values, reverse=True)[:5]
        error = max(abs(a - b) / abs(b) for a, b in zip(values, reference))
        rows.append({"who": who, "setting": setting, "products": products, "seconds": time.perf_counter() - start,
                     "max rel. error": error, "values": values})
        return error

    def ours(tol):
        found = landscape.eigenvalues(landscape.hessian(obj), k=5, tol=tol)
        return found.eigenvalues.tolist(), found.n_matvecs

    row("landscape", "defaults (tol 1e-6)", lambda: ours(1e-6))
    for tol in (1e-1, 3e-2, 1e-2, 1e-3, 1e-4):
        if row("landscape", f"tol {tol:g}", lambda: ours(tol)) <= 1e-4:
            break
    peer_model = eager if eager is not None else model
    pyhessian_module = sys.modules[PyHessian.__module__]  # pyhessian.hessian: the package's name is the class

    def pyhessian(**settings):
        counted = Counted(pyhessian_module.hessian_vector_product)
        pyhessian_module.hessian_vector_product = counted
        try:
            peer_model.zero_grad(set_to_none=True)  # PyHessian adds its gradient to .grad: a second one doubles H
            with peer_kernel(eager)():
                peer = PyHessian(Logits(peer_model), shifted_ce, data=(batch["input_ids"], batch["labels"]),
                                 cuda=device.type == "cuda")
                values, _ = peer.eigenvalues(top_n=5, **settings)
            return values, counted.count
        finally:
            pyhessian_module.hessian_vector_product = counted.fn
            peer_model.zero_grad(set_to_none=True)

    row("PyHessian (power iteration, deflation)", "defaults (maxIter 100, tol 1e-3)", pyhessian)
    if tight_pyhessian:
        row("PyHessian (power iteration, deflation)", "maxIter 300, tol 1e-6", lambda: pyhessian(maxIter=300, tol=1e-6))

    def eigenthings(**settings):
        with peer_kernel(eager)():
            operator = HessianOperator(peer_model, [batch], lambda m, b: m(**b).loss)
            operator.matvec = Counted(operator.matvec)
            found = hessian_eigenthings.lanczos(operator, k=5, seed=0, **settings)
        return found.eigenvalues.tolist(), operator.matvec.count

    row("hessian-eigenthings (Lanczos)", "defaults (max_iter 2k, which LM)", eigenthings)
    for steps in (15, 20, 25, 30, 40, 60):  # the largest algebraically, as landscape's "largest", reorthogonalized
        setting = f"max_iter {steps}, which LA, reorthogonalize"
        run = lambda: eigenthings(max_iter=steps, which="LA", reorthogonalize=True)  # noqa: E731
        if row("hessian-eigenthings (Lanczos)", setting, run) <= 1e-4:
            break
    return rows


def scan_speed(name, model, batch, device) -> dict:
    """A 21 x 21 scan: landscape's points/s and a plain torch loop's, and their largest relative difference."""
    obj = landscape.Objective(model, causal_lm_loss, batch)
    d = directions.random(obj, k=2, norm="filter", seed=0)
    start = time.perf_counter()
    ours = landscape.scan(obj, d, ["-1:1:21", "-1:1:21"], progress=False)
    our_rate = 441 / (time.perf_counter() - start)
    plain = copy.deepcopy(model).requires_grad_(False)
    params = [p for p in plain.parameters()]
    values = []
    start = time.perf_counter()
    with torch.no_grad():
        for x in ours.axes[0]:
            for y in ours.axes[1]:
                torch.nn.utils.vector_to_parameters(obj.theta0 + x * d.vectors[0] + y * d.vectors[1], params)
                values.append(causal_lm_loss(plain(**batch), batch).item())
    plain_rate = 441 / (time.perf_counter() - start)
    ref = torch.tensor(values, dtype=torch.float64).reshape(21, 21).numpy()
    return {"landscape points/s": our_rate, "plain loop points/s": plain_rate, "x plain": our_rate / plain_rate,
            "strategy": ours.strategy, "max rel. difference": float(abs(ours.values["loss"] - ref).max() / abs(ref).max())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="out")
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = SIZES[device.type]
    report = benchlib.header(device, sizes=sizes, problems={})
    for name, model, eager, batch in models(device, sizes):
        print(f"\n{name}: one batch of {batch['input_ids'].shape[0]} x {batch['input_ids'].shape[1]} tokens on {device}")
        costs = hvp_costs(name, model, eager, batch, device, args.repeats)
        print(f"  {costs['parameters']:,} parameters; median of {args.repeats}")
        for label, t in costs["seconds"].items():
            print(f"  {label:<40} {1000 * t:10.2f} ms   {costs['x gradient'][label]:5.2f} x gradient")
        print(f"  landscape's HVP is {costs['ours / hand-written']:.2f} x the hand-written one; products agree to "
              f"{costs['max rel. difference from the hand-written product']:.1e}")
        rows = top5(name, model, eager, batch, device, tight_pyhessian=device.type == "cuda" or name == "tiny-gpt")
        print("  top 5 eigenvalues (largest relative error against landscape at tol 1e-7):")
        for r in rows:
            print(f"    {r['who']:<40} {r['setting']:<42} {r['products']:>5} products {r['seconds']:8.2f} s  "
                  f"error {r['max rel. error']:.1e}")
        scan = scan_speed(name, model, batch, device)
        print(f"  21 x 21 scan: {scan['landscape points/s']:.1f} points/s ({scan['strategy']}), plain loop "
              f"{scan['plain loop points/s']:.1f} ({scan['x plain']:.2f} x); max rel. difference "
              f"{scan['max rel. difference']:.1e}")
        report["problems"][name] = {"hvp": costs, "top5": rows, "scan": scan}
    benchlib.write(report, args.out, "bench_transformers.json")


if __name__ == "__main__":
    main()
