"""Fast-rollout settings reach the sampler: recipe → trainer → Ray pool, and ``unmask eval``."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from unmask.cli import main
from unmask.errors import UserError
from unmask.evaluation import EvalSettings, benchmark_rows, evaluate, read_samples, settings_grid
from unmask.evaluation.settings import parse_caches, parse_thresholds
from unmask.models.tiny import tiny
from unmask.recipe import validate_recipe
from unmask.rl.trainer import Trainer

SMALL = {"n_layers": 1, "d_model": 32, "n_heads": 2, "mlp_hidden_size": 64}
make_model = functools.partial(tiny, SMALL, seed=0)
ROWS = [{"prompt": f"write digits {i}"} for i in range(4)]


def length_reward(prompts, completions, **columns):
    return [len(c) / 10 for c in completions]


def test_default_label_is_unchanged_and_speed_settings_get_their_own() -> None:
    exact = EvalSettings(16, 16, 16)
    fast = EvalSettings(16, 16, 16, cache="dual", threshold=0.9)
    assert exact.label == "len16-steps16-block16-low_confidence-t0"  # resumed logs keep matching
    assert fast.label == "len16-steps16-block16-low_confidence-t0-dualcache-th0.9"
    assert fast.as_dict()["cache"] == "dual" and fast.as_dict()["threshold"] == 0.9
    grid = settings_grid([8], caches=parse_caches("none,dual"), thresholds=parse_thresholds("0.9,0.5"))
    assert [(s.cache, s.threshold) for s in grid] == [("none", 0.9), ("none", 0.5), ("dual", 0.9), ("dual", 0.5)]
    assert parse_thresholds(None) == [None] and parse_caches(None) == ["none"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: EvalSettings(8, 8, 8, cache="kv"), "--cache 'kv': choose from none, prompt, prefix, dual, delayed"),
        (lambda: EvalSettings(8, 8, 8, threshold=1.5), r"--threshold must be in \(0, 1\]"),
        (lambda: EvalSettings(8, 8, 8, remasking="rcr", threshold=0.9), "--threshold and --remasking rcr"),
        (lambda: parse_thresholds("high"), "--threshold expects a comma list of numbers"),
        (lambda: parse_caches(","), "--cache is empty"),
    ],
)
def test_bad_speed_settings_name_the_option(make, message) -> None:
    with pytest.raises(UserError, match=message):
        make()


def test_unmask_eval_runs_each_cache_and_threshold(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    make_model().save_pretrained(model_dir)
    out = tmp_path / "eval"
    args = ["eval", "--model", str(model_dir), "--gen-length", "8", "--block-length", "4", "--limit", "3"]
    assert main([*args, "--cache", "none,dual", "--threshold", "0.9", "--out", str(out)]) == 0
    records = read_samples(out / "samples.jsonl")
    by_label = {r["setting"]: r for r in records}
    assert sorted(by_label) == [
        "len8-steps4-block4-low_confidence-t0-dualcache-th0.9",
        "len8-steps4-block4-low_confidence-t0-th0.9",
    ]
    assert {r["settings"]["cache"] for r in records} == {"none", "dual"} and len(records) == 6


def test_eval_settings_reach_the_sampler() -> None:
    """``evaluate`` hands cache and threshold to the sampler, which records and uses them."""
    seen = []

    def spy(model, prompt_ids, **kwargs):
        from unmask.rollouts.generate import generate

        seen.append(generate(model, prompt_ids, record=True, **kwargs))
        return seen[-1]

    rows = benchmark_rows("countdown", limit=4)
    setting = EvalSettings(8, 8, 4, cache="dual", threshold=0.9)
    result = evaluate(make_model(), rows, "countdown", setting, batch_size=4, generate_fn=spy)
    (traj,) = seen
    assert traj.settings["cache"] == "dual" and traj.settings["threshold"] == 0.9
    assert traj.step_cached.any()  # later steps of each block ran against the cache
    assert [r["nfe"] for r in result.records] == traj.nfe.tolist()


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def test_recipe_with_dual_cache_trains_through_the_ray_pool(tmp_path: Path, ray_session) -> None:
    raw = {
        "seed": 0,
        "output_dir": str(tmp_path / "run"),
        "lora": {"r": 2, "alpha": 4},
        "data": {"chat_template": False},
        "rollout": {"num_generations": 2, "prompts_per_step": 2, "max_completion_length": 8, "steps": 8,
                    "block_length": 4, "temperature": 1.0, "remasking": "rcr", "cache": "dual"},
        "algorithm": {"name": "mdpo", "correct_threshold": 0.3, "sample_train_steps": 2},
        "rewards": {"functions": [{"name": "test_cache_wiring:length_reward"}], "num_workers": 0},
        "optim": {"max_steps": 2, "learning_rate": 1e-2, "per_device_train_batch_size": 4},
        "ray": {"address": "local", "num_workers": 1},
        "logging": {"progress": False},
    }  # fmt: skip
    trainer = Trainer(validate_recipe(raw, "test"), model_factory=make_model, rows=ROWS)
    assert trainer.pool is not None and trainer.pool.num_workers == 1
    trajectories = []
    pooled = trainer.rollouts.sample

    def keep(prompt_ids: torch.Tensor, **kwargs):
        trajectories.append(pooled(prompt_ids, **kwargs))
        return trajectories[-1]

    trainer.rollouts.sample = keep  # records what the pool returns; sampling stays in the actor
    records = list(trainer.steps())
    assert len(records) == 2 and len(trajectories) == 2
    # two blocks of four steps: each block's first step fills the cache, the other three reuse it
    cached = torch.tensor([False, True, True, True] * 2)[:, None].expand(8, 4)
    for traj in trajectories:
        assert traj.settings["cache"] == "dual"
        assert torch.equal(traj.step_cached, cached)
