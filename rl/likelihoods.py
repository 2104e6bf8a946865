"""The likelihood estimators a recipe can name: ``ESTIMATORS[name](config, mask_token_id, temperature)``.

Traits the parts' validation reads: ``record`` (needs the sampler's per-step record),
``keyed_by`` (its key is what the batch builder's items carry in ``TrainBatch.steps``: a
trained step, or a chunk of replayed steps),
``elbo`` (``Σ weight·ℓ`` is a sequence ELBO), ``upper`` (carries SPG's EUBO term),
``pair`` (each answer token scored exactly once over two complementary passes),
``needs`` (config fields it reads). Estimators themselves live in ``estimators`` and
``mc_estimators``; a new one is registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from unmask.rl.estimators import (
    ElboEstimator,
    Estimator,
    OneStepEstimator,
    StepEstimator,
    TrajectoryEstimator,
)
from unmask.rl.mc_estimators import BlockEstimator, ExactCountEstimator
from unmask.rl.registry import Registry

ESTIMATORS: Registry[Callable[[Any, int, float], Estimator]] = Registry("likelihood estimator")


@ESTIMATORS.register("one_step", needs=("p_mask",))
def _one_step(config: Any, mask_token_id: int, temperature: float) -> Estimator:
    return OneStepEstimator(mask_token_id, p_mask=config.p_mask)


@ESTIMATORS.register("elbo", elbo=True, pair=True)
def _elbo(config: Any, mask_token_id: int, temperature: float) -> Estimator:
    return ElboEstimator(mask_token_id, coupled=True)


@ESTIMATORS.register("trajectory", record=True, needs=("trajectory_steps",))
def _trajectory(config: Any, mask_token_id: int, temperature: float) -> Estimator:
    # greedy rollouts have no sampling distribution; score them at temperature 1
    return TrajectoryEstimator(mask_token_id, temperature=temperature or 1.0, steps_per_row=config.trajectory_steps)


@ESTIMATORS.register("step", record=True, keyed_by="step")
def _step(config: Any, mask_token_id: int, temperature: float) -> Estimator:
    return StepEstimator(mask_token_id, temperature=temperature or 1.0)


@ESTIMATORS.register("elbo_sample", elbo=True)
def _elbo_sample(config: Any, mask_token_id: int, temperature: float) -> Estimator:
    """BGPO's single-sample item: one masked pass over the answer up to its first EOS."""
    return ElboEstimator(mask_token_id, answer_only=True)


@ESTIMATORS.register("block", elbo=True, upper=True, needs=("mc_samples", "mask_block_length", "p_mask", "eubo_beta"))
def _block(config: Any, mask_token_id: int, temperature: float) -> Estimator:
    c = config
    return BlockEstimator(
        mask_token_id, samples=c.mc_samples, block_length=c.mask_block_length, p_mask=c.p_mask, beta=c.eubo_beta
    )


@ESTIMATORS.register("exact_count", elbo=True, needs=("mc_samples",))
def _exact_count(config: Any, mask_token_id: int, temperature: float) -> Estimator:
    return ExactCountEstimator(mask_token_id, samples=config.mc_samples)


@ESTIMATORS.register("exact_count_pair", elbo=True, pair=True)
def _exact_count_pair(config: Any, mask_token_id: int, temperature: float) -> Estimator:
    """One exact-count draw and its complement: an item of GDSD's ``m`` separate draws."""
    return ExactCountEstimator(mask_token_id, samples=1)
