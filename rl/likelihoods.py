"""The likelihood estimators a recipe can name: ``ESTIMATORS[name](config, process, temperature)``.

Traits the parts' validation reads: ``record`` (needs the sampler's per-step record),
``keyed_by`` (its key is what the batch builder's items carry in ``TrainBatch.steps``: a
trained step, or a chunk of replayed steps),
``elbo`` (``Σ weight·ℓ`` is a sequence ELBO), ``upper`` (carries SPG's EUBO term),
``pair`` (each answer token scored exactly once over two complementary passes),
``needs`` (config fields it reads), ``uniform`` (scores uniform-noise rollouts, whose
sampler decisions are the scored items: ``[B, steps·canvas]``, read with ``loss_mask: scored``;
every other estimator corrupts a canvas with a mask token). Estimators themselves live in ``estimators`` and
``mc_estimators``; a new one is registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from unmask.diffusion.process import DiffusionProcess
from unmask.rl.estimators import (
    ElboEstimator,
    Estimator,
    OneStepEstimator,
    StepEstimator,
    TrajectoryEstimator,
)
from unmask.rl.mc_estimators import BlockEstimator, ExactCountEstimator
from unmask.rl.registry import Registry
from unmask.rl.renoise_replay import RenoiseReplayEstimator
from unmask.rl.tracerl import BlockReplayEstimator

ESTIMATORS: Registry[Callable[[Any, DiffusionProcess, float], Estimator]] = Registry("likelihood estimator")


@ESTIMATORS.register("one_step", needs=("p_mask",))
def _one_step(config: Any, process: DiffusionProcess, temperature: float) -> Estimator:
    return OneStepEstimator(process, p_mask=config.p_mask)


@ESTIMATORS.register("block_replay", record=True)
def _block_replay(config: Any, process: DiffusionProcess, temperature: float) -> Estimator:
    """TraceRL's replay of block-diffusion rollouts: step k of every block in one two-stream pass."""
    return BlockReplayEstimator(process, temperature=temperature or 1.0)


@ESTIMATORS.register("elbo", elbo=True, pair=True)
def _elbo(config: Any, process: DiffusionProcess, temperature: float) -> Estimator:
    return ElboEstimator(process, coupled=True)


@ESTIMATORS.register("trajectory", record=True, needs=("trajectory_steps",))
def _trajectory(config: Any, process: DiffusionProcess, temperature: float) -> Estimator:
    # greedy rollouts have no sampling distribution; score them at temperature 1
    return TrajectoryEstimator(process, temperature=temperature or 1.0, steps_per_row=config.trajectory_steps)


@ESTIMATORS.register("step", record=True, keyed_by="step")
def _step(config: Any, process: DiffusionProcess, temperature: float) -> Estimator:
    return StepEstimator(process, temperature=temperature or 1.0)


@ESTIMATORS.register("elbo_sample", elbo=True)
def _elbo_sample(config: Any, process: DiffusionProcess, temperature: float) -> Estimator:
    """BGPO's single-sample item: one masked pass over the answer up to its first EOS."""
    return ElboEstimator(process, answer_only=True)


@ESTIMATORS.register("block", elbo=True, upper=True, needs=("mc_samples", "mask_block_length", "p_mask", "eubo_beta"))
def _block(config: Any, process: DiffusionProcess, temperature: float) -> Estimator:
    c = config
    return BlockEstimator(
        process, samples=c.mc_samples, block_length=c.mask_block_length, p_mask=c.p_mask, beta=c.eubo_beta
    )


@ESTIMATORS.register("exact_count", elbo=True, needs=("mc_samples",))
def _exact_count(config: Any, process: DiffusionProcess, temperature: float) -> Estimator:
    return ExactCountEstimator(process, samples=config.mc_samples)


@ESTIMATORS.register("exact_count_pair", elbo=True, pair=True)
def _exact_count_pair(config: Any, process: DiffusionProcess, temperature: float) -> Estimator:
    """One exact-count draw and its complement: an item of GDSD's ``m`` separate draws."""
    return ExactCountEstimator(process, samples=1)


@ESTIMATORS.register("renoise_replay", record=True, uniform=True)
def _renoise_replay(config: Any, process: DiffusionProcess, temperature: float) -> Estimator:
    """DiffusionGemma: every recorded transition rescored (``trajectory_steps`` of them per row, when set)."""
    return RenoiseReplayEstimator(process, steps_per_row=getattr(config, "trajectory_steps", None))


@ESTIMATORS.register("renoise_exact", record=True, uniform=True)
def _renoise_exact(config: Any, process: DiffusionProcess, temperature: float) -> Estimator:
    """DiffusionGemma, slow and exact in the SC: θ's own SC inputs recomputed step by step."""
    return RenoiseReplayEstimator(process, steps_per_row=getattr(config, "trajectory_steps", None), exact_sc=True)


@ESTIMATORS.register("renoise_step", record=True, keyed_by="step", uniform=True)
def _renoise_step(config: Any, process: DiffusionProcess, temperature: float) -> Estimator:
    """DiffusionGemma for MDPO's (answer, step) items: the trained step's transition."""
    return RenoiseReplayEstimator(process, per_step=True)
