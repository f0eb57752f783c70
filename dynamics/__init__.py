"""Training as a dynamical system: gradient flow, Lyapunov spectra, edge of stability.

Built on :mod:`landscape`; see the open issues for what lands here.
"""
