"""Rollouts: the sampler, its strategies, trajectories and the Ray rollout pool."""

from unmask.rollouts.generate import generate
from unmask.rollouts.pool import RolloutPool
from unmask.rollouts.trajectory import Trajectory

__all__ = ["RolloutPool", "Trajectory", "generate"]
