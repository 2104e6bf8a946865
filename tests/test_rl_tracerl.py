"""TraceRL's block replay: hand-checked step ranks, and replay log-probs equal the rollout's own."""

from __future__ import annotations

import pytest
import torch
from test_rollouts_block import prompts

from unmask.errors import UserError
from unmask.models.sdar import tiny_sdar
from unmask.models.tiny import tiny
from unmask.rl.tracerl import BlockReplayEstimator, step_ranks
from unmask.rollouts.generate import generate


def test_step_ranks_by_hand():
    commit = torch.tensor([[0, 1, 1, 3, 4, 6, 6, -1]])
    blocks = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])
    # block 0: distinct steps 0 < 1 < 3; block 1: 4 < 6, the hint ranks last
    assert step_ranks(commit, blocks).tolist() == [[0, 1, 1, 2, 0, 1, 1, 2]]


@pytest.fixture(scope="module")
def model():
    return tiny_sdar(seed=3)


@pytest.mark.parametrize("settings", [{}, {"cache": "block"}, {"remasking": "rcr"}, {"threshold": 0.2}],
                         ids=["uncached", "block-cache", "rcr", "threshold"])
def test_replay_equals_the_sampler_log_probs(model, settings):
    """Spec test 8: each committed token's replayed log-prob is the one the sampler drew it with."""
    ids, mask = prompts([8, 7, 5], 8)
    traj = generate(model, ids, attention_mask=mask, gen_length=12, steps=9, block_length=4, seed=4,
                    temperature=1.0, record=True, **settings)
    scores = BlockReplayEstimator(model.process, temperature=1.0).token_logprobs(model, traj, 0)
    rows = torch.arange(3)[:, None].expand_as(traj.commit_step)
    cols = torch.arange(12)[None].expand_as(traj.commit_step)
    sampled = traj.step_logprob[traj.commit_step.clamp(min=0), rows, cols]
    assert scores.mask.equal(traj.commit_step >= 0)
    torch.testing.assert_close(scores.logprobs[scores.mask], sampled[scores.mask].float(), rtol=1e-5, atol=1e-5)


def test_passes_are_steps_per_block_not_total_steps(model):
    ids, mask = prompts([8, 8], 8)
    traj = generate(model, ids, attention_mask=mask, gen_length=16, steps=16, block_length=4, seed=0,
                    temperature=1.0, record=True)
    assert traj.num_steps == 16 and BlockReplayEstimator(model.process).passes_for(traj) == 4


def test_gradients_reach_the_policy(model):
    ids, mask = prompts([8], 8)
    traj = generate(model, ids, attention_mask=mask, gen_length=8, steps=8, block_length=4, seed=0,
                    temperature=1.0, record=True)
    scores = BlockReplayEstimator(model.process).token_logprobs(model, traj, 0)
    scores.logprobs.sum().backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0
    model.zero_grad()


def test_full_attention_families_refuse_the_two_stream_input():
    full = tiny({"n_layers": 1, "d_model": 32, "n_heads": 2, "mlp_hidden_size": 64}, seed=0)
    ids = torch.randint(0, 20, (1, 4))
    with pytest.raises(UserError, match="two-stream"):
        full.process.two_stream_logits(full, ids, ids, None)
    with pytest.raises(UserError, match="'trajectory' estimator"):
        BlockReplayEstimator(full.process)
