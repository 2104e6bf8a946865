"""A short tiny-model RL run in its own process(es): test_multiprocess.py and test_ray_cluster.py.

Usage: ``accelerate launch --multi_gpu --num_processes N tests/distributed_run.py SPEC.json``
(or plain ``python`` for one process). SPEC holds ``output_dir``, ``prompts_per_step``,
``gradient_accumulation_steps``, ``max_steps``, optionally ``resume_from`` and ``ray`` (the
recipe's ray section). Every process records, per step, a digest of its trainable weights,
the prompts and answer tokens it rolled out and, with a Ray pool, where each actor runs
and which adapter it holds; the main process writes them to ``ranks.json`` (one entry per
process) with the final weights in ``final.safetensors``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True, warn_only=True)

from accelerate.utils import gather_object  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from unmask.models.tiny import tiny  # noqa: E402
from unmask.recipe import Recipe, validate_recipe  # noqa: E402
from unmask.rl.checkpoint import trainable_state  # noqa: E402
from unmask.rl.trainer import Trainer  # noqa: E402

TINY = {"n_layers": 1, "d_model": 32, "n_heads": 2, "mlp_hidden_size": 64}
make_model = functools.partial(tiny, TINY, seed=0)
ROWS = [{"prompt": f"write digits {i}"} for i in range(8)]


def digit_reward(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    """Fraction of digits: varies between random answers, so advantages are non-zero."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def build_recipe(spec: dict[str, Any]) -> Recipe:
    """One-answer micro-batches, one window per pass: the step's gradient is the same mean
    however rows are split. ``p_mask: 0`` keeps the estimator deterministic: micro-batches
    are shuffled per process, so with random masks each layout draws other (equally
    distributed) masks for a row and the weights agree in distribution only."""
    return validate_recipe({
        "seed": 0,
        "output_dir": spec["output_dir"],
        "lora": {"r": 4, "alpha": 8},
        "data": {"chat_template": False},
        "rollout": {"num_generations": 2, "prompts_per_step": spec["prompts_per_step"], "max_completion_length": 8,
                    "steps": 4, "block_length": 8, "temperature": 1.0},
        "algorithm": {"name": "diffu_grpo", "num_iterations": 2, "p_mask": 0.0},
        "rewards": {"functions": [{"name": "distributed_run:digit_reward"}], "num_workers": 0},
        "optim": {"max_steps": spec["max_steps"], "learning_rate": 1e-2, "per_device_train_batch_size": 1,
                  "gradient_accumulation_steps": spec["gradient_accumulation_steps"]},
        "checkpoint": {"save_steps": 2, "resume_from": spec.get("resume_from")},
        "ray": spec.get("ray", {}),
        "eval": {"every": 1},
        "logging": {"progress": False},
    }, "distributed_run")


def digest(model: torch.nn.Module) -> str:
    state = trainable_state(model)
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode() + state[name].numpy().tobytes())
    return h.hexdigest()


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["output_dir"])
    rank = int(os.environ.get("RANK", "0"))

    def evaluate(model: torch.nn.Module, step: int) -> dict[str, float]:
        with (out / "evaluations.txt").open("a") as handle:  # rank-0-only evaluation leaves one line a step
            handle.write(f"rank {rank} step {step}\n")
        return {"probe": float(step)}

    trainer = Trainer(build_recipe(spec), eval_fn=evaluate, model_factory=make_model, rows=ROWS)
    record: dict[str, Any] = {"rank": trainer.accelerator.process_index, "pid": os.getpid(), "digests": [],
                              "prompts": [], "answers": [], "actors": []}
    take, generate = trainer.stream.take, trainer.rollouts.generate

    def recording_take(position: int, count: int) -> list[dict[str, Any]]:
        rows = take(position, count)
        record["prompts"].append([row["prompt"] for row in rows])
        return rows

    def recording_generate(*args: Any, **kwargs: Any) -> Any:
        traj = generate(*args, **kwargs)
        record["answers"].append(traj.answer_ids.tolist())
        return traj

    trainer.stream.take = recording_take  # type: ignore[method-assign]
    trainer.rollouts.generate = recording_generate  # type: ignore[method-assign]
    if trainer.pool is not None:
        record["actors"].append(trainer.pool.actors())
    for _ in trainer.steps():
        record["digests"].append(digest(trainer.unwrapped))
        if trainer.pool is not None:  # the pool stops only after the last step's yield
            record["actors"].append(trainer.pool.actors())
    records = gather_object([record])
    if trainer.accelerator.is_main_process:
        (out / "ranks.json").write_text(json.dumps(records))
        save_file(trainable_state(trainer.unwrapped), str(out / "final.safetensors"))
    trainer.close()


if __name__ == "__main__":
    main(sys.argv[1])
