"""BGPO: per-sample tangent/Jensen bounds, REINFORCE on-policy, flat memory in n_t (objectives-2026.md, BGPO (g))."""

from __future__ import annotations

import math

import pytest
import torch
from test_rl_estimators import TINY
from test_rl_old_policy import spy
from test_trainer import ROWS, make_model, recipe

from unmask.diffusion.absorbing import AbsorbingMask
from unmask.errors import RecipeError
from unmask.models.tiny import tiny
from unmask.recipe import BGPOConfig, validate_recipe
from unmask.rl.estimators import Scores, sequence_elbo
from unmask.rl.objective import Rollout, TrainBatch, build_objective
from unmask.rl.trainer import Trainer
from unmask.rollouts.generate import generate
from unmask.rollouts.trajectory import Trajectory


def bgpo(n_t: int = 2, **config):
    return build_objective(BGPOConfig(mc_samples=n_t, **config), process=AbsorbingMask(0), temperature=1.0, gen_length=4)


def item_scores(elbos: list[float]) -> Scores:
    """One item per value, each with that sequence ELBO on its first position."""
    lp = torch.zeros(len(elbos), 4)
    lp[:, 0] = torch.tensor(elbos)
    ones = torch.ones(len(elbos), 4)
    return Scores(lp.requires_grad_(), ones, ones.bool(), ones)


def items(n: int) -> Trajectory:
    return Trajectory(
        tokens=torch.zeros(n, 6, dtype=torch.long), attention_mask=torch.ones(n, 6, dtype=torch.bool), prompt_length=2,
        answer_mask=torch.ones(n, 4, dtype=torch.bool), commit_step=torch.zeros(n, 4, dtype=torch.long),
        hint_mask=torch.zeros(n, 4, dtype=torch.bool), nfe=torch.ones(n),
    )


@pytest.mark.parametrize(("advantage", "bound", "exact"), [
    (1.0, 0.9, math.exp(-0.1)),  # tangent: mean(1 + d) ≤ e^{mean d}
    (-1.0, -(math.exp(0.1) + math.exp(-0.3)) / 2, -math.exp(-0.1)),  # Jensen: −mean e^d ≤ −e^{mean d}
])
def test_tangent_and_jensen_bounds_by_hand(advantage, bound, exact):
    """(g1): d = (0.1, −0.3), n_t = 2: R̂_lb = 0.9 for A = +1, −0.922994 for A = −1; both below R̂."""
    objective = bgpo()
    batch = TrainBatch(items(2), torch.tensor([advantage, advantage]))
    loss, metrics = objective.loss(batch, item_scores([-10.0 + 0.1, -10.0 - 0.3]), item_scores([-10.0, -10.0]), None)
    assert -loss.item() == pytest.approx(bound, abs=1e-6)
    assert -loss.item() <= exact
    assert metrics["bgpo/abs_d"] == pytest.approx(0.2, abs=1e-5)


def test_large_negative_difference_stays_finite():
    """No log(1 + d): d = −3 with A > 0 gives 1 + d = −2, and a huge d with A > 0 never forms e^d."""
    objective = bgpo()
    batch = TrainBatch(items(2), torch.tensor([1.0, 1.0]))
    scores = item_scores([-13.0, 1000.0])
    loss, _ = objective.loss(batch, scores, item_scores([-10.0, -10.0]), None)
    loss.backward()
    assert loss.item() == pytest.approx(-(-2.0 + 1011.0) / 2)
    assert torch.isfinite(scores.logprobs.grad).all()


def test_length_normalised_difference():
    objective = bgpo(length_normalized=True)
    batch = TrainBatch(items(2), torch.tensor([-1.0, -1.0]))
    loss, _ = objective.loss(batch, item_scores([-8.0, -12.0]), item_scores([-10.0, -10.0]), None)
    assert loss.item() == pytest.approx((math.exp(0.5) + math.exp(-0.5)) / 2)  # d / L with L = 4


def test_prepare_makes_one_item_per_answer_and_sample_with_std_scaled_advantages():
    traj = items(4)
    rollout = Rollout(traj, [{}] * 4, torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([1, 0, 0, 0]).bool(), 2)
    batch = bgpo(n_t=3).prepare(rollout, None)
    assert len(batch) == 12
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    torch.testing.assert_close(batch.advantages, torch.tensor([a] * 3 + [-a] * 3 + [0.0] * 6))


def model_items(n_t: int, seed: int = 7):
    model = tiny(TINY, seed=seed).train()
    prompts = torch.randint(5, 60, (2, 4), generator=torch.Generator().manual_seed(seed))
    traj = generate(model, prompts, gen_length=8, steps=8, block_length=8, seed=seed)
    traj.answer_mask[1, 6:] = False
    rows = torch.arange(2).repeat_interleave(n_t)
    return model, traj.select(rows)


@pytest.mark.parametrize("advantage", [0.7, -0.7])
def test_on_policy_bgpo_is_reinforce_on_the_mc_elbo(advantage):
    """(g2): d ≡ 0 ⇒ value A and gradient (A/n_t) Σ_j ∇ℓ^(j), i.e. that of exp(Ê_θ − sg Ê_θ)·A."""
    n_t = 3
    model, traj = model_items(n_t)
    objective = build_objective(BGPOConfig(mc_samples=n_t), process=model.process, temperature=1.0,
                                gen_length=8)
    batch = TrainBatch(traj, torch.full((2 * n_t,), advantage))
    scores = objective.estimator.token_logprobs(model, traj, 4)
    loss, _ = objective.loss(batch, scores, None, None)
    assert loss.item() == pytest.approx(-advantage)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    elbo = sequence_elbo(objective.estimator.token_logprobs(model, traj, 4)).reshape(2, n_t).mean(1)  # Ê per answer
    ratio_form = -(torch.exp(elbo - elbo.detach()) * advantage).mean()
    for got, want in zip(grads, torch.autograd.grad(ratio_form, list(model.parameters())), strict=True):
        torch.testing.assert_close(got, want)
    assert any(g.abs().sum() > 0 for g in grads)


class SavedActivations:
    """Bytes autograd keeps for backward, counted once per storage while alive: the graph's memory on the CPU."""

    def __init__(self) -> None:
        self.alive: dict[int, list[int]] = {}  # storage pointer -> [bytes, holders]
        self.now = self.peak = 0

    def pack(self, tensor: torch.Tensor) -> _Held:
        return _Held(tensor, self)

    @staticmethod
    def unpack(held: _Held) -> torch.Tensor:
        return held.tensor

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


class _Held:
    def __init__(self, tensor: torch.Tensor, meter: SavedActivations) -> None:
        self.tensor, self.meter = tensor, meter
        storage = tensor.untyped_storage()
        self.key = storage.data_ptr()
        entry = meter.alive.setdefault(self.key, [storage.nbytes(), 0])
        if entry[1] == 0:
            meter.now += entry[0]
            meter.peak = max(meter.peak, meter.now)
        entry[1] += 1

    def __del__(self) -> None:
        entry = self.meter.alive[self.key]
        entry[1] -= 1
        if entry[1] == 0:
            self.meter.now -= entry[0]
            del self.meter.alive[self.key]


def bgpo_gradient(n_t: int, per_item_backward: bool) -> tuple[list[torch.Tensor], int]:
    """Off-policy BGPO gradient over 2 answers × ``n_t`` items, micro-batches of 2 items; and peak saved bytes."""
    model, traj = model_items(n_t)
    old_model = tiny(TINY, seed=8).eval()  # θ_old ≠ θ, so both bounds are active
    objective = build_objective(BGPOConfig(mc_samples=n_t), process=model.process, temperature=1.0,
                                gen_length=8)
    batch = TrainBatch(traj, torch.tensor([0.9] * n_t + [-0.9] * n_t))
    micro = [batch.select([i, i + 1]) for i in range(0, len(batch), 2)]
    meter, total = SavedActivations(), 0.0
    model.zero_grad()
    with meter.hooks():
        for j, mb in enumerate(micro):
            with torch.no_grad():
                old = objective.estimator.token_logprobs(old_model, mb.traj, j)
            loss, _ = objective.loss(mb, objective.estimator.token_logprobs(model, mb.traj, j), old, None)
            if per_item_backward:
                (loss * len(mb) / len(batch)).backward()
            else:
                total = total + loss * len(mb) / len(batch)
        if not per_item_backward:
            total.backward()
    return [p.grad.clone() for p in model.parameters()], meter.peak


def test_separate_backwards_match_the_summed_one_with_memory_flat_in_n_t():
    """(g3): per-item backwards = one backward of the sum; their peak graph memory does not grow with n_t."""
    peaks = {}
    for n_t in (2, 8):
        separate, peaks["items", n_t] = bgpo_gradient(n_t, per_item_backward=True)
        summed, peaks["sum", n_t] = bgpo_gradient(n_t, per_item_backward=False)
        for a, b in zip(separate, summed, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        assert any(g.abs().sum() > 0 for g in separate)
    assert peaks["items", 8] <= 1.05 * peaks["items", 2]
    assert peaks["sum", 8] >= 2.5 * peaks["sum", 2]  # the meter does see graphs pile up


def test_bound_is_active_on_the_trainers_later_optimizer_steps(tmp_path):
    """Several optimizer steps per rollout batch: θ_old is scored, so d ≠ 0 after the first step."""
    r = recipe(tmp_path, "bgpo", algorithm={"num_iterations": 1, "mc_samples": 2},
               optim={"gradient_accumulation_steps": 1})
    trainer = Trainer(r, model_factory=make_model, rows=ROWS)
    calls = spy(trainer)
    assert trainer.train_step()["skipped"] == 0.0
    assert len(calls) == 4  # 2 prompts × 2 answers × 2 samples, micro-batches of 2
    assert calls[0]["old"] is None and calls[0]["metrics"]["bgpo/abs_d"] == 0.0  # on-policy: REINFORCE
    assert all(call["old"] is not None for call in calls[1:])
    assert max(call["metrics"]["bgpo/abs_d"] for call in calls[1:]) > 1e-4  # θ moved: the bound is active


def test_recipe_errors_name_the_bgpo_key():
    with pytest.raises(RecipeError, match=r"unknown key 'algorithm.n_t'; allowed keys: .*mc_samples"):
        validate_recipe({"algorithm": {"name": "bgpo", "n_t": 4}}, "r.yaml")
    with pytest.raises(RecipeError, match="algorithm.*beta must be 0: bgpo has no KL term"):
        validate_recipe({"algorithm": {"name": "bgpo", "beta": 0.01}}, "r.yaml")
