"""The TRL front end trains the tiny model with TRL's machinery and unmask's loss, and matches unmask's trainer."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import TrainerCallback

from unmask.data import load_rows
from unmask.data.countdown import TINY_TEMPLATE
from unmask.errors import UserError
from unmask.integrations.trl import DiffusionGRPOConfig, DiffusionGRPOTrainer
from unmask.models import load_model
from unmask.recipe import validate_recipe
from unmask.rewards.functions import countdown_reward
from unmask.rl.checkpoint import trainable_state
from unmask.rl.trainer import Trainer

MODEL = "builtin:tiny-countdown"


def countdown_rows(n: int) -> list[dict[str, Any]]:
    rows = load_rows("countdown", limit=n, template=TINY_TEMPLATE, seed=7)
    return [{"prompt": r["prompt"], "nums": r["nums"], "target": r["target"]} for r in rows]


async def short_answer(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    """A user's own TRL-style reward (async, as TRL allows for judges): shorter answers score higher."""
    return [1.0 / (1 + len(c)) for c in completions]


def config(tmp_path: Path, **overrides: Any) -> DiffusionGRPOConfig:
    values: dict[str, Any] = dict(
        output_dir=str(tmp_path / "run"), use_cpu=True, bf16=False, report_to=[], disable_tqdm=True,
        gradient_checkpointing=False, max_steps=3, per_device_train_batch_size=16, num_generations=8,
        max_completion_length=16, steps=16, temperature=1.5, learning_rate=1e-2, beta=0.04,
        logging_steps=1, save_steps=3, seed=0,
    )
    values.update(overrides)
    return DiffusionGRPOConfig(**values)


class StepCounter(TrainerCallback):
    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps += 1


def test_three_steps_with_lora_and_trl_rewards(tmp_path: Path) -> None:
    args = config(tmp_path, reward_weights=[1.0, 0.1], report_to=["tensorboard"], log_completions=True,
                  num_completions_to_print=0, per_device_eval_batch_size=8)
    counter = StepCounter()
    trainer = DiffusionGRPOTrainer(
        MODEL, reward_funcs=[countdown_reward, short_answer], args=args,
        train_dataset=Dataset.from_list(countdown_rows(16)), eval_dataset=Dataset.from_list(countdown_rows(2)),
        peft_config=LoraConfig(r=4, lora_alpha=8), callbacks=[counter],
    )
    before = {k: v.clone() for k, v in trainable_state(trainer.model).items()}
    assert before and all("lora_" in k for k in before)
    trainer.train()

    after = trainable_state(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before), "the adapter did not change"
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3
    for entry in logs:
        assert math.isfinite(entry["loss"])
        for key in ("reward", "rewards/countdown_reward/mean", "rewards/short_answer/mean", "kl", "entropy"):
            assert key in entry, key
    assert logs[-1]["kl"] > 0  # the reference (adapter disabled) differs from the trained policy
    assert (tmp_path / "run" / "checkpoint-3" / "adapter_config.json").is_file()
    assert counter.steps == 3
    assert list((tmp_path / "run").rglob("events.out.tfevents.*"))  # report_to=["tensorboard"]
    assert list((tmp_path / "run" / "completions").glob("*.parquet"))  # log_completions
    assert math.isfinite(trainer.evaluate()["eval_loss"])


#: enough problems that the step's two sampled prompts get answers of different rewards (seed 3)
MIXED_REWARDS = 32


def test_loss_equals_unmask_trainer(tmp_path: Path) -> None:
    """Same batch, same estimator key, same weights: TRL's compute_loss equals the loss unmask's update reports."""
    rows = countdown_rows(MIXED_REWARDS)
    recipe = validate_recipe({
        "seed": 3, "output_dir": str(tmp_path / "unmask"),
        "model": {"name_or_path": MODEL},
        "lora": {"r": 4, "alpha": 8},
        "data": {"chat_template": False},
        "rollout": {"num_generations": 4, "prompts_per_step": 2, "max_completion_length": 16, "steps": 16,
                    "block_length": 16, "temperature": 1.0},
        "algorithm": {"name": "diffu_grpo", "beta": 0.04, "epsilon": 0.5, "estimator": "one_step", "p_mask": 0.3},
        "rewards": {"functions": [{"name": "countdown"}], "num_workers": 0},
        "optim": {"per_device_train_batch_size": 8, "max_steps": 1},
        "logging": {"progress": False, "report_to": ["jsonl"]},
        "ray": {"address": None},
    }, "test")
    native = Trainer(recipe, rows=rows)
    with torch.no_grad():  # a trained-looking adapter, so policy, θ_old-free ratio and reference all differ
        for name, param in native.unwrapped.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    rollout, _ = native.rollout()
    batch = native.objective.prepare(rollout, native.rollouts)
    assert batch.advantages.abs().sum() > 0
    state = {k: v.clone() for k, v in trainable_state(native.unwrapped).items()}

    args = config(tmp_path, seed=3, beta=0.04, epsilon=0.5, p_mask=0.3, scale_rewards="none", max_steps=1)
    trl = DiffusionGRPOTrainer(
        load_model(MODEL), reward_funcs=countdown_reward, args=args,
        train_dataset=Dataset.from_list(rows), peft_config=LoraConfig(r=4, lora_alpha=8),
    )
    missing = trl.model.load_state_dict(state, strict=False)
    assert not missing.unexpected_keys and all("lora_" not in k for k in missing.missing_keys)
    trl._batch = batch  # the same prepared batch: the update engine cuts it, keys it and scores the reference
    trl._plan_update()
    trl.model.train()
    trl_loss = float(trl.compute_loss(trl.model, trl._buffered_inputs[0]).detach())

    native_loss = native.update(batch)["loss"]
    assert trl_loss == pytest.approx(native_loss, rel=1e-6, abs=1e-9)
    assert trl._metrics["train"]["kl"][-1] > 0


def test_config_errors_are_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="algorithm.name"):
        config(tmp_path, algorithm="ppo").recipe()
    with pytest.raises(UserError, match="estimator"):
        config(tmp_path, estimator="exact").recipe()
    rows = Dataset.from_list(countdown_rows(4))
    with pytest.raises(UserError, match="reward_funcs"):
        DiffusionGRPOTrainer(MODEL, reward_funcs="countdown", args=config(tmp_path), train_dataset=rows)
    with pytest.raises(UserError, match="use_vllm"):
        DiffusionGRPOTrainer(MODEL, reward_funcs=countdown_reward, args=config(tmp_path, use_vllm=True), train_dataset=rows)


@pytest.mark.parametrize(
    ("algorithm", "extra"),
    [
        ("mdpo", {"remasking": "rcr", "steps": 8, "algorithm_kwargs": {"sample_train_steps": 2}}),
        ("igpo", {}),
        ("wd1", {}),
        ("spg", {"beta": 0.0, "algorithm_kwargs": {"mask_block_length": 8}}),
        ("espo", {}),
        ("bgpo", {"beta": 0.0, "algorithm_kwargs": {"mc_samples": 2}}),
        ("coupled_grpo", {}),
        ("cj_grpo", {"beta": 0.0}),
        ("gdsd", {"algorithm_kwargs": {"mc_samples": 1}}),
        ("justgrpo", {"beta": 0.0, "block_length": 1}),
    ],
)
def test_other_objectives_run_through_trl(tmp_path: Path, algorithm: str, extra: dict[str, Any]) -> None:
    """Objectives with their own batch preparation (MDPO's per-step items and intermediate rewards,
    IGPO's hinted regeneration, wd1's weights) and the 2026 ones (SPG, ESPO, BGPO, coupled-GRPO, CJ-GRPO,
    GDSD, JustGRPO on block-1 rollouts) train through TRL too."""
    args = config(tmp_path, algorithm=algorithm, max_steps=1, save_strategy="no", **extra)
    trainer = DiffusionGRPOTrainer(
        MODEL, reward_funcs=countdown_reward, args=args, train_dataset=Dataset.from_list(countdown_rows(8)),
        peft_config=LoraConfig(r=4, lora_alpha=8),
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 1 and math.isfinite(logs[0]["loss"])


def test_trl_stays_out_of_unmask_imports() -> None:
    """Only unmask.integrations.trl imports TRL: the CLI, trainer and sampler never pay for it."""
    root = Path(__file__).resolve().parents[1]
    importers = sorted(
        str(path.relative_to(root))
        for src in ("unmask", "rl", "rewards", "rollouts", "kernels")
        for path in (root / src).rglob("*.py")
        if re.search(r"^\s*(from|import) trl\b", path.read_text(), re.M)
    )
    assert importers == ["unmask/integrations/trl.py"]


def test_inner_iterations_reuse_one_generation(tmp_path: Path) -> None:
    """num_iterations x steps_per_generation optimizer steps per rollout batch, θ_old scored once before them."""
    args = config(tmp_path, num_iterations=2, steps_per_generation=2, per_device_train_batch_size=8, max_steps=4,
                  save_strategy="no", beta=0.0)
    trainer = DiffusionGRPOTrainer(
        MODEL, reward_funcs=countdown_reward, args=args, train_dataset=Dataset.from_list(countdown_rows(8)),
        peft_config=LoraConfig(r=4, lora_alpha=8),
    )
    generations = []
    generate = trainer._generate_and_score_completions
    trainer._generate_and_score_completions = lambda inputs: generations.append(len(inputs)) or generate(inputs)
    trainer.train()
    assert generations == [16]  # one rollout batch of 2 prompts x 8 answers fed all 4 optimizer steps
    assert len(trainer._frozen["old"]) == 2 and len(trainer._frozen["old"][0]) == 2
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 4 and all(math.isfinite(entry["loss"]) for entry in logs)


def test_resume_from_checkpoint_continues_the_run(tmp_path: Path) -> None:
    """TRL checkpoints resume exactly: adapter, optimizer, and estimator keys that follow the optimizer step."""

    def run(out: str, max_steps: int, resume: str | None = None) -> list[dict[str, Any]]:
        args = config(tmp_path, output_dir=str(tmp_path / out), max_steps=max_steps, save_steps=1,
                      per_device_train_batch_size=8, num_generations=4)
        trainer = DiffusionGRPOTrainer(
            MODEL, reward_funcs=countdown_reward, args=args, train_dataset=Dataset.from_list(countdown_rows(8)),
            peft_config=LoraConfig(r=4, lora_alpha=8),
        )
        trainer.train(resume_from_checkpoint=resume)
        return [entry for entry in trainer.state.log_history if "loss" in entry]

    whole = run("whole", 2)
    run("part", 1)
    resumed = run("part", 2, resume=str(tmp_path / "part" / "checkpoint-1"))
    assert resumed[-1]["step"] == whole[-1]["step"] == 2
    for key in ("loss", "reward", "kl", "entropy"):
        assert resumed[-1][key] == pytest.approx(whole[-1][key], rel=1e-5, abs=1e-8), key


@pytest.mark.slow
def test_example_runs(tmp_path: Path) -> None:
    """examples/trl_countdown.py end to end at toy size: it prints held-out accuracy before and after."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "examples" / "trl_countdown.py"
    out = subprocess.run(
        [sys.executable, str(script), "--rl-steps", "1", "--limit", "32", "--out", str(tmp_path / "ex")],
        capture_output=True, text=True, check=True, timeout=600,
    ).stdout
    assert re.search(r"before: \d+\.\d %", out) and re.search(r"after: +\d+\.\d %", out)
