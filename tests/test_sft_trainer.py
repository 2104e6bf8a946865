"""``unmask sft`` end to end on a small tiny model: exact resume, SIGTERM, accumulation, validation, SFT → RL, CLI."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from real_files import DREAM, SDAR, cut_down_checkpoint
from safetensors.torch import load_file
from test_trainer import ROWS as RL_ROWS
from test_trainer import comparable, make_model
from test_trainer import recipe as rl_recipe

from unmask.cli import main, recipes_dir
from unmask.data.countdown import TINY_TEMPLATE
from unmask.errors import RecipeError
from unmask.models import load_model
from unmask.recipe import validate_recipe
from unmask.rl.checkpoint import trainable_state
from unmask.rl.logging import read_metrics
from unmask.rl.trainer import Trainer
from unmask.sft.config import SFTRecipe, load_sft_recipe, rl_after_sft
from unmask.sft.trainer import SFTTrainer
from unmask.sft.validation import validation_loss

ROWS = [{"prompt": f"add {i} and {i}", "completion": f"<answer>{i}+{i}</answer>"} for i in range(24)]
IDS = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])


def sft_recipe(tmp_path: Path, name: str = "run", **sections: dict) -> SFTRecipe:
    raw = {
        "output_dir": str(tmp_path / name),
        "lora": {"r": 4, "alpha": 8},
        "data": {"chat_template": False},
        "optim": {"max_steps": 6, "learning_rate": 1e-2, "per_device_train_batch_size": 4},
        "eval": {"val_size": 4, "limit": 4, "batch_size": 4, "accuracy": False, "before": False, "after": False},
        "logging": {"progress": False},
        "sft": {"answer_length": 12},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return validate_recipe(raw, "test.yaml", SFTRecipe)


def trainer(recipe: SFTRecipe) -> SFTTrainer:
    return SFTTrainer(recipe, model_factory=make_model, rows=ROWS)


def test_resume_continues_bit_for_bit(tmp_path: Path) -> None:
    straight = sft_recipe(tmp_path, "straight", lora={"enabled": False}, checkpoint={"save_steps": 3})
    list(trainer(straight).steps())
    resume = {"save_steps": 3, "resume_from": str(tmp_path / "straight/checkpoint-3")}
    resumed = sft_recipe(tmp_path, "resumed", lora={"enabled": False}, checkpoint=resume)
    list(trainer(resumed).steps())
    a = load_file(str(tmp_path / "straight/checkpoint-6/trainable.safetensors"))
    b = load_file(str(tmp_path / "resumed/checkpoint-6/trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    first = [comparable(r) for r in read_metrics(tmp_path / "straight/metrics.jsonl")][3:]
    assert first == [comparable(r) for r in read_metrics(tmp_path / "resumed/metrics.jsonl")]
    assert len(first) == 3 and all(r["loss"] > 0 for r in first)


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path: Path) -> None:
    run = trainer(sft_recipe(tmp_path, logging={"report_to": ["jsonl", "tensorboard"]}))
    for metrics in run.steps():
        if run.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # caught: the next step ends with a checkpoint
        assert metrics["skipped"] == 0.0
    assert run.preempted and run.step == 2
    assert (tmp_path / "run/checkpoint-2/adapter_model.safetensors").is_file()
    assert not (tmp_path / "run/final").exists()
    assert any((tmp_path / "run/tensorboard").iterdir()) and len(read_metrics(tmp_path / "run/metrics.jsonl")) == 2


@pytest.mark.parametrize("normalization", ["token", "sequence"])
def test_accumulation_layout_leaves_the_update_unchanged(tmp_path: Path, normalization: str) -> None:
    # zero-init LoRA B makes a first LoRA step's A update zero; a full fine-tune shows every weight
    def weights(batch: int, accumulate: int) -> dict[str, torch.Tensor]:
        recipe = sft_recipe(tmp_path, f"{batch}x{accumulate}", lora={"enabled": False},
                            optim={"max_steps": 1, "per_device_train_batch_size": batch,
                                   "gradient_accumulation_steps": accumulate},
                            checkpoint={"save_final": False}, sft={"normalization": normalization})
        run = trainer(recipe)
        list(run.steps())
        return trainable_state(run.unwrapped)

    one, two = weights(4, 1), weights(2, 2)
    start = trainable_state(make_model())
    assert any(not torch.equal(one[k], start[k]) for k in one)
    assert all(torch.allclose(one[k], two[k], atol=1e-6) for k in one)


def test_validation_loss_is_a_function_of_the_weights(tmp_path: Path) -> None:
    run = trainer(sft_recipe(tmp_path, eval={"val_size": 6, "val_t_points": 4}))
    model = run.unwrapped.eval()
    first = validation_loss(run, model, run.val_rows)
    assert first == validation_loss(run, model, run.val_rows)  # bit for bit
    run.recipe.eval.batch_size = 1
    single = validation_loss(run, model, run.val_rows)
    assert first.keys() == single.keys() == {"val/elbo", "val/ce@0.125", "val/ce@0.375", "val/ce@0.625", "val/ce@0.875"}
    assert all(single[k] == pytest.approx(first[k], abs=1e-6) for k in first)
    cart = trainer(sft_recipe(tmp_path, "cart", eval={"val_size": 6}, sft={"weighting": "cart"}))
    assert "val/loss" in validation_loss(cart, cart.unwrapped.eval(), cart.val_rows)


def test_sft_output_is_the_model_of_an_rl_recipe(tmp_path: Path) -> None:
    run = trainer(sft_recipe(tmp_path, optim={"max_steps": 5},
                             eval={"accuracy": True, "before": True, "after": True, "limit": 4}))
    list(run.steps())
    phases = [r for r in read_metrics(tmp_path / "run/metrics.jsonl") if "phase" in r]
    assert [p["phase"] for p in phases] == ["before", "after"] and "accuracy" in phases[0] and "val/elbo" in phases[1]
    final = tmp_path / "run/final"
    sft_policy = run.unwrapped.eval()
    with torch.no_grad():
        tuned = sft_policy.logits(IDS)
        with sft_policy.disable_adapter():
            base = sft_policy.logits(IDS)
    assert not torch.allclose(tuned, base, atol=1e-4)  # five steps moved the model
    assert torch.allclose(load_model(final).logits(IDS), tuned, atol=1e-5)
    rl = Trainer(rl_recipe(tmp_path, "diffu_grpo", model={"name_or_path": str(final)}), rows=RL_ROWS)
    with torch.no_grad():
        assert torch.allclose(rl.unwrapped.logits(IDS), tuned, atol=1e-5)  # a fresh adapter on the SFT model
        with rl.unwrapped.disable_adapter():  # and its reference is the SFT model, not the original base
            assert torch.allclose(rl.unwrapped.logits(IDS), tuned, atol=1e-5)
    rl.runner.close()


def test_cli_runs_the_shipped_tiny_recipe(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "unmask.cli", "sft", "tiny/sft_countdown", f"output_dir={out}", "optim.max_steps=2",
               "data.limit=200", "eval.limit=8", "eval.val_size=8", "logging.progress=false"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training rows" in done.stdout and (out / "final/generation_config.json").is_file()
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 2] and 0 <= records[-1]["accuracy"] <= 1


def test_cli_reports_a_recipe_mistake_in_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sft:\n  packing: true\n")
    assert main(["sft", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "packing: true is not supported" in err
    assert main(["train", "tiny/sft_countdown"]) == 2
    assert "is an SFT recipe; run it with `unmask sft tiny/sft_countdown`" in capsys.readouterr().err


def test_then_train_runs_the_fed_rl_recipe_on_the_sft_output(tmp_path: Path) -> None:
    recipe = load_sft_recipe(recipes_dir() / "tiny/sft_countdown.yaml", [f"output_dir={tmp_path}", "seed=3"])
    rl = rl_after_sft(recipe)
    assert rl.model.name_or_path == str(tmp_path / "final") and rl.output_dir == str(tmp_path / "rl") and rl.seed == 3
    assert rl.algorithm.name == "mdpo" and rl.rollout.max_completion_length == 16  # tiny/countdown_mdpo
    with pytest.raises(RecipeError, match="sft.feeds: name the RL recipe"):
        rl_after_sft(sft_recipe(tmp_path))


@pytest.mark.slow
def test_then_train_runs_both_stages_in_one_command(tmp_path: Path) -> None:
    rl = tmp_path / "rl.yaml"
    rl.write_text(yaml.safe_dump({
        "description": "a one-step RL run", "model": {"name_or_path": "builtin:tiny-countdown"},
        "data": {"chat_template": False, "prompt_template": TINY_TEMPLATE},
        "rollout": {"num_generations": 2, "prompts_per_step": 2, "max_completion_length": 16, "steps": 16,
                    "block_length": 16},
        "algorithm": {"name": "diffu_grpo"}, "rewards": {"num_workers": 0},
        "optim": {"max_steps": 1, "per_device_train_batch_size": 4},
        "eval": {"limit": 4, "steps_per_token": [1]}, "logging": {"progress": False, "plot": False},
    }))
    command = [sys.executable, "-m", "unmask.cli", "sft", "tiny/sft_countdown", f"output_dir={tmp_path}", f"sft.feeds={rl}",
               "optim.max_steps=1", "data.limit=50", "eval.limit=4", "eval.val_size=4", "logging.progress=false",
               "--then-train"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    saved = yaml.safe_load((tmp_path / "rl/recipe.yaml").read_text())
    assert saved["model"]["name_or_path"] == str(tmp_path / "final")
    assert [r["step"] for r in read_metrics(tmp_path / "rl/metrics.jsonl") if "loss" in r] == [1]


@pytest.mark.parametrize("name", [DREAM, SDAR])
def test_real_family_cut_down_trains_on_chat_rows(name: str, shared_models: Path, tmp_path: Path) -> None:
    # the real config (fewer, narrower layers) and real tokenizer: chat-template prompts, messages rows, the
    # family's default loss (Dream: CART on shifted logits; SDAR: the two-stream block forward)
    folder = cut_down_checkpoint(shared_models, name, tmp_path / "model")
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": f"<answer>{2 * i}</answer>"}]} for i in range(8)]
    recipe = sft_recipe(tmp_path, model={"name_or_path": str(folder), "dtype": "float32"}, data={"chat_template": True},
                        optim={"max_steps": 2, "per_device_train_batch_size": 2}, sft={"answer_length": 16})
    run = SFTTrainer(recipe, rows=rows)
    losses = [m["loss"] for m in run.steps()]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses)
    assert run.settings.weighting == ("cart" if name == DREAM else "elbo")
    assert load_model(tmp_path / "run/final").family == run.base_model.family


@pytest.mark.slow
def test_clean_sft_bench_prints_its_table() -> None:
    bench = Path(__file__).resolve().parents[1] / "bench/sft_clean.py"
    done = subprocess.run([sys.executable, str(bench), "--steps", "1", "--limit", "4"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "careless answers %" in done.stdout and "4 held-out problems" in done.stdout
