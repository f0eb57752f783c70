"""Independent references for the tests, and the small float64 models they run on.

Nothing here uses landscape: dense Hessians are built on the module's own parameters
with plain ``torch.autograd``, reverse over reverse, one row per gradient entry, and
checked against central differences of the gradient (``torch.func.hessian`` is not
used: it is ~2% wrong on LayerNorm in torch 2.13).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _params(model: nn.Module, names=None) -> list[nn.Parameter]:
    return [p for name, p in model.named_parameters() if names is None or name in names]


def flat_grad(model, loss_fn, X, y, names=None, create_graph=False) -> torch.Tensor:
    params = _params(model, names)
    loss = loss_fn(model(X), y)
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


def dense_hessian(model, loss_fn, X, y, names=None) -> torch.Tensor:
    """[n, n] Hessian of loss_fn(model(X), y) in the parameters ``names`` (default all), row by row."""
    params = _params(model, names)
    g = flat_grad(model, loss_fn, X, y, names, create_graph=True)
    rows = []
    for i in range(g.numel()):
        if not g[i].requires_grad:
            rows.append(torch.zeros_like(g))
            continue
        parts = torch.autograd.grad(g[i], params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if d is None else d).reshape(-1) for p, d in zip(params, parts)]))
    return torch.stack(rows)


def fd_hessian(model, loss_fn, X, y, names=None, h=1e-6) -> torch.Tensor:
    """[n, n] central differences of the gradient, perturbing each parameter entry in place."""
    params = _params(model, names)
    cols = []
    for p in params:
        flat = p.data.view(-1)
        for j in range(flat.numel()):
            old = flat[j].item()
            flat[j] = old + h
            plus = flat_grad(model, loss_fn, X, y, names)
            flat[j] = old - h
            minus = flat_grad(model, loss_fn, X, y, names)
            flat[j] = old
            cols.append((plus - minus) / (2 * h))
    return torch.stack(cols, dim=1)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# -- small float64 models, each with data; built from a fixed seed ------------------------


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Linear(4, 3)
        self.unused = nn.Linear(4, 3)

    def forward(self, x):
        return torch.tanh(self.used(x))


class WithBuffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 5), nn.Linear(5, 2)
        self.register_buffer("scale", torch.tensor([0.5, 2.0, -1.0, 1.5]))
        self.register_buffer("shift", torch.tensor([0.1, -0.2, 0.3, 0.0]))

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x * self.scale + self.shift)))


def make(name: str, n_examples: int = 23):
    """(model, loss_fn, X, y) for one of MODELS, float64, eval mode, deterministic."""
    g = torch.Generator().manual_seed(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        loss_fn = F.cross_entropy
        X = torch.randn(n_examples, 4, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (n_examples,), generator=g)
        if name == "mlp":
            model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
        elif name == "cnn-bn":
            model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Tanh(), nn.Flatten(), nn.Linear(32, 3))
            X = torch.randn(n_examples, 1, 6, 6, generator=g, dtype=torch.float64)
        elif name == "layernorm":
            model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3))
        elif name == "unused":
            model = WithUnused()
        elif name == "buffers":
            model = WithBuffers()
            loss_fn = F.mse_loss
            y = torch.randn(n_examples, 2, generator=g, dtype=torch.float64)
        else:
            raise KeyError(name)
        model = model.double().eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):  # running statistics far from (0, 1), so eval mode matters
                    m.running_mean.uniform_(-1, 1, generator=g)
                    m.running_var.uniform_(0.5, 2, generator=g)
                if isinstance(m, nn.LayerNorm):
                    m.weight.uniform_(0.5, 1.5, generator=g)
                    m.bias.uniform_(-0.5, 0.5, generator=g)
    return model, loss_fn, X, y


MODELS = ("mlp", "cnn-bn", "layernorm", "unused", "buffers")
