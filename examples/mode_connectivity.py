"""Mode connectivity: two networks trained from different seeds, and the paths between them.

The straight line between two minima climbs a barrier. Part of it is an artefact of how the
hidden units happen to be numbered: permuting them gives the same function at another point
of weight space. Weight matching (Ainsworth et al. 2022) permutes the second network's units
to match the first's, and the barrier on the line shrinks. A curve with one bend, trained so
that every point of it has a low loss (Garipov et al. 2018), joins the two with no barrier at
all. Last, BatchNorm: along a path between two CNNs the running statistics of the ends are
wrong for the points between them; recomputing them from the data changes the barrier.

    python examples/mode_connectivity.py [--out DIR] [--epochs N] [--points N]

Writes DIR/mode_connectivity_paths.png (the loss along each path), DIR/mode_connectivity_plane.png
(the loss in the plane of the curve, the curve on it) and prints a table of barriers.
"""

import argparse
from pathlib import Path

import torch

import landscape
from landscape.paths import curves
from landscape.paths.align import Alignment, structure, weight_matching
from landscape.scans import directions
from viz.plots import contour, path_losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples-out", help="where the figures go (default examples-out/)")
    parser.add_argument("--epochs", type=int, default=50, help="epochs of curve training (default 50)")
    parser.add_argument("--points", type=int, default=41, help="grid points per axis of the plane (default 41)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # two 64-32-10 tanh MLPs, 300 full-batch Adam steps each, from different random initialisations
    a, b = landscape.load("digits-mlp", seed=0), landscape.load("digits-mlp", seed=1)
    obj = a.objective()
    results = {}

    def row(label, result):
        results[label] = result
        print(f"{label:<36} {result.barrier_linear:>9.4f} {result.barrier_mean:>9.4f} {result.max_loss:>9.4f} "
              f"{result.values['accuracy'].min():>8.4f} {result.length:>8.2f}")

    print(f"ends: loss {obj.loss().item():.4f} (a), {b.objective().loss().item():.4f} (b)")
    print(f"{'path':<36} {'barrier':>9} {'(mean)':>9} {'max loss':>9} {'min acc':>8} {'length':>8}")
    row("line a -> b", curves.interpolate(obj, a.model, b.model, metrics=a.metrics, progress=False))

    # a copy of a with its hidden units shuffled: the same function, far away, and weight matching finds it back
    g = torch.Generator().manual_seed(7)
    probe = a.data[0][:8]  # the forward on a few images shows how the units connect
    groups = structure(a.model, probe)
    shuffled = Alignment({name: torch.randperm(size, generator=g) for name, size in groups.groups.items()},
                         groups).apply(a.model, probe)
    row("line a -> shuffled a", curves.interpolate(obj, a.model, shuffled, metrics=a.metrics, progress=False))
    found = weight_matching(a.model, shuffled, probe).apply(shuffled, probe)
    row("line a -> shuffled a, aligned", curves.interpolate(obj, a.model, found, metrics=a.metrics,
                                                                  progress=False))

    alignment = weight_matching(a.model, b.model, probe)
    aligned = alignment.apply(b.model, probe)
    row("line a -> b aligned", curves.interpolate(obj, a.model, aligned, metrics=a.metrics, progress=False))

    trained = {}
    for kind in ("bezier", "polychain"):
        start = curves.curve(obj, a.model, b.model, kind=kind)
        trained[kind] = curves.train_curve(obj, start, epochs=args.epochs, batch_size=128, progress=False)
        row(f"{kind} a -> b", curves.evaluate_curve(obj, trained[kind], metrics=a.metrics, progress=False))
    print(f"weight matching: {alignment.iterations} sweeps, {alignment.moved():.0%} of the units moved")

    # BatchNorm: two CNNs, their running statistics interpolated against recomputed at every point
    c, d = landscape.load("digits-cnn", seed=0), landscape.load("digits-cnn", seed=1)
    cnn = c.objective()
    for recompute in (False, True):
        result = curves.interpolate(cnn, c.model, d.model, num=13, metrics=c.metrics, recompute_bn=recompute,
                                          progress=False)
        row(f"cnn line, statistics {result.statistics}", result)

    figure = out / "mode_connectivity_paths.png"
    chosen = ["line a -> b", "line a -> b aligned", "bezier a -> b", "polychain a -> b"]
    path_losses({label: (results[label].t, results[label].values["loss"]) for label in chosen}, log=True,
          title="digits-mlp, two seeds: loss along the paths between them", path=figure)
    print(f"wrote {figure}")

    curve = trained["bezier"]
    plane = directions.plane(obj, curve.points[0], curve.points[1], curve.points[2])
    placed = directions.project(plane, curve(torch.linspace(0, 1, 61, dtype=torch.float64)))
    top = float(placed.coords[:, 1].max())
    grid = [(-0.25, 1.25, args.points), (-0.25 * max(1.0, top), top + 0.25 * max(1.0, top), args.points)]
    scan = landscape.scan(obj, plane, grid, progress=False)
    figure = out / "mode_connectivity_plane.png"
    contour(scan, trajectory=placed.coords, label="trained Bezier curve", path=figure,
            title="loss in the plane of the curve: a at (0, 0), b at (1, 0)")
    print(f"wrote {figure}")


if __name__ == "__main__":
    main()
