"""The exact fast sampler (issue 22, point 1): token for token the reference mode, on every combination.

Reference mode is ``partial_head=False`` (LM head on every column, the full
float64 sampling statistics, every block on every column). The fast path runs the
head only at predicted (row, column) pairs, the last block only where logits are
read, the lean greedy confidence, and for a prompt-blind model the cached prompt
keys/values (``cache="prompt"``). None of that may change a token.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from reference_sampler import random_tiny

from unmask.errors import UserError
from unmask.kernels.ops import sample_step
from unmask.kernels.sampling import greedy_probability
from unmask.rollouts.confidence import DEFAULT_CONFIDENCE
from unmask.rollouts.generate import generate
from unmask.rollouts.schedules import SCHEDULES

SETTINGS = {"gen_length": 12, "steps": 6, "block_length": 4}


@pytest.fixture(scope="module", params=["bidirectional", "prompt-blind"])
def model(request):
    model = random_tiny(seed=3, scale=0.3)
    if request.param == "prompt-blind":
        model.config = dataclasses.replace(model.config, prompt_attends_answer=False)
    return model


@pytest.fixture(scope="module")
def prompts():
    # left-padded rows of different lengths: padding and positions are part of the contract
    ids = torch.randint(5, 100, (3, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :5] = 0
    return ids, mask


def fast_options(model) -> dict:
    return {} if model.config.prompt_attends_answer else {"cache": "prompt"}


COMBINATIONS = [
    *({"remasking": r, "schedule": s, "temperature": t} for r, s, t in itertools.product(DEFAULT_CONFIDENCE, SCHEDULES, (0.0, 0.8))),
    *({"remasking": r, "threshold": 0.6, "temperature": t} for r, t in itertools.product(("low_confidence", "margin", "entropy"), (0.0, 0.8))),
    {"remasking": "low_confidence", "cfg_scale": 1.0},
    {"remasking": "low_confidence", "early_exit": True},
    {"remasking": "rcr", "temperature": 0.7, "record": True},
    {"remasking": "low_confidence", "record": True},
]


@pytest.mark.parametrize("options", COMBINATIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_exact_fast_is_token_identical_to_reference_mode(model, prompts, options) -> None:
    ids, mask = prompts
    reference = generate(model, ids, attention_mask=mask, partial_head=False, seed=7, **SETTINGS, **options)
    fast = generate(model, ids, attention_mask=mask, seed=7, **fast_options(model), **SETTINGS, **options)
    assert torch.equal(fast.tokens, reference.tokens)
    assert torch.equal(fast.commit_step, reference.commit_step)
    assert (fast.flops < reference.flops).all()  # the fast path really skipped work


def test_greedy_probability_is_bitwise_the_full_sampling_step() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 300, generator=gen) * 4
    logits[:8, 10] = logits[:8, 20] = 50.0  # exact ties: the first index wins on both paths
    logits[8:16] = logits[8:16].half().float()  # coarse values, many near-ties after widening
    token, confidence = greedy_probability(logits, chunk_elements=1000)  # several chunks
    full = sample_step(logits, 0.0)
    assert torch.equal(token, full.token) and (token[:8] == 10).all()
    assert confidence.dtype == torch.float64 and torch.equal(confidence, full.confidence)


def test_prompt_cache_refuses_a_model_whose_prompt_sees_the_answer(prompts) -> None:
    with pytest.raises(UserError, match="prompt_attends_answer"):
        generate(random_tiny(seed=3), prompts[0], cache="prompt", **SETTINGS)


def test_prompt_cache_runs_the_prompt_once(prompts) -> None:
    model = random_tiny(seed=3, scale=0.3)
    model.config = dataclasses.replace(model.config, prompt_attends_answer=False)
    seen: list[int] = []
    hook = model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    try:
        generate(model, prompts[0], cache="prompt", **SETTINGS)
    finally:
        hook.remove()
    canvas = prompts[0].shape[1] + SETTINGS["gen_length"]
    assert seen == [canvas] + [SETTINGS["gen_length"]] * (SETTINGS["steps"] - 1)
