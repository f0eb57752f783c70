"""A problem file: your model, its data and its loss, for every `landscape` command.

    python examples/my_model.py --out run/   # two seeds: run/seed0.pt, run/seed1.pt; seed 0's run in run/trajectory/
    landscape info --problem examples/my_model.py:make_problem --checkpoint run/seed0.pt
    landscape scan --problem examples/my_model.py:make_problem --checkpoint run/seed0.pt \\
        --directions pca --trajectory run/trajectory/ --grid -1:1:41 --grid -1:1:41 --out pca/
    landscape connect --problem examples/my_model.py:make_problem --a run/seed0.pt --b run/seed1.pt --align --out connect/

``make_problem`` returns ``(model, loss_fn, data)``: the model (its parameters are the landscape's
coordinates), ``loss_fn(outputs, targets)`` giving the mean loss of a batch, and the data as an
``(X, y)`` pair of tensors (or numpy arrays, or a list of batches, or a DataLoader). Its keyword arguments
come from ``--problem-arg KEY=VALUE``. Checkpoints are the model's ``state_dict()`` saved with
``torch.save``; every command reads them with ``weights_only=True``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn


class Net(nn.Module):                        # parameters body.0.weight, body.0.bias, fc.weight, fc.bias
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.Tanh())
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.fc(self.body(x))


def make_problem(hidden: int = 32, seed: int = 0):
    """The untrained model (--checkpoint gives its weights), the loss, the data: 1,797 digits as (X, y)."""
    torch.manual_seed(seed)
    X, y = load_digits(return_X_y=True)
    return Net(hidden), nn.CrossEntropyLoss(), (torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="run", help="folder for the checkpoints (default run/)")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    out = Path(args.out)
    (out / "trajectory").mkdir(parents=True, exist_ok=True)
    for seed in (0, 1):
        model, loss_fn, (X, y) = make_problem(seed=seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        for epoch in range(1, args.epochs + 1):
            for batch in torch.randperm(len(X)).split(128):
                optimizer.zero_grad()
                loss_fn(model(X[batch]), y[batch]).backward()
                optimizer.step()
            if seed == 0 and epoch % 5 == 0:  # seed 0's training run, for PCA directions
                torch.save(model.state_dict(), out / "trajectory" / f"epoch{epoch:02d}.pt")
        with torch.no_grad():
            loss = loss_fn(model(X), y).item()
        torch.save(model.state_dict(), out / f"seed{seed}.pt")
        print(f"seed {seed}: loss {loss:.4f} after {args.epochs} epochs, saved {out / f'seed{seed}.pt'}")


if __name__ == "__main__":
    main()
