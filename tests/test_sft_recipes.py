"""The GPU SFT recipes validate, carry a GPU device and the published settings, and feed an RL recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from real_files import DREAM, LLADA, SDAR, tokenizer_folder

from unmask.cli import recipes_dir
from unmask.models.loading import load_tokenizer, meta_model
from unmask.sft.config import (
    answer_length,
    fed_recipe,
    is_sft_recipe,
    load_sft_recipe,
    loss_choice,
    rl_after_sft,
)
from unmask.sft.data import to_pair, tokenize

GPU = sorted(p for family in ("llada", "dream", "sdar") for p in (recipes_dir() / family).glob("*.yaml") if is_sft_recipe(p))
FOLDER = {"llada": LLADA, "dream": DREAM, "sdar": SDAR}


def test_every_family_has_an_sft_recipe() -> None:
    assert {p.parent.name for p in GPU} == {"llada", "dream", "sdar"}


@pytest.mark.parametrize("path", GPU, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_gpu_sft_recipe_validates_and_feeds_rl(path: Path, tmp_path: Path) -> None:
    recipe = load_sft_recipe(path, [f"output_dir={tmp_path}"])
    assert recipe.model.device == "cuda" and recipe.model.dtype == "bfloat16" and recipe.description
    fed = fed_recipe(recipe)
    if fed is None:
        assert recipe.sft.answer_length is not None
        return
    assert fed.model.family == recipe.model.family and answer_length(recipe, fed) == fed.rollout.max_completion_length
    assert fed.data.prompt_template == recipe.data.prompt_template  # SFT and RL prompts are byte-equal
    assert rl_after_sft(recipe).model.name_or_path == str(tmp_path / "final")


def test_d1_sft_settings() -> None:
    r = load_sft_recipe(recipes_dir() / "llada/sft_s1k_d1.yaml")
    assert (r.lora.r, r.lora.alpha, r.lora.dropout, r.lora.target_modules) == (128, 256, 0.05, ["q_proj", "k_proj", "v_proj"])
    o = r.optim
    assert (o.learning_rate, o.weight_decay, o.max_grad_norm, o.lr_scheduler_type, o.warmup_steps) == (1e-5, 0.1, 1.0, "linear", 0)
    assert (o.num_train_epochs, o.per_device_train_batch_size, o.gradient_accumulation_steps, r.seed) == (20, 1, 4, 42)
    assert (r.sft.eos_fill, r.sft.max_length, r.data.format, r.eval.val_size, r.eval.every) == ("max_length", 4096, "s1k", 10, 100)
    assert loss_choice(r, "llada") == ("elbo", "token")
    assert loss_choice(load_sft_recipe(recipes_dir() / "dream/sft_gsm8k.yaml"), "dream") == ("cart", "token")


@pytest.mark.parametrize("path", GPU, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_data_on_the_real_tokenizer(path: Path, shared_models: Path, shared_data: Path, tmp_path: Path) -> None:
    # each recipe's row reading and tokenization on its family's real tokenizer and chat template
    recipe = load_sft_recipe(path)
    folder = tokenizer_folder(shared_models, FOLDER[path.parent.name], tmp_path / "tok")
    model = meta_model(folder)
    model.tokenizer = load_tokenizer(folder, type(model))
    gsm = json.loads((shared_data / "gsm8k_train.jsonl").read_text().splitlines()[0])
    s1k = {"question": gsm["question"], "thinking_trajectories": ["a trace"], "attempt": "72"}
    pair = to_pair(s1k if recipe.data.format == "s1k" else gsm, 0, recipe)
    prompt, answer = tokenize(pair, 0, model, recipe)
    assert answer[-1] == model.end_of_turn_id and model.tokenizer.decode(answer[:-1]).startswith("<reasoning>\n")
    assert model.tokenizer.decode(prompt) == model.format_prompt(pair.prompt)
