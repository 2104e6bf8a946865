"""The sampler's parts (issue 29, point 2): rule selection, one-file rules, the per-round plan, batched draws."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from reference_sampler import random_tiny

import unmask.rollouts.draws as draws_module
import unmask.rollouts.rules.registry as registry
from unmask.diffusion.uniform import UniformNoise
from unmask.rollouts.absorbing.round import plan
from unmask.rollouts.draws import RowDraws
from unmask.rollouts.generate import generate
from unmask.rollouts.rules.base import BlockStart, RuleSettings

ROOT = Path(__file__).resolve().parents[1]
GEN, BLOCK, STEPS = 12, 4, 6


@pytest.fixture(scope="module")
def model():
    return random_tiny(seed=3, scale=0.3)


def settings(process, **overrides) -> RuleSettings:
    values = {"remasking": "low_confidence", "threshold": None, "dynamic_threshold": None, "schedule": "linear",
              "schedule_k": 2.0, "block_length": BLOCK, "block_steps": STEPS * BLOCK // GEN, **overrides}
    return RuleSettings(process=process, **values)


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({}, "TopKSchedule"),
        ({"remasking": "random"}, "TopKSchedule"),
        ({"threshold": 0.9}, "Threshold"),
        ({"dynamic_threshold": 0.9}, "DynamicThreshold"),
        ({"remasking": "rcr"}, "RunningConfidence"),
    ],
)
def test_the_settings_select_exactly_one_rule(model, overrides, rule):
    assert type(registry.rule_for(settings(model.process, **overrides))).__name__ == rule


def test_a_rule_is_one_new_file(model, tmp_path, monkeypatch):
    """A module dropped into the rules folder is found; here a rule of its own process (uniform noise)."""
    (tmp_path / "accept_all.py").write_text(textwrap.dedent('''
        from unmask.diffusion.uniform import UniformNoise
        from unmask.rollouts.rules.base import DecodingRule


        class AcceptAll(DecodingRule):
            @classmethod
            def build(cls, settings):
                return cls() if isinstance(settings.process, UniformNoise) else None

            def start(self, block):
                return 1

            def commits(self, step):
                return step.scope
    '''))
    import unmask.rollouts.rules as rules

    uniform = UniformNoise(vocab_size=50, block_size=BLOCK)
    with monkeypatch.context() as patch:
        patch.setattr(rules, "__path__", [*rules.__path__, str(tmp_path)])
        patch.delitem(sys.modules, "unmask.rollouts.rules.accept_all", raising=False)
        registry.rule_classes.cache_clear()
        assert type(registry.rule_for(settings(uniform))).__name__ == "AcceptAll"
        assert type(registry.rule_for(settings(model.process))).__name__ == "TopKSchedule"  # the absorbing rules stay
    registry.rule_classes.cache_clear()
    with pytest.raises(ValueError, match="none"):
        registry.rule_for(settings(uniform))  # without the file, no rule serves uniform noise


def test_rule_modules_import_from_the_repository_root():
    """The rules folder is a namespace portion like rollouts/ (no __init__.py), importable by its unmask name."""
    assert not (ROOT / "rollouts" / "rules" / "__init__.py").exists()
    code = "import unmask.rollouts.rules.registry as r; print(sorted(c.__name__ for c in r.rule_classes()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "TopKSchedule" in out and "RunningConfidence" in out


@pytest.mark.parametrize("remasking", ["low_confidence", "rcr"])
def test_the_round_plan_is_what_each_step_predicts(model, remasking):
    """Scheduled rules read each round's work once: rows with anything to predict and positions, per step.

    Hints make rows run out of work at different steps (zero counts); recording predicts
    every noised position, the future rounds included. The plan must equal what the
    recorded steps actually predicted.
    """
    prompts = torch.randint(5, 100, (3, 5), generator=torch.Generator().manual_seed(1))
    hints = torch.full((3, GEN), -1, dtype=torch.long)
    hints[0, 1:4] = 9  # row 0: one free position in round 0
    hints[1, 4:8] = 11  # row 1: round 1 fully hinted
    hints[2, 8:11] = 13  # row 2: one free position in the last round
    traj = generate(model, prompts, gen_length=GEN, steps=STEPS, block_length=BLOCK, hints=hints, record=True,
                    remasking=remasking, temperature=0.7, seed=4)
    rule = registry.rule_for(settings(model.process, remasking=remasking))
    rounds = torch.arange(GEN).expand(3, GEN) // BLOCK
    per_round, plans = STEPS * BLOCK // GEN, []
    for block in range(GEN // BLOCK):
        masked = traj.step_masked[block * per_round]
        in_reach = rounds <= block
        rule.start(BlockStart(block, rounds == block, in_reach, masked, traj.hint_mask))
        work = plan(rule, (masked & ~in_reach).sum(1))
        seen = traj.step_masked[block * per_round : (block + 1) * per_round]
        assert work == [(int(m.any(1).sum()), int(m.sum())) for m in seen]
        plans += work
    assert any(rows < 3 for rows, _ in plans)  # a row really left the forward


def test_a_rounds_draws_in_one_call_equal_step_by_step_draws(model, monkeypatch):
    seeds, length = [5, 9], 7
    at_once = RowDraws(seeds, length, torch.device("cpu")).take(3)
    single = RowDraws(seeds, length, torch.device("cpu"))
    assert torch.equal(at_once, torch.cat([single.take(1) for _ in range(3)]))
    assert at_once.shape == (3, 2, 2, length)
    assert not torch.equal(at_once[:, :, 0], at_once[:, :, 1])  # each row has its own stream
    monkeypatch.setattr(draws_module, "CHUNK_VALUES", 2 * 2 * 2 * length)  # chunks of two steps
    chunked = RowDraws(seeds, length, torch.device("cpu"))
    chunked.start(3, ahead=True)
    assert torch.equal(at_once, torch.stack([chunked.next() for _ in range(3)]))
    # and a sampled rollout does not depend on the chunking
    prompts = torch.randint(5, 100, (2, 5), generator=torch.Generator().manual_seed(1))
    options = {"gen_length": GEN, "steps": STEPS, "block_length": BLOCK, "temperature": 0.8, "remasking": "random", "seed": 3}
    small = generate(model, prompts, **options)
    monkeypatch.undo()
    assert torch.equal(small.tokens, generate(model, prompts, **options).tokens)


@pytest.mark.parametrize("overrides", [{}, {"threshold": 0.9}, {"dynamic_threshold": 0.9}, {"remasking": "rcr"}])
def test_rule_decisions_never_read_the_device(model, overrides):
    """On the meta device any host read (``.item()``, ``.tolist()``, a data-dependent shape) raises."""
    from unmask.rollouts.rules.base import Step
    from unmask.rollouts.rules.early_exit import EarlyExit

    batch, meta = 3, torch.device("meta")
    masks = [torch.empty(batch, GEN, dtype=torch.bool, device=meta) for _ in range(4)]
    rule = registry.rule_for(settings(model.process, **overrides))
    if "remasking" not in overrides:
        rule = EarlyExit(rule, torch.empty(2, dtype=torch.long, device=meta), 1)
    steps = rule.start(BlockStart(0, *masks))
    tokens = torch.empty(batch, GEN, dtype=torch.long, device=meta)
    conf = torch.empty(batch, GEN, dtype=torch.float64, device=meta)
    for index in range(steps):
        step = Step(index, tokens, masks[2], rule.scope(masks[2], masks[1]), masks[2], tokens, conf, conf)
        assert rule.commits(step).shape == (batch, GEN)
        remask = rule.remask(step)
        assert remask is None or remask.shape == (batch, GEN)
        assert rule.recorded_confidence(step).shape == (batch, GEN)
