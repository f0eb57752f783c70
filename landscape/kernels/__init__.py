"""Kernels of wide networks: the empirical neural tangent kernel and the NNGP limit."""
