"""``unmask sft`` under ``accelerate launch`` with two gloo processes learns what one process learns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from test_multiprocess import assert_same_weights, free_port

from unmask.rl.logging import read_metrics
from unmask.sft.config import load_sft_recipe
from unmask.sft.trainer import train_sft

ROWS = [{"prompt": f"Using the numbers {i}, {i}", "completion": f"<answer>{i}+{i}</answer>"} for i in range(16)]


#: the tiny built-in family, and DiffusionGemma, whose loss runs its encode/decode calls in one forward
MODELS = {"tiny": {}, "dgemma": {"name_or_path": "new:tiny-dgemma", "config": {"hidden_size": 32}}}


def write_recipe(tmp_path: Path, name: str, per_device: int, model: dict | None = None) -> Path:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    recipe = {
        "description": "two-process check", "output_dir": str(tmp_path / name),
        "model": model or {}, "lora": {"enabled": False}, "data": {"path": str(data), "chat_template": False},
        "optim": {"max_steps": 2, "learning_rate": 1e-3, "per_device_train_batch_size": per_device},
        "eval": {"val_size": 4, "accuracy": False}, "logging": {"progress": False},
        "sft": {"answer_length": 16},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("family", MODELS)
def test_two_processes_match_one(tmp_path: Path, family: str) -> None:
    model = MODELS[family]
    train_sft(load_sft_recipe(write_recipe(tmp_path, "one", 4, model)))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "unmask.cli", "sft", str(write_recipe(tmp_path, "two", 2, model))]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    # the same gradients up to float summation order (padding widths differ); Adam's first steps
    # magnify that on near-zero gradients, hence the relative tolerance of the RL trainer's test
    assert_same_weights(load_file(str(tmp_path / "two/checkpoint-2/trainable.safetensors")),
                        load_file(str(tmp_path / "one/checkpoint-2/trainable.safetensors")))
    losses = [[r["loss"] for r in read_metrics(tmp_path / f"{n}/metrics.jsonl") if "loss" in r] for n in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6) and len(losses[0]) == 2
