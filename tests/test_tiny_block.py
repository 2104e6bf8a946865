"""The tiny block-diffusion family and its shipped model, built from scratch through ``unmask sft``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unmask.assets import builtin_path
from unmask.assets.ship import HASH_FILE, WEIGHTS, sha256_file, ship
from unmask.cli import recipes_dir
from unmask.data.countdown import careless_solution, problem_key
from unmask.errors import RecipeError
from unmask.models import load_model, tiny_block
from unmask.models.tiny_block import TinyBlockLM
from unmask.recipe import load_recipe
from unmask.rl.trainer import Trainer
from unmask.run import eval_rows, model_factory, training_rows
from unmask.sft.config import fed_recipe, load_sft_recipe
from unmask.sft.data import records
from unmask.sft.trainer import train_sft

ASSET = "builtin:tiny-countdown-block"
BUILD = recipes_dir() / "tiny/sft_countdown_block.yaml"
RL = ["countdown_block_tracerl", "countdown_block_diffu_grpo", "countdown_block_mdpo"]
#: a model small enough that a few build steps take seconds
SMALL = ["model.config.hidden_size=32", "model.config.num_hidden_layers=1", "model.config.head_dim=8",
         "model.config.intermediate_size=64"]


def architecture(model: TinyBlockLM) -> dict:
    """The config's own fields (``extra`` holds what saving adds, such as ``torch_dtype``)."""
    return {k: v for k, v in model.config.to_dict().items() if k not in model.config.extra}


def test_shipped_model_loads_as_the_block_family() -> None:
    model = load_model(ASSET)
    assert isinstance(model, TinyBlockLM) and model.family == "tiny-block" and model.block_size == 4
    assert model.process.two_stream and model.process.block_size == 4
    generation = json.loads((builtin_path(ASSET) / "generation_config.json").read_text())
    assert generation["block_length"] == 4 and generation["temperature"] == 0.0 and generation["gen_length"] == 16
    ids = model.tokenizer("<answer>3+4</answer>", add_special_tokens=False)["input_ids"]
    assert model.tokenizer.decode(ids) == "<answer>3+4</answer>" and model.mask_token_id not in ids


def test_shipped_weights_match_their_sha256() -> None:
    path = builtin_path(ASSET)
    assert (path / HASH_FILE).read_text().split()[0] == sha256_file(path / WEIGHTS)


def test_config_and_tokenizer_round_trip(tmp_path: Path) -> None:
    model = tiny_block({"hidden_size": 32, "num_hidden_layers": 1, "head_dim": 8, "intermediate_size": 64}, seed=3)
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert type(loaded) is TinyBlockLM and architecture(loaded) == architecture(model)
    assert loaded.config.to_dict()["model_type"] == "unmask-tiny-block"
    assert loaded.tokenizer.get_vocab() == model.tokenizer.get_vocab()
    ids = torch.tensor([model.tokenizer("Using the numbers [1, 2], 3+4", add_special_tokens=False)["input_ids"]])
    assert torch.equal(loaded.logits(ids), model.logits(ids))
    assert not torch.equal(tiny_block(seed=4).logits(ids), tiny_block(seed=3).logits(ids))


def test_fresh_model_mistakes_are_one_line() -> None:
    with pytest.raises(RecipeError, match="unknown key.*d_model"):
        load_sft_recipe(BUILD, ["model.config.d_model=64"])
    with pytest.raises(RecipeError, match="names no family built from scratch; use new:tiny, new:tiny-block"):
        load_sft_recipe(BUILD, ["model.name_or_path=new:llada"])
    with pytest.raises(RecipeError, match="only a fresh model takes an architecture"):
        load_sft_recipe(BUILD, [f"model.name_or_path={ASSET}"])


def test_build_recipe_trains_on_careless_countdown_without_the_heldout_problems() -> None:
    recipe = load_sft_recipe(BUILD, ["data.generator.size=600"])
    assert recipe.model.name_or_path == "new:tiny-block" and recipe.data.careless_fraction == 0.3
    fed = fed_recipe(recipe)
    assert fed is not None and fed.rollout.cache == "block" and fed.rollout.block_length == 4
    careless = records(recipe, fed)
    clean = records(load_sft_recipe(BUILD, ["data.generator.size=600", "data.careless_fraction=0"]), fed)
    assert [problem_key(r) for r in careless] == [problem_key(r) for r in clean]
    changed = [r for r, c in zip(careless, clean, strict=True) if r["solution"] != c["solution"]]
    assert all(r["solution"] == careless_solution(r["nums"]) for r in changed)
    assert 0.15 < len(changed) / len(careless) < 0.35
    assert not {problem_key(r) for r in careless} & {problem_key(r) for r in eval_rows(fed)}
    with pytest.raises(RecipeError, match="careless_fraction: only generated Countdown rows"):
        load_sft_recipe(BUILD, ["data.task=gsm8k"])


def test_three_build_steps_through_unmask_sft_write_a_loadable_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "build"
    command = [sys.executable, "-m", "unmask.cli", "sft", "tiny/sft_countdown_block", f"output_dir={out}",
               "optim.max_steps=3", "optim.warmup_steps=1", "data.generator.size=300", "eval.limit=8",
               "logging.logging_steps=1", *SMALL]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    model = load_model(out / "final")
    assert isinstance(model, TinyBlockLM) and model.config.hidden_size == 32 and model.block_size == 4
    assert json.loads((out / "final/generation_config.json").read_text())["block_length"] == 4
    shipped = ship(out / "final", tmp_path / "asset")
    assert (shipped / HASH_FILE).read_text().split()[0] == sha256_file(out / "final" / WEIGHTS)
    assert architecture(load_model(shipped)) == architecture(model)


@pytest.mark.parametrize("name", RL)
def test_rl_recipes_sample_with_the_block_cache(name: str) -> None:
    recipe = load_recipe(recipes_dir() / f"tiny/{name}.yaml")
    assert recipe.model.name_or_path == ASSET
    assert recipe.rollout.cache == "block" and recipe.rollout.block_length == 4 and recipe.eval.block_length == 4


def test_mdpo_trains_on_block_cached_rollouts(tmp_path: Path) -> None:
    """A block-cached rollout predicts only the current block: MDPO's step scores skip later blocks
    (their recorded prediction is the mask token, whose log-prob is -inf) instead of turning NaN."""
    recipe = load_recipe(recipes_dir() / "tiny/countdown_block_mdpo.yaml", [
        f"output_dir={tmp_path}", "ray.address=null", "rollout.prompts_per_step=2", "rollout.num_generations=8",
        "optim.max_steps=1", "optim.per_device_train_batch_size=8", "eval.before=false", "eval.after=false",
        "logging.progress=false", "checkpoint.save_final=false",
    ])  # fmt: skip
    trainer = Trainer(recipe, model_factory=model_factory(recipe.model, recipe.seed),
                      rows=training_rows(recipe, eval_rows(recipe)))
    (metrics,) = list(trainer.steps())
    trainer.runner.close()
    assert metrics["skipped"] == 0.0 and math.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0


def test_a_build_is_a_function_of_the_seed(tmp_path: Path) -> None:
    """Same recipe and seed: the same weights, byte for byte; another seed: other weights."""
    def build(name: str, seed: int) -> str:
        recipe = load_sft_recipe(BUILD, [f"output_dir={tmp_path / name}", f"seed={seed}", "optim.max_steps=3",
                                         "optim.warmup_steps=1", "data.generator.size=300", "eval.after=false",
                                         "logging.progress=false", *SMALL])
        train_sft(recipe)
        return sha256_file(tmp_path / name / "final" / WEIGHTS)

    first = build("a", 0)
    assert build("b", 0) == first and build("c", 1) != first
