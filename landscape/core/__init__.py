"""The core every analysis stands on: the objective and its parameter space, data handling, the HVP engine,
memory planning, data parallelism and the result helpers. Nothing here imports anything above it."""
