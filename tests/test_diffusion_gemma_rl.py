"""DiffusionGemma on the RL path: the trainer's rollouts and ``unmask eval`` sample it with the
uniform renoise sampler its process names, and ``unmask train`` runs the renoise-replay estimator
end to end on a fresh tiny DiffusionGemma (``new:tiny-dgemma``) on tiny Countdown (docs/diffusion-gemma.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unmask.evaluation.runner import evaluate
from unmask.evaluation.settings import EvalSettings
from unmask.models.diffusion_gemma import DiffusionGemma, tiny_diffusion_gemma
from unmask.models.tiny_dgemma import tiny_dgemma
from unmask.rl.renoise_replay import RenoiseReplayEstimator
from unmask.rollouts.samplers import sample
from unmask.rollouts.trajectory import Trajectory
from unmask.rollouts.uniform_sampler import UniformSettings, generate_uniform

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Using the numbers {nums}, create an equation that equals {target}. Put the equation in <answer> </answer> tags."


def tiny_countdown_gemma() -> DiffusionGemma:
    """A random tiny DiffusionGemma over the tiny task alphabet, canvas 8 (two canvases per 16-token answer)."""
    return tiny_dgemma({"canvas_length": 8})


def test_sample_dispatches_on_the_process_and_keeps_the_uniform_sampler_tokens() -> None:
    model = tiny_countdown_gemma()
    prompt = torch.tensor([[5, 9, 11, 40], [7, 8, 30, 31]])
    traj = sample(model, prompt, gen_length=16, steps=8, block_length=8, seed=[3, 4], record=True)
    generators = [torch.Generator().manual_seed(s) for s in (3, 4)]
    settings = UniformSettings(max_new_tokens=16, steps=4, eos_token_id=model.eos_token_ids[0],
                               pad_token_id=model.pad_token_id)  # fmt: skip
    direct = generate_uniform(model, prompt, settings, generators=generators)
    n = direct.sequences.shape[1]
    assert torch.equal(traj.tokens[:, :n], direct.sequences) and traj.tokens.shape == (2, 4 + 16)
    assert traj.renoise is not None and torch.equal(traj.renoise.step_canvas, direct.step_canvas)
    assert traj.nfe.tolist() == [int(direct.step_active[:, b].sum()) for b in range(2)]
    assert traj.select([1]).renoise.step_canvas.shape[1] == 1
    assert sample(model, prompt, gen_length=16, steps=8, seed=[3, 4]).renoise is None  # nothing recorded


def test_unmask_eval_runner_samples_diffusion_gemma() -> None:
    model = tiny_countdown_gemma()
    rows = [{"prompt": PROMPT.format(nums=[1, 2, 3], target=6), "target": 6, "nums": [1, 2, 3]}] * 2
    settings = EvalSettings(gen_length=16, steps=8, block_length=8)
    result = evaluate(model, rows, "countdown", settings, chat_template=False)
    assert len(result.records) == 2 and all(r["nfe"] > 0 for r in result.records)
    assert result.records[0]["completion"] != result.records[1]["completion"]  # same prompt, own per-row seed


REWARD = '''
def digits(prompts, completions, **kwargs):
    """Share of digits in the answer: varies between samples, so advantages are not all zero."""
    return [sum(c.isdigit() for c in text) / max(len(text), 1) for text in completions]
'''


@pytest.mark.slow
def test_unmask_train_runs_two_rl_steps_with_the_renoise_replay(tmp_path: Path) -> None:
    (tmp_path / "dgemma_reward.py").write_text(REWARD)
    recipe = {
        "seed": 0, "output_dir": str(tmp_path / "run"),
        "model": {"name_or_path": "new:tiny-dgemma", "config": {"canvas_length": 8}, "dtype": "float32",
                  "device": "cpu"},
        "lora": {"enabled": True, "r": 8, "alpha": 16},
        "data": {"task": "countdown", "chat_template": False, "prompt_template": PROMPT,
                 "generator": {"num_numbers": 3, "min_number": 1, "max_number": 10}},
        "rollout": {"num_generations": 4, "prompts_per_step": 2, "max_completion_length": 16, "steps": 8,
                    "block_length": 8},
        "algorithm": {"name": "diffu_grpo", "estimator": "renoise_replay", "loss_mask": "scored",
                      "beta": 0.0, "num_iterations": 2},
        "rewards": {"functions": [{"name": "dgemma_reward:digits"}], "num_workers": 0},
        "optim": {"learning_rate": 1e-3, "max_steps": 2, "per_device_train_batch_size": 8},
        "eval": {"before": False, "after": False},
        "logging": {"report_to": ["jsonl"], "progress": False, "plot": False},
    }  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe))  # JSON is YAML
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "unmask.cli", "train", str(tmp_path / "recipe.yaml")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "loss" in line]
    assert [s["step"] for s in steps] == [1, 2]
    assert all(s["grad_norm"] > 0 for s in steps)  # the replay's log-probs carry the policy gradient
    assert all(0 <= s["accept_changed"] <= 1 for s in steps)


def test_a_row_is_independent_of_its_batch_when_rows_stop_at_different_steps() -> None:
    """A pool splits a batch across workers: a stopped row draws nothing, so its generator's stream
    (and the noise of its next canvases) does not depend on whether the rest of the batch stopped."""
    model = tiny_diffusion_gemma(0)
    with torch.no_grad():
        model.model.decoder.norm.weight *= 60  # confident: the adaptive stop fires
    prompt = torch.tensor([[2, 5, 9, 11, 40], [2, 7, 8, 30, 31]])
    settings = UniformSettings(max_new_tokens=24, steps=48)
    batch = generate_uniform(model, prompt, settings, generators=[torch.Generator().manual_seed(s) for s in (7, 8)])
    alone = generate_uniform(model, prompt[1:], settings, generators=[torch.Generator().manual_seed(8)])
    assert not torch.equal(batch.stop_step[:, 0], batch.stop_step[:, 1])  # the rows stop at different steps
    assert torch.equal(batch.sequences[1], alone.sequences[0])
    assert torch.equal(batch.stop_step[:, 1], alone.stop_step[:, 0])


def test_rollouts_joined_from_workers_equal_one_batch_and_replay_alike() -> None:
    """``Trajectory.cat`` (the pool's join) of rows sampled apart, whose canvases stopped at other
    steps, is the batch rollout: same tokens, same step layout and activity, same replayed scores."""
    model = tiny_diffusion_gemma(0)
    with torch.no_grad():
        model.model.decoder.norm.weight *= 60
    prompt = torch.tensor([[2, 5, 9, 11, 40], [2, 7, 8, 30, 31]])
    kwargs = {"gen_length": 24, "steps": 144, "block_length": 8, "record": True}
    batch = sample(model, prompt, seed=[7, 8], **kwargs)
    parts = [sample(model, prompt[i : i + 1], seed=[7 + i], **kwargs) for i in range(2)]
    assert not torch.equal(parts[0].renoise.step_n, parts[1].renoise.step_n)  # the workers ran other steps
    joined = Trajectory.cat(parts)
    assert torch.equal(joined.tokens, batch.tokens)
    for name in ("step_n", "step_block", "step_active", "stop_step"):
        assert torch.equal(getattr(joined.renoise, name), getattr(batch.renoise, name)), name
    estimator = RenoiseReplayEstimator(model.process)
    ours, theirs = estimator.token_logprobs(model, joined, 0), estimator.token_logprobs(model, batch, 0)
    assert torch.equal(ours.mask, theirs.mask) and ours.mask.any()
    # the workers' own log-probs; batch shapes differ between sampling and replay and the logits are
    # scaled x60, so fp32 rounding reaches 1e-5 here (tests/test_renoise_replay.py holds 1e-5 at x60 on 36 steps)
    recorded = joined.renoise.step_logprob.transpose(0, 1).reshape(2, -1)
    torch.testing.assert_close(ours.logprobs[ours.mask], recorded[ours.mask], atol=5e-5, rtol=0)
    torch.testing.assert_close(ours.logprobs, theirs.logprobs, atol=5e-5, rtol=0)


def test_unmask_train_refuses_a_mask_token_estimator_before_any_rollout(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "unmask.cli", "train", "tiny/countdown_diffu_grpo", f"output_dir={tmp_path}",
         "model.name_or_path=new:tiny-dgemma", "rollout.block_length=16", "rollout.steps=16", "eval.before=false",
         "logging.progress=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: algorithm.estimator: one_step scores a canvas corrupted with a mask token, which the uniform_noise "
        "process (DiffusionGemma) has none of; set algorithm.estimator: renoise_replay (renoise_step with the steps "
        "batch builder) and algorithm.loss_mask: scored"
    ]
    assert not (tmp_path / "metrics.jsonl").exists()  # refused when the trainer was built, nothing sampled
