"""The four 2026 presets (coupled-GRPO, CJ-GRPO, GDSD, JustGRPO) against the spec's hand-checkable cases."""

from __future__ import annotations

import math

import pytest
import torch
from test_rl_estimators import TINY

from unmask.diffusion.absorbing import AbsorbingMask
from unmask.errors import RecipeError
from unmask.models.tiny import tiny
from unmask.recipe import (
    CJGRPOConfig,
    CoupledGRPOConfig,
    DiffuGRPOConfig,
    GDSDConfig,
    JustGRPOConfig,
    validate_recipe,
)
from unmask.rl.coupled_grpo import coupled_score
from unmask.rl.estimators import ElboEstimator, OneStepEstimator, Scores, TrajectoryEstimator
from unmask.rl.objective import Rollout, TrainBatch, build_objective
from unmask.rollouts.generate import generate
from unmask.rollouts.trajectory import Trajectory


@pytest.fixture(scope="module")
def model():
    return tiny(TINY, seed=0).eval()


def build(config, length: int = 4, process=None):
    return build_objective(config, process=process or AbsorbingMask(0), temperature=1.0, gen_length=length)


def flat_trajectory(rows: int, length: int, commit: torch.Tensor | None = None) -> Trajectory:
    return Trajectory(
        tokens=torch.full((rows, 2 + length), 5), attention_mask=torch.ones(rows, 2 + length, dtype=torch.bool),
        prompt_length=2, answer_mask=torch.ones(rows, length, dtype=torch.bool),
        commit_step=torch.zeros(rows, length, dtype=torch.long) if commit is None else commit,
        hint_mask=torch.zeros(rows, length, dtype=torch.bool), nfe=torch.ones(rows),
    )


def hand_scores(values: torch.Tensor) -> Scores:
    return Scores(values.clone().requires_grad_(), torch.ones_like(values), torch.ones_like(values, dtype=torch.bool),
                  torch.ones_like(values))


def parameter_grads(model, loss) -> list[torch.Tensor]:
    return torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])


# -- coupled-GRPO -------------------------------------------------------------------


def test_coupled_score_by_hand():
    """t = 0.5; token 1 in P: ℓF −2, ℓP −1 ⇒ v₁ = −2; token 2 in Q: ℓF −1, ℓQ −0.5 ⇒ v₂ = −1."""
    full, pair, weight = torch.tensor([-2.0, -1.0]), torch.tensor([-1.0, -0.5]), torch.tensor([0.5 / 0.5, 0.5 / 0.5])
    v = coupled_score(full, pair, weight)
    assert v.tolist() == [-2.0, -1.0]
    elbo = float((weight * pair).sum())  # the coupled ELBO E_c, with its ½
    assert elbo == -1.5 and float(v.sum()) == 0.5 * float(full.sum()) + elbo == -3.0


def test_coupled_advantages_are_leave_one_out_by_hand():
    advantages = build(CoupledGRPOConfig()).advantages(torch.tensor([2.5, 0.0, 0.0, 0.5]), 4)
    torch.testing.assert_close(advantages, torch.tensor([7 / 3, -1.0, -1.0, -1 / 3]))  # 4/3·(r − 0.75)


def test_coupled_ratio_is_drawn_in_02_08_per_row_and_key(model):
    objective = build(CoupledGRPOConfig(), process=model.process)
    traj = flat_trajectory(64, 8)
    ratios = [objective.estimator.pair.draw(traj, key)[0] for key in (1, 2)]
    assert all(bool(((r >= 0.2) & (r <= 0.8)).all()) for r in ratios)
    assert ratios[0].std() > 0 and not torch.equal(*ratios)  # per row, and fresh for every key (no fixed seed)
    assert objective.estimator.passes_for(traj) == 3 and objective.estimator.varies_per_iteration


def test_coupled_gradient_is_half_d1_plus_elbo_on_the_first_iteration(model):
    """β 0, θ_old = θ: ∇ = ½·(d1, p_mask 0) + diffu_grpo(elbo) on the same key, both token means over C."""
    traj = generate(model, torch.randint(5, 60, (4, 5)), gen_length=8, steps=8, block_length=8, temperature=1.0, seed=3)
    batch = TrainBatch(traj, torch.tensor([1.0, -0.5, 0.25, -0.75]))
    coupled = build(CoupledGRPOConfig(beta=0.0), 8, model.process)
    d1 = build(DiffuGRPOConfig(beta=0.0, p_mask=0.0), 8, model.process)
    elbo = build(DiffuGRPOConfig(beta=0.0, estimator="elbo"), 8, model.process)
    elbo.estimator = ElboEstimator(model.process, coupled=True, min_ratio=0.2)  # the pair coupled-GRPO draws
    assert isinstance(d1.estimator, OneStepEstimator)
    grads = []
    for objective in (coupled, d1, elbo):
        loss, _ = objective.loss(batch, objective.estimator.token_logprobs(model, traj, 11), None, None)
        grads.append(parameter_grads(model, loss))
    for got, full, pair in zip(*grads, strict=True):
        torch.testing.assert_close(got, 0.5 * full + pair, atol=1e-6, rtol=1e-5)
    assert any(g.abs().sum() > 0 for g in grads[0])


# -- CJ-GRPO --------------------------------------------------------------------------


def test_cj_grpo_with_constant_commits_per_step_is_a_token_mean_over_all_l():
    """T = 4 steps commit 2 of 8 tokens each: CJ-GRPO's loss is diffu_grpo(trajectory)'s over all L."""
    commit = torch.tensor([[0, 0, 1, 1, 2, 2, 3, 3], [3, 2, 1, 0, 0, 1, 2, 3]])
    batch = TrainBatch(flat_trajectory(2, 8, commit), torch.tensor([0.7, -0.7]))
    lp = -torch.rand(2, 8, generator=torch.Generator().manual_seed(0))
    old = hand_scores(lp + 0.05 * torch.randn(2, 8, generator=torch.Generator().manual_seed(1)))
    results = []
    for config in (CJGRPOConfig(), DiffuGRPOConfig(estimator="trajectory", loss_mask="scored", beta=0.0, epsilon=0.2)):
        scores = hand_scores(lp)
        loss, _ = build(config, 8).loss(batch, scores, old, None)
        loss.backward()
        results.append((loss.detach(), scores.logprobs.grad))
    torch.testing.assert_close(results[0], results[1])


def test_cj_grpo_weighs_every_step_alike():
    """Steps commit 3 tokens then 1: the loss is ½·(step 0's token mean) + ½·(step 1's token)."""
    batch = TrainBatch(flat_trajectory(1, 4, torch.tensor([[0, 0, 0, 1]])), torch.tensor([1.0]))
    lp = torch.tensor([[-1.0, -2.0, -3.0, -4.0]])
    scores = hand_scores(lp)
    loss, _ = build(CJGRPOConfig(), 4).loss(batch, scores, None, None)  # ρ ≡ 1: each term is −A
    assert float(loss.detach()) == pytest.approx(-1.0)
    loss.backward()
    torch.testing.assert_close(scores.logprobs.grad, torch.tensor([[-1 / 6, -1 / 6, -1 / 6, -1 / 2]]))


def test_cj_grpo_dual_clip_floors_a_negative_advantage():
    batch = TrainBatch(flat_trajectory(1, 2), torch.tensor([-1.0]))
    loss, metrics = build(CJGRPOConfig(), 2).loss(batch, hand_scores(torch.log(torch.tensor([[5.0, 5.0]]))),
                                                  hand_scores(torch.zeros(1, 2)), None)
    assert float(loss) == pytest.approx(3.0) and metrics["clip_fraction"] == 1.0  # min(−5, −1.2) = −5 → −3


# -- GDSD -----------------------------------------------------------------------------


def gdsd_case(raw_delta: float):
    """One answer, L 256, ψ 10, A +1, one draw: D_θ − D_old = raw_delta (D = ½ Σ ℓ, one token moves)."""
    objective = build(GDSDConfig(mc_samples=1, beta=0.0), 256)
    batch = TrainBatch(flat_trajectory(1, 256), torch.tensor([1.0], dtype=torch.float64))
    old = torch.zeros(1, 256, dtype=torch.float64)
    old[0, 0] = -1.0
    new = old.clone()
    new[0, 0] += 2 * raw_delta
    scores = hand_scores(new)
    loss, metrics = objective.loss(batch, scores, hand_scores(old), None)
    loss.backward()
    return loss, scores.logprobs.grad[0, 0] / 0.5, metrics  # ∂loss/∂D


def test_gdsd_band_clamps_and_stops_the_gradient_on_both_sides():
    loss, grad, metrics = gdsd_case(1e-3)
    clamped = math.log(1 + 4e-4)
    assert clamped == pytest.approx(3.99920e-4, abs=1e-9)
    assert float(loss) == pytest.approx((clamped / 256 - 10) ** 2) and float(grad) == 0.0
    assert metrics["gdsd/in_band"] == 0.0
    assert float(gdsd_case(-1e-3)[1]) == 0.0


def test_gdsd_gradient_inside_the_band_by_hand():
    _, grad, metrics = gdsd_case(1e-4)
    assert float(grad) == pytest.approx(2 * (1e-4 / 256 - 10) / 256, rel=1e-9)  # −0.0781250
    assert float(grad) == pytest.approx(-0.0781250, abs=1e-7) and metrics["gdsd/in_band"] == 1.0


def test_gdsd_items_are_separate_draws_summed_per_answer():
    objective = build(GDSDConfig(mc_samples=2), 4)
    traj = flat_trajectory(4, 4)
    rollout = Rollout(traj, [{}] * 4, torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.zeros(4, dtype=torch.bool), 4)
    batch = objective.prepare(rollout, None)
    assert len(batch) == 8 and batch.advantages.tolist()[:2] == [1.0, 1.0]  # leave-one-out, one item per draw
    assert objective.estimator.passes == 2  # one exact-count draw and its complement


# -- JustGRPO -------------------------------------------------------------------------


def test_justgrpo_advantages_and_valid_answer_count_by_hand():
    objective = build(JustGRPOConfig(), 3)
    advantages = objective.advantages(torch.tensor([1.0, 1.0, 1.0, -1.0]), 4)  # mean 0.5, std 1
    torch.testing.assert_close(advantages, torch.tensor([0.49995, 0.49995, 0.49995, -1.49985]), atol=1e-6, rtol=0)
    batch = TrainBatch(flat_trajectory(4, 3), advantages)
    scores = hand_scores(-torch.rand(4, 3))
    loss, _ = objective.loss(batch, scores, None, None)
    loss.backward()  # ratio ≡ 1: ∇ = −(1/(L·n_v)) Σ_i A_i Σ_t ∇ℓ_it, n_v = 4
    torch.testing.assert_close(scores.logprobs.grad, -advantages[:, None].expand(4, 3) / (3 * 4))
    assert float(loss) == pytest.approx(-float(advantages.sum()) * 3 / (3 * 4), abs=1e-7)


def test_justgrpo_all_equal_rewards_give_a_zero_loss_not_nan():
    objective = build(JustGRPOConfig(), 3)
    advantages = objective.advantages(torch.ones(4), 4)
    assert advantages.tolist() == [0.0] * 4
    loss, _ = objective.loss(TrainBatch(flat_trajectory(4, 3), advantages), hand_scores(-torch.rand(4, 3)), None, None)
    assert float(loss) == 0.0


def test_justgrpo_likelihood_is_the_exact_left_to_right_replay(model):
    """A block-1 rollout commits position t at step t, so TrajectoryEstimator scores o_t on x^AR_t =
    prompt ⊕ o_<t ⊕ [MASK]^{L−t}: the exact AR likelihood, and the sampler's own recorded log-probs.
    The preset's chunk items (4 + 2 positions here) replay the same canvases and sum to it (the second
    chunk's positions look like hints to chunk 0's replay: this caught hints dropping step 0's replay)."""
    length, mask = 6, model.mask_token_id
    traj = generate(model, torch.randint(5, 60, (3, 5)), gen_length=length, steps=length, block_length=1,
                    temperature=1.0, seed=2, record=True)
    assert traj.commit_step.tolist() == [list(range(length))] * 3
    with torch.no_grad():
        full = TrajectoryEstimator(model.process).token_logprobs(model, traj, 0)
        expected = torch.zeros(3, length)
        for t in range(length):
            canvas = traj.tokens.clone()
            canvas[:, traj.prompt_length + t :] = mask
            logits = model.logits(canvas, attention_mask=traj.attention_mask)[:, traj.prompt_length + t].float()
            logits[:, mask] = float("-inf")  # unmask's sampler never emits [MASK]; both sides renormalise without it
            expected[:, t] = torch.log_softmax(logits, -1).gather(1, traj.answer_ids[:, t : t + 1])[:, 0]
    torch.testing.assert_close(full.logprobs, expected, atol=1e-5, rtol=1e-5)
    rows, cols = torch.arange(3)[:, None], torch.arange(length)[None]
    torch.testing.assert_close(full.logprobs, traj.step_logprob[cols, rows, cols], atol=1e-5, rtol=1e-5)

    objective = build(JustGRPOConfig(replay_chunk=4), length, model.process)
    rollout = Rollout(traj, [{}] * 3, torch.tensor([1.0, 0.0, 0.0]), torch.zeros(3, dtype=torch.bool), 3)
    batch = objective.prepare(rollout, None)
    assert batch.steps.tolist() == [0, 1] * 3 and objective.record_steps
    with torch.no_grad():
        chunks = objective.estimator.token_logprobs(model, batch.traj, objective.key(batch, 0))
    assert chunks.mask.sum(1).tolist() == [4, 2] * 3  # each position in exactly one chunk
    assert objective.estimator.passes_for(traj) == 4
    summed = torch.zeros(3, length).index_add_(0, torch.arange(3).repeat_interleave(2), chunks.logprobs)
    torch.testing.assert_close(summed, full.logprobs, atol=1e-5, rtol=1e-5)


def test_justgrpo_at_one_position_is_the_one_step_input(model):
    """L = 1: x^AR_0 = prompt ⊕ [MASK] is both the one-step (p_mask 0) input and the replayed canvas."""
    traj = generate(model, torch.randint(5, 60, (2, 5)), gen_length=1, steps=1, block_length=1, temperature=1.0,
                    seed=4, record=True)
    one_step = OneStepEstimator(model.process, p_mask=0.0).masked_input(traj, 0)
    assert torch.equal(one_step, traj.canvas(0, model.process))


def test_justgrpo_refuses_a_parallel_rollout_in_one_line():
    raw = {"algorithm": {"name": "justgrpo"}, "rollout": {"max_completion_length": 16, "steps": 16, "block_length": 16}}
    with pytest.raises(RecipeError, match="set rollout.block_length: 1 and rollout.steps: 16") as error:
        validate_recipe(raw, "r.yaml")
    assert "\n" not in str(error.value)
    raw["rollout"]["block_length"] = 1
    assert validate_recipe(raw, "r.yaml").algorithm.aggregation == "valid_answers"


@pytest.mark.parametrize("name", ["coupled_grpo", "cj_grpo", "gdsd", "justgrpo"])
def test_new_presets_train_off_policy_steps_in_unmask_trainer(tmp_path, name):
    """Two inner iterations over one rollout batch: the second step is off-policy, every step finite and taken."""
    from test_trainer import ROWS, make_model, recipe

    from unmask.rl.trainer import Trainer

    rollout = {"block_length": 1, "steps": 8} if name == "justgrpo" else {}
    trainer = Trainer(recipe(tmp_path, name, rollout=rollout, optim={"max_steps": 1}), model_factory=make_model, rows=ROWS)
    metrics = trainer.train_step()
    assert metrics["skipped"] == 0.0 and metrics["optimizer_steps"] >= 2.0
    assert math.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0


def test_cj_grpo_on_a_block_1_rollout_has_justgrpos_gradient(model):
    """Block 1, T = L: CJ-GRPO replays JustGRPO's canvases; with every A ≠ 0 both normalisers are B·L,
    so on-policy (μ 1, β 0) the two gradients agree."""
    length = 4
    traj = generate(model, torch.randint(5, 60, (4, 5)), gen_length=length, steps=length, block_length=1,
                    temperature=1.0, seed=6, record=True)
    rollout = Rollout(traj, [{}] * 4, torch.tensor([1.0, 0.0, 0.5, 0.2]), torch.zeros(4, dtype=torch.bool), 4)
    grads = []
    for config in (CJGRPOConfig(), JustGRPOConfig(replay_chunk=length)):
        objective = build(config, length, model.process)
        batch = objective.prepare(rollout, None)
        assert (batch.advantages != 0).all()
        key = objective.key(batch, 0) if config.name == "justgrpo" else 0
        loss, _ = objective.loss(batch, objective.estimator.token_logprobs(model, batch.traj, key), None, None)
        grads.append(parameter_grads(model, loss))
    for cj, just in zip(*grads, strict=True):
        torch.testing.assert_close(cj, just, atol=1e-7, rtol=1e-5)
