"""Curvature of the loss: the Hessian, GGN and Fisher operators, their spectra, and sharpness measures."""
