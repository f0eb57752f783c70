"""Transformers: a Hugging Face GPT-2 with its default attention, torch's nn.TransformerEncoder and a hand-written
attention model, against references built here with plain torch.

The dense float64 Hessians are reverse-over-reverse rows of the loss written out by hand (the mean over label
tokens of a batch list with uneven padding), under the math attention kernel (the fused ones have no double
backward), and checked against central differences of gradients taken on torch's default kernels.
"""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import landscape
from landscape.checkpoints import load_checkpoint
from landscape.core.errors import UserCodeError
from landscape.core.hvp import MODES
from landscape.language import TinyGPT, causal_lm_loss
from landscape.paths import curves
from landscape.scans import directions

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()


# -- the models and their data ------------------------------------------------------------------------------


def padded(generator, vocab: int, rows: int, length: int, lengths) -> dict:
    """A dict batch of token ids whose rows end in padding after ``lengths`` (labels -100 there)."""
    ids = torch.randint(0, vocab, (rows, length), generator=generator)
    mask = (torch.arange(length)[None] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.where(mask.bool(), ids, -100)}


def gpt2():
    """A 1-layer GPT-2 from a config (sdpa attention, the default), float64, and two unevenly padded batches."""
    config = transformers.GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2, bos_token_id=0,
                                     eos_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(config).double().eval()
    g = torch.Generator().manual_seed(1)
    return model, [padded(g, 11, 2, 6, [6, 3]), padded(g, 11, 3, 5, [5, 5, 2])]


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(1))


def encoder():
    """torch's nn.TransformerEncoder (batch_first, eval), float64, on an (X, y) pair."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Encoder().double().eval()
    g = torch.Generator().manual_seed(2)
    return model, (torch.randn(5, 6, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (5,), generator=g))


def tiny():
    """The built-in language problem's hand-written attention model at toy size, float64, padded dict batches."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TinyGPT(context=8, width=8, heads=2, layers=1).double().eval()
    g = torch.Generator().manual_seed(3)
    return model, [{k: v for k, v in padded(g, 97, 2, 7, [7, 4]).items() if k != "attention_mask"},
                   {k: v for k, v in padded(g, 97, 3, 6, [6, 6, 3]).items() if k != "attention_mask"}]


# -- references, plain torch ----------------------------------------------------------------------------------


def token_mean_loss(model, batches) -> torch.Tensor:
    """The mean over every label token of the data (labels[:, 1:] != -100) of the next-token cross-entropy."""
    total, count = 0.0, 0
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        total = total + F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                                        reduction="sum")
        count += int((labels != -100).sum())
    return total / count


def reference_loss(model, data):
    if isinstance(data, tuple):
        return F.cross_entropy(model(data[0]), data[1])
    return token_mean_loss(model, data)


def params_of(model, names):
    return [p for name, p in model.named_parameters() if name in names]


def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def reference_grad(model, data, names, create_graph=False):
    params = params_of(model, names)
    return flat(torch.autograd.grad(reference_loss(model, data), params, create_graph=create_graph))


def dense_hessian(model, data, names) -> torch.Tensor:
    """Rows d(grad_i)/d theta by plain reverse over reverse, under the math attention kernel."""
    params = params_of(model, names)
    with sdpa_kernel(SDPBackend.MATH):
        g = reference_grad(model, data, names, create_graph=True)
        return torch.stack([flat(torch.autograd.grad(g[i], params, retain_graph=True)) for i in range(g.numel())])


def fd_product(model, data, names, v, h=1e-5) -> torch.Tensor:
    """(grad(theta + h v) - grad(theta - h v)) / 2h, with the gradients on torch's default (fused) kernels."""
    params = params_of(model, names)
    saved = [p.detach().clone() for p in params]
    out = []
    for sign in (1, -1):
        with torch.no_grad():
            for p, p0, part in zip(params, saved, v.split([p.numel() for p in params])):
                p.copy_(p0 + sign * h * part.view_as(p))
        out.append(reference_grad(model, data, names))
    with torch.no_grad():
        for p, p0 in zip(params, saved):
            p.copy_(p0)
    return (out[0] - out[1]) / (2 * h)


CASES = {"gpt2": (gpt2, None), "encoder": (encoder, None), "tiny": (tiny, "blocks.*")}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    """(name, model, data, objective, parameter names, dense Hessian checked by finite differences)."""
    build, params = CASES[request.param]
    model, data = build()
    loss_fn = F.cross_entropy if isinstance(data, tuple) else causal_lm_loss
    obj = landscape.Objective(model, loss_fn, data, params=params)
    names = list(obj.space.names)
    H = dense_hessian(model, data, names)
    g = torch.Generator().manual_seed(4)
    for _ in range(2):  # the reference against central differences of the fused kernels' gradients
        v = torch.randn(H.shape[0], generator=g, dtype=torch.float64)
        v /= v.norm()
        fd = fd_product(model, data, names, v)
        assert ((H @ v - fd).norm() / fd.norm()).item() < 1e-7
    return request.param, model, data, obj, names, H


# -- the tests ------------------------------------------------------------------------------------------------


def test_the_loss_is_the_mean_over_label_tokens(case):
    name, model, data, obj, _, _ = case
    with torch.no_grad():
        assert obj.loss().item() == pytest.approx(reference_loss(model, data).item(), rel=1e-12)
    if name != "encoder":
        tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in data)
        assert obj.n_examples == tokens


@pytest.mark.parametrize("mode", MODES)
def test_every_hvp_mode_matches_the_dense_hessian(case, mode):
    _, _, _, obj, _, H = case
    V = torch.randn(3, H.shape[0], generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    HV = obj.hvp(V, mode=mode)
    assert ((HV - V @ H).norm() / (V @ H).norm()).item() < 1e-10


def test_top_eigenvalues_match_eigh_and_record_their_path(case):
    _, _, _, obj, _, H = case
    top = landscape.eigenvalues(landscape.hessian(obj), k=3, tol=1e-10)
    exact = np.linalg.eigh(H.numpy())[0][::-1][:3]
    assert np.allclose(top.eigenvalues, exact, rtol=1e-8, atol=1e-10 * abs(exact[0]))
    assert top.settings["operator"]["derivative_path"] == "sdpa-math"


def test_check_hvp_runs_the_products_path(case):
    _, _, _, obj, _, _ = case
    check = obj.to(dtype=torch.float32).check_hvp(n_vectors=1)
    assert check.ok and check.derivative_path == "sdpa-math"


def logits_of(model, data, batch):
    return model(batch[0]) if isinstance(data, tuple) else model(**batch).logits


def test_ggn_and_fisher_match_dense_references(case):
    name, model, data, obj, names, _ = case
    params = params_of(model, names)
    batches = [data] if isinstance(data, tuple) else data
    loss_of = (lambda z, b: F.cross_entropy(z, b[1])) if isinstance(data, tuple) else causal_lm_loss
    weights = [len(data[1])] if isinstance(data, tuple) else [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    G = torch.zeros(len(flat(params)), len(flat(params)), dtype=torch.float64)
    Fisher = torch.zeros_like(G)
    for batch, w in zip(batches, weights):
        with sdpa_kernel(SDPBackend.MATH):
            z = logits_of(model, data, batch)
            J = torch.stack([flat(torch.autograd.grad(z.reshape(-1)[i], params, retain_graph=True))
                             for i in range(z.numel())])  # [outputs, n]
        Hz = torch.autograd.functional.hessian(lambda zz: loss_of(_wrap(zz.view_as(z), data), batch),
                                               z.detach().reshape(-1))
        G += w * J.T @ Hz @ J
        rows = len(batch[1]) if isinstance(data, tuple) else len(batch["input_ids"])
        per_example = []
        for i in range(rows):
            one = ((batch[0][i:i + 1], batch[1][i:i + 1]) if isinstance(data, tuple)
                   else {k: v[i:i + 1] for k, v in batch.items()})
            per_example.append(flat(torch.autograd.grad(loss_of(_wrap(logits_of(model, data, one), data), one), params)))
        P = torch.stack(per_example)
        Fisher += w * P.T @ P / rows
    G, Fisher = G / sum(weights), Fisher / sum(weights)
    V = torch.randn(2, G.shape[0], generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert ((landscape.ggn(obj) @ V - V @ G).norm() / (V @ G).norm()).item() < 1e-10
    fisher = landscape.fisher(obj)
    assert ((fisher @ V - V @ Fisher).norm() / (V @ Fisher).norm()).item() < 1e-10
    if name == "gpt2":
        assert fisher.settings["per_example"] == "loop"  # vmap cannot take a Hugging Face model


def _wrap(z, data):
    """Logits as the loss functions take them: a tensor for the encoder, an object with .logits for the LMs."""
    return z if isinstance(data, tuple) else type("Outputs", (), {"logits": z})()


def test_a_scan_is_the_loss_at_each_point(case):
    name, model, data, obj, names, _ = case
    d = directions.random(obj, k=2, norm="none", include_1d=True, seed=0)
    result = landscape.scan(obj, d, ["-0.5:0.5:3", "-1:1:3"], progress=False)
    copy_ = copy.deepcopy(model)
    params = params_of(copy_, names)
    for i, x in enumerate(result.axes[0]):
        for j, y in enumerate(result.axes[1]):
            theta = obj.theta0 + x * d.vectors[0] + y * d.vectors[1]
            with torch.no_grad():
                for p, part in zip(params, obj.space.unflatten(theta).values()):
                    p.copy_(part)
                assert result.values["loss"][i, j] == pytest.approx(reference_loss(copy_, data).item(), rel=1e-12)


def test_a_line_between_two_checkpoints(tmp_path):
    model, data = gpt2()
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7), dtype=p.dtype))
    model.save_pretrained(tmp_path / "a")  # safetensors, lm_head tied to the embedding: saved once
    torch.save(other.state_dict(), tmp_path / "b.pt")
    a = load_checkpoint(copy.deepcopy(other), tmp_path / "a")
    b = load_checkpoint(copy.deepcopy(model), tmp_path / "b.pt")
    assert a.lm_head.weight.data_ptr() == a.transformer.wte.weight.data_ptr()  # still tied
    obj = landscape.Objective(a, causal_lm_loss, data)
    line = curves.interpolate(obj, a, b, num=3, progress=False)
    for t, value in zip(line.t, line.values["loss"]):
        mixed = copy.deepcopy(a)
        with torch.no_grad():
            for p, pa, pb in zip(mixed.parameters(), a.parameters(), b.parameters()):
                p.copy_(torch.lerp(pa, pb, t))
            assert value == pytest.approx(token_mean_loss(mixed, data).item(), rel=1e-12)


def test_the_models_own_loss_weighs_batches_by_label_tokens():
    model, data = gpt2()
    obj = landscape.Objective(model, None, data)  # outputs.loss, computed by the model (in float32 there)
    with torch.no_grad():
        assert obj.loss().item() == pytest.approx(token_mean_loss(model, data).item(), rel=1e-6)
        by_rows = landscape.Objective(model, None, data, weights="examples").loss().item()
        means = [token_mean_loss(model, [batch]).item() for batch in data]
    assert by_rows == pytest.approx((2 * means[0] + 3 * means[1]) / 5, rel=1e-6)  # what weighting by rows gives
    assert abs(by_rows - obj.loss().item()) > 1e-4
    check = obj.to(dtype=torch.float32).check_hvp(n_vectors=1)
    assert check.ok and check.dtype == "float32"
    with pytest.raises(ValueError, match="the GGN needs the loss as a function of the model's outputs"):
        landscape.ggn(obj) @ torch.zeros(obj.space.n, dtype=torch.float64)


def test_checkpoints_in_safetensors_and_shards_with_a_report_key_by_key(tmp_path):
    from safetensors.torch import save_file

    model, _ = gpt2()
    fresh = lambda: transformers.GPT2LMHeadModel(model.config).double()  # noqa: E731
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"},
              tmp_path / "weights.safetensors")
    loaded = load_checkpoint(fresh(), tmp_path / "weights.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    model.save_pretrained(tmp_path / "sharded", max_shard_size="2KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert torch.equal(load_checkpoint(fresh(), tmp_path / "sharded").transformer.h[0].mlp.c_fc.weight,
                       model.transformer.h[0].mlp.c_fc.weight)
    wider = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=11, n_positions=8, n_embd=16, n_layer=1,
                                                                 n_head=2))
    with pytest.raises(ValueError, match=r"does not fit the model: transformer.wte.weight has shape \(11, 8\) in the "
                                         r"checkpoint but \(11, 16\) in the model"):
        load_checkpoint(wider, tmp_path / "weights.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds none of model.safetensors"):
        load_checkpoint(fresh(), tmp_path / "empty")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="is not a safetensors file"):
        load_checkpoint(fresh(), tmp_path / "bad.safetensors")


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x, scale):
        return self.fc(x) * scale


def test_errors_a_transformer_user_meets_are_one_line_naming_the_culprit():
    model, data = gpt2()
    plain = nn.Linear(4, 3).double()
    X = torch.randn(5, 4, dtype=torch.float64)
    cases = [
        (landscape.Objective(plain, None, [{"input": X}]), "the model returned Tensor without a .loss and there is no "
                                                       "loss_fn: put labels in the batch, or give loss_fn"),
        (landscape.Objective(TwoInputs().double(), F.cross_entropy, (X, torch.zeros(5, dtype=torch.long))),
         "the model failed on its data: TypeError: .*missing 1 required positional argument: 'scale'"),
        (landscape.Objective(tiny()[0], None, [{**tiny()[1][0], "pixel_values": torch.zeros(2, 3)}]),
         "the model failed on its data: TypeError: .*unexpected keyword argument 'pixel_values'"),
        (landscape.Objective(model, lambda outputs, batch: outputs.logits.mean(-1), data),
         r"loss_fn must return a scalar \(the batch mean\), got \(2, 6\)"),
        (landscape.Objective(model, lambda outputs, batch: batch["targets"], data), "loss_fn failed: KeyError: 'targets'"),
    ]
    for obj, message in cases:
        with pytest.raises(ValueError, match=message) as raised:
            obj.loss()
        assert "\n" not in str(raised.value)
    assert isinstance(raised.value, UserCodeError) and isinstance(raised.value.__cause__, KeyError)


def test_shards_of_a_dict_of_tensors_weigh_like_the_whole():
    from landscape.core.data_parallel import shard
    from landscape.core.distributed import World

    model, data = tiny()
    whole = {k: torch.cat([b[k][:, :6] for b in data]) for k in data[0]}  # one dict of 5 sequences
    full = landscape.Objective(model, causal_lm_loss, whole)
    parts = [landscape.Objective(model, causal_lm_loss, shard(whole, World(rank=r, size=2))) for r in range(2)]
    assert [p.data["input_ids"].shape[0] for p in parts] == [3, 2]
    with torch.no_grad():
        pooled = sum(p.loss() * p.n_examples for p in parts) / sum(p.n_examples for p in parts)
        assert pooled.item() == pytest.approx(full.loss().item(), rel=1e-12)
        assert full.loss().item() == pytest.approx(token_mean_loss(model, [whole]).item(), rel=1e-12)


def test_dynamics_take_dict_batches():
    from dynamics.descent import gradient_descent
    from dynamics.edge_of_stability import SharpnessTracker

    model, data = tiny()
    obj = landscape.Objective(model, causal_lm_loss, data, params="blocks.*")
    run = gradient_descent(obj, 0.05, 2, tracker=SharpnessTracker(obj, lr=0.05, every=2), progress=False)
    plain = copy.deepcopy(model)
    params = params_of(plain, list(obj.space.names))
    for step in range(3):  # plain full-batch gradient descent on the hand-written token mean
        with torch.no_grad():
            assert run.loss[step] == pytest.approx(token_mean_loss(plain, data).item(), rel=1e-12)
        grads = torch.autograd.grad(token_mean_loss(plain, data), params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(0.05 * g)
    H = dense_hessian(model, data, list(obj.space.names))
    assert run.sharpness.sharpness[0, 0] == pytest.approx(np.linalg.eigvalsh(H.numpy())[-1], rel=1e-6)


def test_the_built_in_language_problem_learns_its_text():
    problem = landscape.load("tiny-gpt", steps=150, examples=16)
    unigram = float(problem.description.split("unigram baseline ")[1].split()[0])
    loss = problem.objective().loss().item()
    assert math.isfinite(loss) and loss < unigram - 0.5  # 150 steps: well below the context-free model
    assert problem.metrics and problem.test_data["input_ids"].shape == (16, 64)
