"""Train the shipped tiny dLLM on Countdown with TRL's trainer, and print held-out accuracy before and after.

    python examples/trl_countdown.py              # about 2.5 minutes of CPU time (docs/trl.md)
    python examples/trl_countdown.py --rl-steps 40 --limit 1000

Everything a TRL user writes is here: a ``datasets.Dataset`` with a ``prompt``
column, a reward function with TRL's signature, a ``peft.LoraConfig`` and a config
object. The settings mirror unmask's default recipe
(``recipes/tiny/countdown_diffu_grpo_trajectory.yaml``): 16 prompts x 16 answers per
RL step, diffu-GRPO on exact trajectory replay, learning rate 1e-3 after a warm-up.
"""

from __future__ import annotations

import argparse

import torch
from datasets import Dataset
from peft import LoraConfig

from unmask.data import load_rows
from unmask.data.countdown import problem_key
from unmask.evaluation.benchmarks import benchmark_rows
from unmask.evaluation.runner import evaluate
from unmask.evaluation.settings import EvalSettings
from unmask.integrations.trl import DiffusionGRPOConfig, DiffusionGRPOTrainer
from unmask.models import load_model
from unmask.report import compare
from unmask.rewards.functions import countdown_reward

# the prompt the tiny model was pretrained on
TEMPLATE = (
    "Using the numbers {nums}, create an equation that equals {target}. "
    "Put the equation in <answer> </answer> tags."
)
PROMPTS, ANSWERS, MICRO = 16, 16, 32  # per RL step: 16 prompts x 16 answers, scored 32 at a time


def held_out_accuracy(model: torch.nn.Module, rows: list[dict]) -> list[float]:
    """Greedy, one token per step: per-problem correctness on the held-out set."""
    greedy = EvalSettings(gen_length=16, steps=16, block_length=16, temperature=0.0)
    result = evaluate(model.eval(), rows, "countdown", greedy, batch_size=128, chat_template=False)
    return [float(r["correct"]) for r in sorted(result.records, key=lambda r: r["problem"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rl-steps", type=int, default=20, help="rollout batches (each 16 prompts x 16 answers)")
    parser.add_argument("--limit", type=int, default=500, help="held-out problems evaluated")
    parser.add_argument("--out", default="runs/trl-countdown")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    heldout = benchmark_rows("countdown", limit=args.limit, template=TEMPLATE)
    seen = {problem_key(r) for r in heldout}
    train = [r for r in load_rows("countdown", limit=5000, template=TEMPLATE, seed=args.seed)
             if problem_key(r) not in seen]  # never train on a test problem
    dataset = Dataset.from_list([{"prompt": r["prompt"], "nums": r["nums"], "target": r["target"]} for r in train])

    model = load_model("builtin:tiny-countdown")
    before = held_out_accuracy(model, heldout)

    updates_per_rl_step = PROMPTS * ANSWERS // MICRO
    config = DiffusionGRPOConfig(
        output_dir=args.out, seed=args.seed, use_cpu=True, bf16=False, gradient_checkpointing=False,
        report_to=[], logging_steps=updates_per_rl_step, save_strategy="no", disable_tqdm=True,
        # TRL's batch layout: one rollout batch feeds `steps_per_generation` optimizer steps
        num_generations=ANSWERS, per_device_train_batch_size=MICRO, steps_per_generation=updates_per_rl_step,
        max_steps=args.rl_steps * updates_per_rl_step,
        learning_rate=1e-3, lr_scheduler_type="constant_with_warmup", warmup_steps=10 * updates_per_rl_step,
        beta=0.04, epsilon=0.5, scale_rewards="none",
        # the diffusion sampler and the objective
        max_completion_length=16, steps=16, temperature=1.0, cache="prefix",
        algorithm="diffu_grpo", estimator="trajectory", trajectory_steps=4,
    )
    trainer = DiffusionGRPOTrainer(
        model, reward_funcs=countdown_reward, args=config, train_dataset=dataset,
        peft_config=LoraConfig(r=16, lora_alpha=32),
    )
    trainer.train()

    after = held_out_accuracy(trainer.model, heldout)
    row = compare("held-out accuracy (greedy)", before, after, seed=args.seed)
    ci = row.ci
    print(f"held-out Countdown, {len(heldout)} problems, greedy decoding, 16 tokens in 16 steps")
    print(f"  before: {100 * row.before:.1f} %")
    print(f"  after:  {100 * row.after:.1f} %  ({args.rl_steps} RL steps with DiffusionGRPOTrainer)")
    if ci is not None:
        print(f"  change: {100 * ci.diff:+.1f} points, paired 95 % interval [{100 * ci.low:+.1f}, {100 * ci.high:+.1f}]")


if __name__ == "__main__":
    main()
