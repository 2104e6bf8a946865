"""IGPO's prepare step with the real sampler and reward runner on the tiny family."""

from __future__ import annotations

import pytest
import torch

from unmask.models.tiny import tiny
from unmask.recipe import IGPOConfig, RolloutConfig
from unmask.rewards.registry import RewardSpec
from unmask.rewards.runner import RewardRunner
from unmask.rl.objective import Rollout, build_objective
from unmask.rl.rollout import Rollouts, encode_prompts, local_sampler

GEN = 40
REASONING = "aaaaaaaaaaaaaaaaaaaaaaaaa #### bbbbb"


def hinted_reward(prompts, completions, always, **columns):
    """Correct when the row says so, or when the answer copies a hinted chunk of a's."""
    return [1.0 if ok or "aaaaa" in c else 0.0 for ok, c in zip(always, completions, strict=True)]


@pytest.fixture(scope="module")
def setup():
    model = tiny({"n_layers": 1, "d_model": 32, "n_heads": 2, "mlp_hidden_size": 64}, seed=0).eval()
    runner = RewardRunner([RewardSpec("test_rl_igpo:hinted_reward")], num_workers=0)
    settings = RolloutConfig(num_generations=4, max_completion_length=GEN, steps=8, block_length=GEN, temperature=1.0)
    ctx = Rollouts(local_sampler(model), settings, runner.score, model.tokenizer, process=model.process,
                   eos_ids=model.eos_token_ids, correct_threshold=1.0, record=False)
    calls = []
    real = ctx.generate

    def recording(prompt_ids, attention_mask, hints=None):
        calls.append((prompt_ids, hints))
        return real(prompt_ids, attention_mask, hints)

    ctx.generate = recording
    return model, ctx, calls


def test_igpo_hints_only_all_wrong_groups_and_never_the_answer(setup):
    model, ctx, calls = setup
    groups = [  # (prompt, always correct, reasoning column present)
        ("group zero", False, True),   # all wrong, hintable -> hinted
        ("group one", True, True),     # has correct answers -> never hinted
        ("group two", False, False),   # all wrong but no reasoning -> unhintable
    ]
    rows = []
    for prompt, always, has_trace in groups:
        row = {"prompt": prompt, "always": always}
        if has_trace:
            row["reasoning"] = REASONING
        rows += [row] * 4
    ids, attention = encode_prompts(model.tokenizer, [r["prompt"] for r in rows], model.pad_token_id)
    ctx.seed = 3
    traj = ctx.generate(ids, attention)
    calls.clear()
    scored = ctx.score(traj, rows)
    assert scored.correct.tolist() == [False] * 4 + [True] * 4 + [False] * 4
    objective = build_objective(IGPOConfig(free_tail=10), process=model.process, temperature=1.0, gen_length=GEN)
    batch = objective.prepare(Rollout(traj, rows, scored.rewards, scored.correct, 4, seed=5), ctx)

    assert len(calls) == 1
    prompt_ids, hints = calls[0]
    assert torch.equal(prompt_ids, ids[:4])  # only the hintable all-wrong group
    answer_ids = set(model.tokenizer("bbbbb", add_special_tokens=False)["input_ids"])
    marker_ids = set(model.tokenizer("####", add_special_tokens=False)["input_ids"])
    shown = hints[hints >= 0].tolist()
    assert shown and not (set(shown) & (answer_ids | marker_ids))  # the final answer is never hinted
    assert not (hints[:, GEN - 10:] >= 0).any()  # the free tail stays free
    # hinted answers copy the a's, so they are correct: up to ⌊0.5 · 4⌋ = 2 replace originals
    assert batch.metrics["igpo/replaced"] == 2.0 and batch.metrics["igpo/unhintable"] == 4.0
    assert batch.traj.hint_mask[:2].any(1).all() and not batch.traj.hint_mask[2:].any()
    assert batch.advantages[:2].gt(0).all() and batch.advantages[2:4].lt(0).all()
    assert batch.advantages[4:].eq(0).all()
