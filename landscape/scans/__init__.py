"""The loss on grids around a model: directions, grid axes, the many-point evaluator, the scan and its store."""
