"""Diffusion processes: how a family corrupts text, what attends to what, what a training forward receives.

A family's ``process`` (``DiffusionLM.process``) is the one place samplers,
trajectories, caches and estimators ask about noise; none of them reads a mask
token id itself (docs/diffusion.md).
"""
