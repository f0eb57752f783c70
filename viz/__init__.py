"""Figures, VTK/ParaView export and offscreen rendering of :mod:`landscape` results.

See the open issues for what lands here.
"""
