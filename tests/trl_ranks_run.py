"""One TRL training step in each of N processes: test_trl_ranks.py.

Usage: ``accelerate launch --multi_gpu --num_processes N tests/trl_ranks_run.py OUT_DIR``. Each
rank records the estimator keys of its first generation batch, the prompt positions its first
micro-batch's one-step estimator masks under them, the keys ``unmask.rl.update`` schedules for
its process index, and the TRL loss of that micro-batch beside the loss unmask's own ``Trainer``
(same process, same adapter weights, its own key schedule) gives it; the main process writes
them to ``OUT_DIR/ranks.json``.
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
from unmask.recipe import validate_recipe  # noqa: E402
from unmask.rewards.functions import countdown_reward  # noqa: E402
from unmask.rl.checkpoint import trainable_state  # noqa: E402
from unmask.rl.trainer import Trainer  # noqa: E402
from unmask.rl.update import estimator_keys, micro_batch_loss  # noqa: E402

MODEL = "builtin:tiny-countdown"
TEMPLATE = (
    "Using the numbers {nums}, create an equation that equals {target}. "
    "Put the equation in <answer> </answer> tags."
)


class Recording(DiffusionGRPOTrainer):
    """Keeps what the first fresh generation batch drew, and the first micro-batch's loss and weights."""

    record: dict[str, Any] | None = None
    first: dict[str, Any] | None = None

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> torch.Tensor:
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.first is None:  # before any optimizer step: θ is the adapter the batch was sampled with
            self.first = {"batch": self._micro(inputs), "loss": float(loss.detach()),
                          "state": {k: v.clone() for k, v in trainable_state(self.accelerator.unwrap_model(self.model)).items()}}
        return loss

    def _prepare_inputs(self, generation_batch: Any) -> dict[str, Any]:
        inputs = super()._prepare_inputs(generation_batch)
        if self.record is None and self.model.training:
            micro = [self._micro(b) for b in self._buffered_inputs]
            masked = self.objective.estimator.masked_input(micro[0].traj, self._keys[0][0])
            prompt = self.objective.estimator.process.noised(masked[:, : micro[0].traj.prompt_length])
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


def unmask_loss(args: DiffusionGRPOConfig, rows: list[dict[str, Any]], first: dict[str, Any]) -> float:
    """The first micro-batch's loss under unmask's own trainer: its objective, its keys, the TRL adapter."""
    raw = args.recipe().model_dump(mode="json")
    raw.update(model={"name_or_path": MODEL}, lora={"r": 4, "alpha": 8}, data={"chat_template": False},
               rewards={"functions": [{"name": "countdown"}], "num_workers": 0}, output_dir=args.output_dir + "/unmask",
               logging={"progress": False, "report_to": []}, optim={"per_device_train_batch_size": 16})
    native = Trainer(validate_recipe(raw, "trl_ranks_run"), rows=rows)
    missing = native.unwrapped.load_state_dict(first["state"], strict=False)
    assert not missing.unexpected_keys
    batch = first["batch"].to(native.accelerator.device)
    key = native._keys([batch])[0][0]  # step 0, iteration 0, this process's first micro-batch
    with torch.no_grad():
        loss, _ = micro_batch_loss(native.objective, native.unwrapped, batch, key, None, None)
    return float(loss)


def main(out: Path) -> None:
    rows = load_rows("countdown", limit=16, seed=7, template=TEMPLATE)  # the prompt the tiny model was trained on
    args = DiffusionGRPOConfig(
        output_dir=str(out), use_cpu=True, bf16=False, report_to=[], disable_tqdm=True, gradient_checkpointing=False,
        max_steps=1, per_device_train_batch_size=16, num_generations=8, max_completion_length=16, steps=16,
        temperature=1.5, learning_rate=1e-3, beta=0.0, num_iterations=2, p_mask=0.5, save_strategy="no",
        seed=1,  # both ranks then hold a group with unequal rewards: non-zero losses
        algorithm="wd1",  # its loss value -A·log π̂ depends on the masks (a ratio loss is -A on-policy)
    )
    trainer = Recording(
        MODEL, reward_funcs=countdown_reward, args=args,
        train_dataset=Dataset.from_list([{"prompt": r["prompt"], "nums": r["nums"], "target": r["target"]} for r in rows]),
        peft_config=LoraConfig(r=4, lora_alpha=8),
    )
    trainer.train()
    trainer.record.update(trl_loss=trainer.first["loss"], unmask_loss=unmask_loss(args, rows, trainer.first))
    records = gather_object([trainer.record])
    if trainer.accelerator.is_main_process:
        (out / "ranks.json").write_text(json.dumps(records))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
