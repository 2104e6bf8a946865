"""Each likelihood estimator against a direct computation on a hand-built batch."""

from __future__ import annotations

import pytest
import torch

from unmask.models.tiny import tiny
from unmask.rl.estimators import (
    ElboEstimator,
    OneStepEstimator,
    StepEstimator,
    TrajectoryEstimator,
    sequence_elbo,
)
from unmask.rollouts.generate import generate
from unmask.rollouts.trajectory import Trajectory

TINY = {"n_layers": 1, "d_model": 32, "n_heads": 2, "mlp_hidden_size": 64}


@pytest.fixture(scope="module")
def model():
    return tiny(TINY, seed=0).eval()


def hand_trajectory(model) -> Trajectory:
    """Two rows: the second prompt is left-padded; 2 recorded steps over a 4-token answer."""
    pad, mask = model.pad_token_id, model.mask_token_id
    tokens = torch.tensor([[10, 11, 12, 13, 20, 21, 22, 23], [pad, 14, 15, 16, 24, 25, 26, 27]])
    attention = tokens != pad
    attention[:, 4:] = True
    step_masked = torch.tensor([[[1, 1, 1, 1], [1, 1, 1, 1]], [[0, 0, 1, 1], [0, 1, 0, 1]]], dtype=torch.bool)
    step_pred = torch.tensor([[[20, 21, 30, 31], [24, 32, 26, 33]], [[0, 0, 22, 23], [0, 25, 0, 27]]])
    assert mask not in tokens.tolist()
    return Trajectory(
        tokens=tokens, attention_mask=attention, prompt_length=4,
        answer_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool),
        commit_step=torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1]]),
        hint_mask=torch.zeros(2, 4, dtype=torch.bool), nfe=torch.tensor([2, 2]),
        step_masked=step_masked, step_pred=step_pred,
        step_confidence=torch.rand(2, 2, 4).half(), step_logprob=torch.zeros(2, 2, 4),
    )


def direct_logprobs(model, ids, attention, targets, temperature=1.0, exclude_mask=False):
    """Log-softmax at the answer; ``exclude_mask`` renormalises without [MASK], as the sampler does."""
    with torch.no_grad():
        logits = model.logits(ids, attention_mask=attention)[:, 4:] / temperature
    if exclude_mask:
        logits[..., model.mask_token_id] = float("-inf")
    return torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None])[..., 0]


def test_one_step_masks_prompt_with_shared_seed_and_answer_fully(model):
    traj = hand_trajectory(model)
    est = OneStepEstimator(model.process, p_mask=0.5)
    with torch.no_grad():
        scores = est.token_logprobs(model, traj, 7)
        again = est.token_logprobs(model, traj, 7)
        other = est.token_logprobs(model, traj, 8)
    drop = (torch.rand(2, 4, generator=torch.Generator().manual_seed(7)) < 0.5) & traj.attention_mask[:, :4]
    ids = traj.tokens.clone()
    ids[:, :4][drop] = model.mask_token_id
    ids[:, 4:] = model.mask_token_id
    expected = direct_logprobs(model, ids, traj.attention_mask, traj.answer_ids)
    torch.testing.assert_close(scores.logprobs, expected)
    assert torch.equal(scores.logprobs, again.logprobs)  # same key -> same mask (θ / θ_old / ref)
    assert not torch.equal(scores.logprobs, other.logprobs)
    assert scores.mask.all() and not est.masked_input(traj, 7)[1, 0].eq(model.mask_token_id)  # pad kept
    assert (scores.entropy > 0).all()


def test_step_estimator_scores_prediction_on_recorded_canvas(model):
    traj = hand_trajectory(model)
    est = StepEstimator(model.process, temperature=0.7)
    with torch.no_grad():
        scores = est.token_logprobs(model, traj, torch.tensor([1, 0]))
    m = model.mask_token_id
    # row 0 at step 1: committed a, b at step 0; row 1 at step 0: all masked
    canvas = torch.tensor([[10, 11, 12, 13, 20, 21, m, m], [traj.tokens[1, 0], 14, 15, 16, m, m, m, m]])
    targets = torch.tensor([[0, 0, 22, 23], [24, 32, 26, 33]])
    expected = direct_logprobs(model, canvas, traj.attention_mask, targets, 0.7, exclude_mask=True)
    expected_mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(scores.mask, expected_mask)
    torch.testing.assert_close(scores.logprobs, expected * expected_mask)


@pytest.mark.parametrize("coupled", [False, True])
def test_elbo_weights_masked_tokens_by_inverse_ratio(model, coupled):
    traj = hand_trajectory(model)
    est = ElboEstimator(model.process, coupled=coupled)
    with torch.no_grad():
        scores = est.token_logprobs(model, traj, 3)
    gen = torch.Generator().manual_seed(3)
    ratio = 1e-3 + (1 - 2e-3) * torch.rand(2, generator=gen)
    mask = torch.rand(2, 4, generator=gen) < ratio[:, None]
    ids = traj.tokens.clone()
    ids[:, 4:][mask] = model.mask_token_id
    first = direct_logprobs(model, ids, traj.attention_mask, traj.answer_ids)
    if not coupled:
        torch.testing.assert_close(scores.logprobs, first * mask)
        torch.testing.assert_close(scores.weight, mask / ratio[:, None])
        return
    ids = traj.tokens.clone()
    ids[:, 4:][~mask] = model.mask_token_id
    second = direct_logprobs(model, ids, traj.attention_mask, traj.answer_ids)
    assert scores.mask.all()  # every answer token scored exactly once over the two passes
    torch.testing.assert_close(scores.logprobs, torch.where(mask, first, second))
    torch.testing.assert_close(
        scores.weight, torch.where(mask, 0.5 / ratio[:, None], 0.5 / (1 - ratio[:, None])).expand(2, 4)
    )
    # the pair averages two ELBO estimates: Σ weight·logprob is one estimate, not twice one
    one_estimate = 0.5 * ((first * mask).sum(1) / ratio + (second * ~mask).sum(1) / (1 - ratio))
    torch.testing.assert_close(sequence_elbo(scores), one_estimate)


def test_answer_only_elbo_scores_up_to_eos_and_leaves_the_eos_fill_out_of_the_input(model):
    """BGPO's item: masks and scores only C, and what follows the first EOS cannot change a score."""
    traj = hand_trajectory(model)  # row 1's answer ends at its third position
    est = ElboEstimator(model.process, answer_only=True)
    other = Trajectory(**{**vars(traj), "tokens": traj.tokens.clone()})
    other.tokens[1, -1] = 40  # a different token after the EOS
    with torch.no_grad():
        scores, again = est.token_logprobs(model, traj, 9), est.token_logprobs(model, other, 9)
    ratio, mask = est.draw(traj, 9)
    assert not (mask & ~traj.answer_mask).any() and torch.equal(scores.mask, mask)
    assert mask.any()
    torch.testing.assert_close(scores.logprobs, again.logprobs)  # attention never reaches the EOS fill
    ids = traj.tokens.clone()
    ids[:, 4:][mask] = model.mask_token_id
    attention = torch.cat([traj.attention_mask[:, :4], traj.answer_mask], 1)
    direct = direct_logprobs(model, ids, attention, traj.answer_ids)
    torch.testing.assert_close(sequence_elbo(scores), (direct * mask).sum(1) / ratio)


def test_step_estimator_needs_recorded_steps(model):
    traj = hand_trajectory(model)
    traj.step_masked = None
    with pytest.raises(ValueError, match="record=True"):
        StepEstimator(model.process).token_logprobs(model, traj, torch.tensor([0, 0]))


def test_scores_through_the_kernel_match_full_log_softmax_values_and_gradients():
    """Answer-only logits + fused kernel give the naive full-vocabulary scores and gradients."""
    model = tiny(TINY, seed=1).train()
    traj = hand_trajectory(model)
    est = ElboEstimator(model.process, coupled=True, temperature=0.8)
    scores = est.token_logprobs(model, traj, 5)
    assert not scores.entropy.requires_grad  # entropy is a metric / hint filter, never a gradient path
    (scores.logprobs * scores.weight).sum().backward()
    fused = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    ratio, mask = est.draw(traj, 5)
    naive_lp, naive_ent = [], []
    for chosen in (mask, ~mask):
        ids = torch.cat([traj.prompt_ids, traj.answer_ids.masked_fill(chosen, model.mask_token_id)], 1)
        logp = torch.log_softmax(model.logits(ids, attention_mask=traj.attention_mask)[:, 4:].float() / 0.8, -1)
        naive_lp.append(logp.gather(-1, traj.answer_ids[..., None])[..., 0])
        naive_ent.append(-(logp.exp() * logp).sum(-1).detach())
    expected = torch.where(mask, *naive_lp)
    (expected * scores.weight).sum().backward()
    torch.testing.assert_close(scores.logprobs.detach(), expected.detach())
    torch.testing.assert_close(scores.entropy, torch.where(mask, *naive_ent))
    for name, param in model.named_parameters():
        torch.testing.assert_close(fused[name], param.grad, msg=name)
    assert any(g.abs().sum() > 0 for g in fused.values())


@pytest.mark.parametrize("remasking", ["low_confidence", "rcr"])
def test_trajectory_estimator_replays_the_samplers_own_log_probs(model, remasking):
    """Each token scored on the canvas of its commit step equals the sampler's recorded log-prob."""
    prompts = torch.randint(5, 60, (3, 5))
    traj = generate(
        model, prompts, gen_length=8, steps=4, block_length=4, temperature=0.7, remasking=remasking,
        seed=3, record=True,
    )  # fmt: skip
    est = TrajectoryEstimator(model.process, temperature=0.7)
    with torch.no_grad():
        scores = est.token_logprobs(model, traj, est.key_for(traj, 0))
    rows = torch.arange(3)[:, None]
    cols = torch.arange(8)[None, :]
    recorded = traj.step_logprob[traj.commit_step, rows, cols]
    assert scores.mask.all() and est.passes_for(traj) == 4
    torch.testing.assert_close(scores.logprobs, recorded, atol=1e-5, rtol=1e-5)
    assert (scores.logprobs < 0).all()


def test_trajectory_estimator_skips_hints_and_needs_recorded_steps(model):
    traj = hand_trajectory(model)
    traj.commit_step[0, 1] = -1  # a hint: fixed before sampling, not the policy's choice
    est = TrajectoryEstimator(model.process)
    with torch.no_grad():
        scores = est.token_logprobs(model, traj, 0)
    assert not scores.mask[0, 1] and scores.logprobs[0, 1] == 0 and scores.mask.sum() == 7
    m = model.mask_token_id
    step1 = torch.tensor([[10, 11, 12, 13, 20, 21, m, m]])  # row 0 commits positions 2, 3 at step 1
    expected = direct_logprobs(model, step1, traj.attention_mask[:1], traj.answer_ids[:1], exclude_mask=True)
    torch.testing.assert_close(scores.logprobs[0, 2:], expected[0, 2:])
    with pytest.raises(ValueError, match="record=True"):
        est.token_logprobs(model, Trajectory(**{**vars(traj), "step_masked": None}), 0)
    all_hints = Trajectory(**{**vars(traj), "commit_step": torch.full_like(traj.commit_step, -1)})
    with pytest.raises(ValueError, match="every answer token is a hint"):
        est.token_logprobs(model, all_hints, 0)


def test_trajectory_estimator_subsamples_whole_commit_steps_per_row(model):
    prompts = torch.randint(5, 60, (4, 5))
    traj = generate(model, prompts, gen_length=8, steps=8, block_length=8, temperature=0.7, seed=5, record=True)
    full = TrajectoryEstimator(model.process, temperature=0.7)
    sub = TrajectoryEstimator(model.process, temperature=0.7, steps_per_row=3)
    with torch.no_grad():
        exact = full.token_logprobs(model, traj, 0)
        first, again, other = (sub.token_logprobs(model, traj, key) for key in (11, 11, 12))
    assert sub.varies_per_iteration and not full.varies_per_iteration
    assert (full.passes_for(traj), sub.passes_for(traj)) == (8, 3)
    for row in range(4):
        assert len(traj.commit_step[row][first.mask[row]].unique()) == 3  # three whole steps
    torch.testing.assert_close(first.logprobs[first.mask], exact.logprobs[first.mask])
    assert (first.logprobs[~first.mask] == 0).all()
    assert torch.equal(first.mask, again.mask) and not torch.equal(first.mask, other.mask)
