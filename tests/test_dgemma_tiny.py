"""The tiny DiffusionGemma family (new:tiny-dgemma) and the shipped builtin:tiny-countdown-dgemma."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unmask.assets.ship import HASH_FILE, WEIGHTS, sha256_file
from unmask.cli import main
from unmask.evaluation.benchmarks import reference
from unmask.evaluation.runner import encode_prompts
from unmask.models import load_model
from unmask.models.diffusion_gemma import DiffusionGemma
from unmask.models.fresh import check_new
from unmask.models.native import CheckpointError
from unmask.models.tiny_dgemma import TinyDiffusionGemma, tiny_dgemma
from unmask.rewards.grading import grade_outcome
from unmask.rollouts.uniform_sampler import UniformSettings, generate_uniform
from unmask.run import eval_rows
from unmask.sft.config import load_sft_recipe
from unmask.sft.trainer import train_sft

ASSET = Path(__file__).resolve().parents[1] / "unmask" / "assets" / "tiny-countdown-dgemma"
BUILD = "recipes/tiny/sft_countdown_dgemma.yaml"
#: the shipped model's greedy accuracy on the first 200 held-out problems (docs/diffusion-gemma.md)
SHIPPED_ACCURACY = (0.10, 0.30)


def answer_settings(model: DiffusionGemma, steps: int = 16) -> UniformSettings:
    """The answer window (one canvas) with transformers' sampler defaults and EOS padding."""
    return UniformSettings(max_new_tokens=model.config.canvas_length, steps=steps,
                           eos_token_id=model.eos_token_ids[0], pad_token_id=model.pad_token_id)


def heldout_accuracy(model: DiffusionGemma, limit: int, seed: int = 0, batch: int = 100) -> float:
    """Greedy (argmax readout) accuracy of ``generate_uniform`` on the build recipe's first ``limit`` held-out
    problems; one generator per problem (seeded by its index), so the batch size changes nothing."""
    rows = eval_rows(load_sft_recipe(BUILD))[:limit]
    settings, right = answer_settings(model), 0
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        ids, mask = encode_prompts(model, [r["prompt"] for r in part], chat_template=False)
        generators = [torch.Generator().manual_seed(seed * 1_000_003 + start + i) for i in range(len(part))]
        out = generate_uniform(model, ids, settings, mask, generators, record=False)
        for row, answer in zip(part, out.sequences[:, ids.shape[1] :], strict=True):
            text = model.tokenizer.decode(answer, skip_special_tokens=True)
            right += grade_outcome("countdown", text, reference("countdown", row))[1].correct
    return right / len(rows)


def test_new_tiny_dgemma_builds_from_its_seed_with_the_task_tokenizer() -> None:
    a, b, c = tiny_dgemma(seed=0), tiny_dgemma(seed=0), tiny_dgemma(seed=1)
    assert isinstance(a, DiffusionGemma) and a.family == "tiny-dgemma"
    assert a.text_config.vocab_size == len(a.tokenizer)
    assert (a.pad_token_id, a.eos_token_ids) == (a.tokenizer.pad_token_id, (a.tokenizer.eos_token_id,))
    assert a.config.image_token_id == a.tokenizer.mask_token_id  # the text family never sees images
    assert a.text_config.layer_types == ["sliding_attention", "full_attention"]
    state_b = b.state_dict()
    assert all(torch.equal(v, state_b[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    # still one tied stack
    enc = a.model.encoder.language_model.layers[0].self_attn.q_proj.weight
    assert enc.data_ptr() == a.model.decoder.layers[0].self_attn.q_proj.weight.data_ptr()


def test_model_config_keys_checked_in_one_line() -> None:
    check_new("new:tiny-dgemma", {"hidden_size": 32, "canvas_length": 8})
    with pytest.raises(CheckpointError, match="unmask-tiny-dgemma model config: unknown key.*hidden"):
        check_new("new:tiny-dgemma", {"hiden_size": 32})
    with pytest.raises(CheckpointError, match="unmask-tiny-dgemma model config: unknown key.*vocab_size"):
        check_new("new:tiny-dgemma", {"vocab_size": 5})  # token ids come from the tokenizer


def test_sft_from_scratch_saves_a_diffusion_gemma_checkpoint(tmp_path: Path) -> None:
    """Three steps of the build recipe: the loss runs and final/ loads back as the tiny family, same weights."""
    recipe = load_sft_recipe(BUILD, [f"output_dir={tmp_path}", "optim.max_steps=3", "optim.warmup_steps=0",
                                     "optim.per_device_train_batch_size=8", "logging.logging_steps=1",
                                     "model.config.hidden_size=32", "model.config.intermediate_size=32"])
    last = train_sft(recipe)
    assert last["skipped"] == 0.0 and torch.isfinite(torch.tensor(last["loss"]))
    model = load_model(tmp_path / "final")
    assert type(model) is TinyDiffusionGemma and model.family == "tiny-dgemma" and model.config.canvas_length == 16
    fresh = tiny_dgemma(recipe.model.config, seed=recipe.seed)
    assert fresh.lm_head.weight.shape == model.lm_head.weight.shape
    assert not torch.equal(fresh.lm_head.weight, model.lm_head.weight)  # trained
    assert model.tokenizer.decode(model.tokenizer("<answer>1+2</answer>")["input_ids"]) == "<answer>1+2</answer>"
    out = generate_uniform(model, torch.tensor([[5, 6, 7]]), answer_settings(model, steps=4), record=False)
    assert out.sequences.shape == (1, 3 + 16)


@pytest.mark.skipif(not (ASSET / WEIGHTS).exists(), reason="builtin:tiny-countdown-dgemma not built (make tiny-dgemma-model)")
def test_shipped_model_loads_and_its_hash_matches() -> None:
    assert (ASSET / HASH_FILE).read_text().split()[0] == sha256_file(ASSET / WEIGHTS)
    model = load_model(ASSET)
    assert isinstance(model, TinyDiffusionGemma) and model.family == "tiny-dgemma"
    assert model.tokenizer is not None and len(model.tokenizer) == model.text_config.vocab_size


@pytest.mark.skipif(not (ASSET / WEIGHTS).exists(), reason="builtin:tiny-countdown-dgemma not built (make tiny-dgemma-model)")
def test_shipped_model_leaves_room_for_rl() -> None:
    """Greedy held-out accuracy in the range the docs state: it answers, and is wrong often enough for RL."""
    low, high = SHIPPED_ACCURACY
    assert low <= heldout_accuracy(load_model(ASSET), limit=200) <= high


@pytest.mark.slow
def test_build_reproduces_byte_for_byte(tmp_path: Path) -> None:
    """The build command (one thread, the recipe's seed) run twice, shortened: the same weights' bytes."""
    hashes = []
    for run in ("a", "b"):
        out = tmp_path / run
        subprocess.run([sys.executable, "-m", "unmask.cli", "sft", BUILD, f"output_dir={out}", "optim.max_steps=20",
                        "optim.per_device_train_batch_size=16", "model.config.hidden_size=32"],
                       check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
        hashes.append(sha256_file(out / "final" / WEIGHTS))
    assert hashes[0] == hashes[1]


@pytest.mark.skipif(not (ASSET / WEIGHTS).exists(), reason="builtin:tiny-countdown-dgemma not built (make tiny-dgemma-model)")
def test_unmask_eval_runs_the_uniform_sampler(tmp_path: Path) -> None:
    """unmask eval in process reaches the uniform sampler (sample dispatch) with the checkpoint's own lengths."""
    assert main(["eval", "--model", "builtin:tiny-countdown-dgemma", "--bench", "countdown", "--limit", "40",
                 "--out", str(tmp_path / "eval")]) == 0
    records = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 40 and any(r["correct"] for r in records)


@pytest.mark.slow
@pytest.mark.skipif(not (ASSET / WEIGHTS).exists(), reason="builtin:tiny-countdown-dgemma not built (make tiny-dgemma-model)")
@pytest.mark.parametrize("recipe", ["tiny/countdown_dgemma_diffu_grpo", "tiny/countdown_dgemma_mdpo"])
def test_rl_recipe_trains_the_shipped_model(recipe: str, tmp_path: Path) -> None:
    """Two RL steps of each tiny DiffusionGemma recipe with the renoise estimators, end to end."""
    assert main(["train", recipe, "optim.max_steps=2", "eval.before=false", "eval.after=false",
                 f"output_dir={tmp_path}"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "accept_changed" in r]
    assert len(steps) == 2 and all(0.0 <= r["accept_changed"] <= 1.0 for r in steps)
