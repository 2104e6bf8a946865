"""The rollout engine against the reference sampler, and its strategies' contracts."""

from __future__ import annotations

import pytest
import torch
from reference_sampler import random_tiny, reference_generate

from unmask.errors import UserError
from unmask.rollouts.generate import generate
from unmask.rollouts.schedules import step_counts


@pytest.fixture(scope="module")
def model():
    return random_tiny(seed=0)


@pytest.fixture(scope="module")
def prompts():
    return torch.randint(5, 100, (3, 9), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("gen_length", "steps", "block_length", "batch"),
    [(16, 8, 8, 1), (16, 8, 8, 3), (12, 5, 4, 3), (24, 7, 8, 2), (16, 16, 16, 3), (15, 4, 5, 1), (8, 2, 8, 3)],
)
def test_greedy_low_confidence_matches_reference(model, prompts, gen_length, steps, block_length, batch):
    ids = prompts[:batch]
    ours = generate(model, ids, gen_length=gen_length, steps=steps, block_length=block_length)
    ref = reference_generate(model, ids, gen_length=gen_length, steps=steps, block_length=block_length)
    assert torch.equal(ours.tokens, ref)
    assert (ours.answer_ids != model.mask_token_id).all()


def test_cfg_matches_reference(model, prompts):
    kwargs = {"gen_length": 12, "steps": 6, "block_length": 6}
    ours = generate(model, prompts, cfg_scale=1.5, **kwargs)
    assert torch.equal(ours.tokens, reference_generate(model, prompts, cfg_scale=1.5, **kwargs))
    assert not torch.equal(ours.tokens, generate(model, prompts, **kwargs).tokens)
    assert ours.nfe.tolist() == [12, 12, 12]


@pytest.mark.parametrize("remasking", ["low_confidence", "rcr"])
def test_left_padded_row_equals_prompt_alone(model, prompts, remasking):
    short = prompts[1, 3:]
    padded = torch.cat([torch.full((3,), model.pad_token_id), short])
    batch = torch.stack([prompts[0], padded])
    mask = torch.stack([torch.ones(9, dtype=torch.long), (torch.arange(9) >= 3).long()])
    kwargs = {"gen_length": 12, "steps": 6, "block_length": 6, "remasking": remasking, "temperature": 0.7, "seed": [5, 9]}
    together = generate(model, batch, attention_mask=mask, **kwargs)
    alone = generate(model, short[None], **{**kwargs, "seed": [9]})
    assert torch.equal(together.answer_ids[1], alone.answer_ids[0])
    assert together.attention_mask[1, :3].sum() == 0


def test_same_seed_same_tokens_and_rows_independent_of_batch(model, prompts):
    kwargs = {"gen_length": 12, "steps": 6, "block_length": 4, "temperature": 1.0, "remasking": "random"}
    first = generate(model, prompts, seed=11, **kwargs)
    assert torch.equal(first.tokens, generate(model, prompts, seed=11, **kwargs).tokens)
    assert not torch.equal(first.tokens, generate(model, prompts, seed=12, **kwargs).tokens)
    row2 = generate(model, prompts[2:], seed=[13], **kwargs)  # row 2 of seed=11 has seed 13
    assert torch.equal(first.tokens[2], row2.tokens[0])
    assert first.settings["seed"] == [11, 12, 13]


@pytest.mark.parametrize("schedule", ["linear", "cosine", "pow_k", "log", "exp"])
def test_schedules_commit_exactly_the_masked_count(schedule):
    masked = torch.tensor([0, 1, 7, 16, 33])
    counts = step_counts(masked, 5, schedule, k=3)
    assert torch.equal(counts.sum(1), masked)
    assert (counts >= 0).all()


def test_linear_schedule_gives_remainder_to_earliest_steps():
    assert step_counts(torch.tensor([7, 3]), 3).tolist() == [[3, 2, 2], [1, 1, 1]]
    assert step_counts(torch.tensor([4]), 3).tolist() == [[2, 1, 1]]


def test_cosine_schedule_commits_few_first_many_last():
    counts = step_counts(torch.tensor([64]), 8, "cosine")[0]
    assert counts[0] < counts[-1]
    assert not torch.equal(counts, step_counts(torch.tensor([64]), 8)[0])


@pytest.mark.parametrize("remasking", ["low_confidence", "random", "margin", "entropy", "rcr"])
def test_strategies_follow_the_schedule_per_step(model, prompts, remasking):
    traj = generate(model, prompts, gen_length=12, steps=6, block_length=4, remasking=remasking, temperature=0.5, seed=0, record=True)
    masked_per_step = traj.step_masked.sum(-1)  # [T, B]
    # 3 blocks × 2 steps, 4 tokens per block: masked before each step = 12, 10, 8, 6, 4, 2
    assert masked_per_step.T.tolist() == [[12, 10, 8, 6, 4, 2]] * 3
    assert (traj.answer_ids != model.mask_token_id).all()
    assert traj.commit_step.max() == 5 and traj.nfe.tolist() == [6, 6, 6]


def test_strategies_differ(model, prompts):
    outs = {
        name: generate(model, prompts, gen_length=16, steps=16, block_length=16, remasking=name, seed=0).tokens
        for name in ("low_confidence", "random", "margin", "entropy")
    }
    assert len({tuple(t.flatten().tolist()) for t in outs.values()}) == 4


def test_threshold_commits_at_least_one_per_step_and_stops_early(model, prompts):
    traj = generate(model, prompts, gen_length=16, steps=16, block_length=8, threshold=0.1, record=True)
    after = torch.cat([traj.step_masked[1:], torch.zeros_like(traj.step_masked[:1])])
    committed = (traj.step_masked & ~after).sum(-1)  # [T, B]
    assert (traj.answer_ids != model.mask_token_id).all()
    assert traj.num_steps < 16
    # a row is charged a forward exactly at the steps where it commits (>= 1 token)
    assert torch.equal((committed > 0).sum(0), traj.nfe)
    assert (committed.sum(0) == 16).all() and (traj.nfe < 16).all()
    strict = generate(model, prompts, gen_length=16, steps=16, block_length=8, threshold=1.0)
    assert strict.nfe.tolist() == [16, 16, 16]  # nothing reaches p > 1: one token per step


def test_hints_are_kept_and_excluded_from_the_schedule(model, prompts):
    hints = torch.full((3, 12), -1, dtype=torch.long)
    hints[0, [0, 5]] = torch.tensor([40, 41])
    hints[2, 11] = 42
    for remasking in ("low_confidence", "rcr"):
        traj = generate(model, prompts, gen_length=12, steps=4, block_length=6, hints=hints, remasking=remasking, record=True)
        assert traj.answer_ids[0, [0, 5]].tolist() == [40, 41] and traj.answer_ids[2, 11] == 42
        assert torch.equal(traj.hint_mask, hints >= 0)
        assert (traj.commit_step[hints >= 0] == -1).all() and (traj.commit_step[hints < 0] >= 0).all()
        assert not (traj.step_masked & traj.hint_mask).any()
        assert traj.step_masked[0].sum(-1).tolist() == [10, 12, 11]


def test_record_rebuilds_the_canvas_the_model_saw(model, prompts):
    seen = []
    embedding = next(m for m in model.modules() if isinstance(m, torch.nn.Embedding))
    hook = embedding.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        for remasking in ("low_confidence", "rcr"):
            seen.clear()
            traj = generate(model, prompts, gen_length=12, steps=6, block_length=6, remasking=remasking, temperature=0.8, seed=3, record=True)
            assert len(seen) == traj.num_steps == 6
            for t, canvas in enumerate(seen):
                assert torch.equal(traj.canvas(t, model.process), canvas)
            assert torch.equal(traj.canvas(traj.num_steps, model.process), traj.tokens)
    finally:
        hook.remove()
    assert traj.step_confidence.dtype == torch.float16 and traj.step_pred.device.type == "cpu"
    assert traj.step_logprob[traj.step_masked].le(0).all()


def test_answer_mask_stops_after_first_eos(model, prompts):
    eos = model.eos_token_ids[0]
    hints = torch.full((3, 8), -1, dtype=torch.long)
    hints[0, 3] = eos
    traj = generate(model, prompts, gen_length=8, steps=4, block_length=8, hints=hints)
    assert traj.answer_mask[0].tolist() == [True] * 4 + [False] * 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gen_length": 10, "block_length": 4}, "multiple of block_length"),
        ({"steps": 0}, "steps must be positive"),
        ({"threshold": 0.9, "remasking": "rcr"}, "exclude each other"),
        ({"remasking": "greedy"}, "unknown remasking"),
        ({"schedule": "square"}, "unknown schedule"),
        ({"confidence": "vibes"}, "unknown confidence"),
        ({"seed": [1, 2]}, "one per row"),
        ({"hints": torch.full((3, 8), -2)}, "hints may hold"),
    ],
)
def test_bad_settings_name_what_to_fix(model, prompts, kwargs, message):
    settings = {"gen_length": 8, "steps": 4, "block_length": 4, **kwargs}
    with pytest.raises(UserError, match=message):
        generate(model, prompts, **settings)


def test_named_choices_match_their_implementations():
    """rollouts/options.py names what cache, schedules and confidence implement."""
    from unmask.rollouts.confidence import DEFAULT_CONFIDENCE
    from unmask.rollouts.options import REMASKING, SCHEDULES
    from unmask.rollouts.schedules import _GAMMAS

    assert set(SCHEDULES) == {"linear", *_GAMMAS}
    assert set(REMASKING) == set(DEFAULT_CONFIDENCE)
