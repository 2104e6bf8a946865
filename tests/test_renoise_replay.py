"""The renoise-replay estimator on DiffusionGemma rollouts: it reproduces the sampler's log-probs,
scores exactly the decisions that can change the answer, subsamples without bias, logs how much
of the accepted sets θ moves, and the estimators that need a mask token are refused at build time
(docs/diffusion-gemma.md)."""

from __future__ import annotations

import pytest
import torch

from unmask.diffusion.absorbing import AbsorbingMask
from unmask.errors import UserError
from unmask.models.diffusion_gemma import DiffusionGemma, tiny_diffusion_gemma
from unmask.recipe import ALGORITHMS
from unmask.rl.objective import Objective, TrainBatch
from unmask.rl.renoise_replay import RenoiseReplayEstimator, scorable_steps
from unmask.rl.update import micro_batch_loss
from unmask.rollouts.samplers import sample
from unmask.rollouts.trajectory import Trajectory

PROMPT = torch.tensor([[0, 0, 9, 11, 40], [2, 7, 8, 30, 31]])  # row 0 left-padded


def peaky() -> DiffusionGemma:
    """Confident logits, so the adaptive stop fires and some blocks stop early."""
    model = tiny_diffusion_gemma(0)
    with torch.no_grad():
        model.model.decoder.norm.weight *= 60
    return model


def rollout(model: DiffusionGemma) -> Trajectory:
    return sample(model, PROMPT, attention_mask=PROMPT != 0, gen_length=24, steps=36, seed=[3, 4], record=True)


def decision_major(recorded: torch.Tensor) -> torch.Tensor:
    """``[T, B, L]`` → ``[B, T·L]``, the estimator's layout."""
    return recorded.transpose(0, 1).reshape(recorded.shape[1], -1)


def test_replay_reproduces_the_rollout_and_scores_only_decisions_that_matter() -> None:
    model = peaky()
    traj = rollout(model)
    run = traj.renoise
    assert (run.stop_step > 1).any()  # some row-block stopped early: its later steps are frozen
    scores = RenoiseReplayEstimator(model.process).token_logprobs(model, traj, 0)
    # scored = accepted slots of live steps before the block's stop step, nothing else
    steps, batch, length = run.step_canvas.shape
    expected = torch.zeros(steps, batch, length, dtype=torch.bool)
    for t in range(steps):
        for b in range(batch):
            block = int(run.step_block[t])
            if run.step_active[t, b] and int(run.step_n[t]) > int(run.stop_step[block, b]):
                expected[t, b] = run.step_accept[t, b]
    assert torch.equal(scores.mask, decision_major(expected)) and scores.mask.any()
    torch.testing.assert_close(
        scores.logprobs[scores.mask], decision_major(run.step_logprob)[scores.mask], atol=1e-5, rtol=0
    )
    assert (scores.logprobs[~scores.mask] == 0).all() and (scores.weight == 1).all()
    assert scores.metrics["accept_changed"] == 0.0  # θ = θ_old: the entropy-bound sets are the recorded ones
    assert scores.metrics["replay_drift"] <= 1e-5
    near = float((decision_major(run.step_logprob)[scores.mask] > -1e-3).float().mean())
    assert scores.metrics["near_deterministic"] == near and 0 < near < 1  # peaky: some draws are near-certain
    scores.logprobs.sum().backward()
    for name in ("encoder.language_model.layers.0.self_attn.q_proj.weight", "decoder.layers.1.experts.down_proj",
                 "decoder.self_conditioning.gate_proj.weight"):  # fmt: skip
        assert model.model.get_parameter(name).grad.abs().sum() > 0


def test_accept_changed_counts_the_slots_whose_accepted_set_moves_under_theta() -> None:
    model = peaky()
    traj = rollout(model)
    with torch.no_grad():
        model.model.decoder.norm.weight /= 30  # much less confident: the bound admits fewer slots
    scores = RenoiseReplayEstimator(model.process).token_logprobs(model, traj, 0)
    assert 0 < scores.metrics["accept_changed"] <= 1 and scores.metrics["replay_drift"] > 1e-2


def test_exact_sc_mode_recomputes_the_self_conditioning_under_theta() -> None:
    model = peaky()
    traj = rollout(model)
    run = traj.renoise
    stored, exact = RenoiseReplayEstimator(model.process), RenoiseReplayEstimator(model.process, exact_sc=True)
    at_old = exact.token_logprobs(model, traj, 0)  # θ = θ_old: θ's SC is the recorded SC
    torch.testing.assert_close(at_old.logprobs, stored.token_logprobs(model, traj, 0).logprobs, atol=1e-5, rtol=0)
    with torch.no_grad():
        model.model.decoder.norm.weight *= 0.5
    moved_stored, moved_exact = stored.token_logprobs(model, traj, 0), exact.token_logprobs(model, traj, 0)
    first = decision_major((run.step_n == 12)[:, None, None].expand_as(run.step_accept))  # each block's first step
    same = (moved_stored.logprobs - moved_exact.logprobs).abs() <= 1e-5
    assert same[first & at_old.mask].all()  # no SC at a block's first step: both modes agree
    assert not same[~first & at_old.mask].all()  # later steps read θ's SC, not θ_old's
    moved_exact.logprobs.sum().backward()
    assert model.model.get_parameter("decoder.self_conditioning.gate_proj.weight").grad.abs().sum() > 0


def test_subsampled_steps_are_weighted_by_scorable_over_drawn() -> None:
    model = tiny_diffusion_gemma(0)
    traj = sample(model, PROMPT[1:], gen_length=16, steps=12, seed=[5], record=True)
    run = traj.renoise
    scorable = int(scorable_steps(run).sum())  # random weights never stop: every step but each block's last
    assert scorable == 2 * 5
    full = RenoiseReplayEstimator(model.process).token_logprobs(model, traj, 0)
    two = RenoiseReplayEstimator(model.process, steps_per_row=2).token_logprobs(model, traj, 7)
    per_step = two.mask.view(run.step_canvas.shape[0], -1).any(1)
    assert int(per_step.sum()) == 2 and (two.weight == scorable / 2).all()
    torch.testing.assert_close(two.logprobs[two.mask], full.logprobs[two.mask], atol=1e-6, rtol=0)
    again = RenoiseReplayEstimator(model.process, steps_per_row=2).token_logprobs(model, traj, 7)
    assert torch.equal(again.mask, two.mask)  # the key alone draws the steps
    step = int(per_step.nonzero()[0])
    keyed = RenoiseReplayEstimator(model.process, per_step=True).token_logprobs(model, traj, torch.tensor([step]))
    by_step = keyed.mask.view(run.step_canvas.shape[0], -1)  # one row: [T, L]
    assert torch.equal(by_step[step], run.step_accept[step, 0]) and int(by_step.any(1).sum()) == 1


def objective(name: str, **parts: str) -> Objective:
    config = ALGORITHMS[name](**parts)
    return Objective(config, process=tiny_diffusion_gemma(0).process, temperature=1.0, gen_length=16)


@pytest.mark.parametrize("preset", sorted(ALGORITHMS))
def test_every_preset_default_estimator_needs_a_mask_token_and_is_refused_at_build(preset: str) -> None:
    estimator = ALGORITHMS[preset].model_fields["estimator"].default
    with pytest.raises(UserError) as refused:
        objective(preset)
    message = str(refused.value)
    assert "\n" not in message and f"algorithm.estimator: {estimator} " in message and "renoise_replay" in message


def test_presets_build_with_the_renoise_estimators() -> None:
    assert objective("diffu_grpo", estimator="renoise_replay", loss_mask="scored").record_steps
    assert objective("cj_grpo", estimator="renoise_replay", token_weight="estimator").estimator.steps_per_row is None
    assert objective("tracerl", estimator="renoise_replay").record_steps
    assert objective("mdpo", estimator="renoise_step").estimator.per_step
    with pytest.raises(ValueError, match="algorithm.loss_mask: renoise_replay scores sampler decisions"):
        objective("diffu_grpo", estimator="renoise_replay")
    with pytest.raises(ValueError, match="keyed by step"):
        objective("diffu_grpo", estimator="renoise_step", loss_mask="scored")
    with pytest.raises(UserError, match="has a mask token"):
        RenoiseReplayEstimator(AbsorbingMask(mask_token_id=3))


@pytest.mark.parametrize(("preset", "parts"), [
    ("diffu_grpo", {"estimator": "renoise_replay", "loss_mask": "scored"}),  # per-decision clipped ratio
    ("tracerl", {"estimator": "renoise_replay"}),  # the trajectory's own transitions, constant normaliser
    ("cj_grpo", {"estimator": "renoise_replay", "token_weight": "estimator"}),
    ("mdpo", {"estimator": "renoise_step"}),  # one trained step per item
    ("diffu_grpo", {"estimator": "renoise_exact", "loss_mask": "scored"}),  # θ's own SC, step by step
])  # fmt: skip
def test_presets_give_a_policy_gradient_through_the_replay(preset: str, parts: dict[str, str]) -> None:
    model = tiny_diffusion_gemma(0)
    built = Objective(ALGORITHMS[preset](**parts), process=model.process, temperature=1.0, gen_length=16)
    traj = sample(model, PROMPT[1:].expand(2, -1), gen_length=16, steps=8, seed=[1, 2], record=True)
    batch = TrainBatch(traj, torch.tensor([1.0, -1.0]), torch.tensor([1, 5]) if built.estimator.per_step else None)
    key = built.key(batch, 0)
    loss, metrics = micro_batch_loss(built, model, batch, key, None, None)
    loss.backward()
    grad = model.model.get_parameter("decoder.layers.0.self_attn.q_proj.weight").grad
    assert torch.isfinite(loss) and grad.abs().sum() > 0 and metrics["accept_changed"] == 0.0


def test_answer_token_weights_are_refused_with_the_replay() -> None:
    with pytest.raises(ValueError, match="algorithm.token_weight: per_step weighs answer tokens"):
        objective("cj_grpo", estimator="renoise_replay")
