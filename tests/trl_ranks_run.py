"""One TRL training step in each of N processes: test_trl_ranks.py.

Usage: ``accelerate launch --multi_gpu --num_processes N tests/trl_ranks_run.py OUT_DIR``. Each
rank records the estimator keys of its first generation batch, the prompt positions its first
micro-batch's one-step estimator masks under them, and the keys ``unmask.rl.update`` schedules
for its process index; the main process writes them to ``OUT_DIR/ranks.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)

from accelerate.utils import gather_object  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402

from unmask.data import load_rows  # noqa: E402
from unmask.integrations.trl import DiffusionGRPOConfig, DiffusionGRPOTrainer  # noqa: E402
from unmask.rewards.functions import countdown_reward  # noqa: E402
from unmask.rl.update import estimator_keys  # noqa: E402


class Recording(DiffusionGRPOTrainer):
    """Keeps what the first fresh generation batch drew."""

    record: dict[str, Any] | None = None

    def _prepare_inputs(self, generation_batch: Any) -> dict[str, Any]:
        inputs = super()._prepare_inputs(generation_batch)
        if self.record is None and self.model.training:
            micro = [self._micro(b) for b in self._buffered_inputs]
            masked = self.objective.estimator.masked_input(micro[0].traj, self._keys[0][0])
            prompt = masked[:, : micro[0].traj.prompt_length] == self.objective.estimator.mask_token_id
            self.record = {
                "rank": self.accelerator.process_index,
                "keys": self._keys,
                "scheduled": estimator_keys(
                    self.objective, micro, seed=self.args.seed, step=self.state.global_step,
                    iterations=self.num_iterations, process_index=self.accelerator.process_index,
                ),
                "prompt_masks": prompt.nonzero().tolist(),
            }
        return inputs


def main(out: Path) -> None:
    rows = load_rows("countdown", limit=8, seed=7)
    args = DiffusionGRPOConfig(
        output_dir=str(out), use_cpu=True, bf16=False, report_to=[], disable_tqdm=True, gradient_checkpointing=False,
        max_steps=1, per_device_train_batch_size=4, num_generations=4, max_completion_length=8, steps=8,
        temperature=1.0, learning_rate=1e-3, beta=0.0, num_iterations=2, p_mask=0.5, save_strategy="no", seed=0,
    )
    trainer = Recording(
        "builtin:tiny-countdown", reward_funcs=countdown_reward, args=args,
        train_dataset=Dataset.from_list([{"prompt": r["prompt"], "nums": r["nums"], "target": r["target"]} for r in rows]),
        peft_config=LoraConfig(r=4, lora_alpha=8),
    )
    trainer.train()
    records = gather_object([trainer.record])
    if trainer.accelerator.is_main_process:
        (out / "ranks.json").write_text(json.dumps(records))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
