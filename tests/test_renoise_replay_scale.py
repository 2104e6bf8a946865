"""The renoise replay at scale: it trains under DDP (two gloo processes get the one-process gradient of
their rows together), and its vocabulary reductions run in chunks of canvases that change nothing
but the memory they hold (docs/diffusion-gemma.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import dgemma_ddp_run as ddp
import pytest
import torch
from safetensors.torch import load_file
from test_diffusion_gemma_rl import PROMPT, REWARD
from test_renoise_replay import peaky, rollout

from unmask.rl.logging import read_metrics
from unmask.rl.renoise_replay import RenoiseReplayEstimator
from unmask.rollouts.trajectory import Trajectory

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
#: two local processes on a free port
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def run_all(command: list[str], **options: object) -> tuple[int, str]:
    """``command``'s exit code and output tail; on timeout every process it started (torchrun's ranks
    too, not only torchrun) is killed, so a hung rank cannot outlive the test."""
    with subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, **options) as proc:  # fmt: skip
        try:
            output, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        return proc.returncode, output[-6000:]


def grads_of(traj: Trajectory, rows: list[int], scale: float) -> dict[str, torch.Tensor]:
    """One-process LoRA gradients of ``scale`` × the replay loss of ``rows``."""
    model = ddp.policy()
    (ddp.replay_loss(model, traj.select(rows)) * scale).backward()
    return ddp.lora_grads(model)


def test_two_ddp_processes_get_the_one_process_gradient_of_both_rows(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    command = [*TORCHRUN, str(TESTS / "dgemma_ddp_run.py"), str(tmp_path)]
    code, output = run_all(command, env=env)
    assert code == 0, output
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    traj = ddp.rollout(ddp.policy())
    both = grads_of(traj, [0, 1], 0.5)  # DDP averages over ranks: the mean over the two rows
    alone = grads_of(traj, [0], 1.0)
    assert ranks[0].keys() == both.keys()
    assert any("experts" in name for name in both) and any("self_conditioning" in name for name in both)
    differs = 0
    for name, expected in both.items():
        assert expected.abs().sum() > 0, name  # every adapter (attention, MLP, experts, SC block) is trained
        for got in ranks:
            torch.testing.assert_close(got[name], expected, rtol=1e-4, atol=1e-5, msg=name)
        differs += not torch.allclose(alone[name], expected, rtol=1e-3, atol=1e-6)
    assert differs > len(both) // 2  # a rank's own row alone gives another gradient: the sync did the work


def train_recipe(out: Path, processes: int) -> Path:
    """Two RL steps of diffu-GRPO with the renoise replay on a fresh tiny DiffusionGemma, two prompts per
    step split over ``processes``, one-answer micro-batches (the step's gradient: the mean over its answers)."""
    recipe = {
        "seed": 0, "output_dir": str(out / f"run{processes}"),
        "model": {"name_or_path": "new:tiny-dgemma", "config": {"canvas_length": 8}, "dtype": "float32",
                  "device": "cpu"},
        "lora": {"enabled": True, "r": 8, "alpha": 16},
        "data": {"task": "countdown", "chat_template": False, "prompt_template": PROMPT,
                 "generator": {"num_numbers": 3, "min_number": 1, "max_number": 10}},
        "rollout": {"num_generations": 2, "prompts_per_step": 2 // processes, "max_completion_length": 16,
                    "steps": 8, "block_length": 8},
        "algorithm": {"name": "diffu_grpo", "estimator": "renoise_replay", "loss_mask": "scored", "beta": 0.0,
                      "num_iterations": 2},
        "rewards": {"functions": [{"name": "dgemma_reward:digits"}], "num_workers": 0},
        "optim": {"learning_rate": 1e-3, "max_steps": 2, "per_device_train_batch_size": 1,
                  "gradient_accumulation_steps": 4 // processes},
        "eval": {"before": False, "after": False},
        "logging": {"report_to": ["jsonl"], "progress": False, "plot": False},
    }  # fmt: skip
    path = out / f"recipe{processes}.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


@pytest.mark.slow
def test_unmask_train_in_two_processes_ends_with_the_one_process_adapter(tmp_path: Path) -> None:
    """The whole trainer (rollouts per rank, θ_old passes, accumulation) in two processes (~45 s)."""
    (tmp_path / "dgemma_reward.py").write_text(REWARD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path)}
    launch = [*TORCHRUN, "-m", "unmask.cli"]  # accelerate reads torchrun's ranks: a gloo group for device: cpu
    for command in ([*launch, "train", str(train_recipe(tmp_path, 2))],
                    [sys.executable, "-m", "unmask.cli", "train", str(train_recipe(tmp_path, 1))]):  # fmt: skip
        code, output = run_all(command, cwd=ROOT, env=env)
        assert code == 0, output
    two, one = (load_file(str(tmp_path / f"run{n}" / "checkpoint-2" / "adapter_model.safetensors")) for n in (2, 1))
    assert two.keys() == one.keys() and max(float(t.abs().max()) for t in one.values()) > 1e-3
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=1e-3, atol=1e-5, msg=name)
    for got, expected in zip(*(read_metrics(tmp_path / f"run{n}" / "metrics.jsonl") for n in (2, 1)), strict=True):
        assert got["reward"] == pytest.approx(expected["reward"], abs=1e-6)  # the ranks sampled the same answers
        assert got["grad_norm"] == pytest.approx(expected["grad_norm"], rel=1e-3)


@pytest.mark.parametrize("exact_sc", [False, True])
def test_chunked_replay_equals_the_unchunked_replay(exact_sc: bool) -> None:
    model = peaky()
    traj = rollout(model)
    grads, scores = [], []
    for chunk in (1 << 27, 1):  # everything in one chunk; one canvas per chunk
        model.zero_grad()
        got = RenoiseReplayEstimator(model.process, exact_sc=exact_sc, chunk_elements=chunk).token_logprobs(
            model, traj, 0)  # fmt: skip
        got.logprobs.sum().backward()
        scores.append(got)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    whole, chunked = scores
    torch.testing.assert_close(chunked.logprobs, whole.logprobs, atol=1e-6, rtol=0)
    torch.testing.assert_close(chunked.entropy, whole.entropy, atol=1e-6, rtol=0)
    # replay_drift (the distance to the sampler's log-probs, held to 1e-5 in test_renoise_replay.py) moves by round-off only
    assert torch.equal(chunked.mask, whole.mask) and chunked.metrics == pytest.approx(whole.metrics, abs=1e-6)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, grad in grads[0].items():  # to fp32 round-off of the tensor's scale (the tied head sums 500-ish terms)
        assert (grads[1][name] - grad).abs().max() <= 1e-6 * grad.abs().max() + 1e-7, name


def test_no_vocabulary_sized_logits_are_kept_for_backward() -> None:
    """Checkpointed chunks: backward recomputes each chunk's logits instead of holding all of them."""
    model = peaky()
    traj = rollout(model)
    vocab = model.lm_head.out_features
    saved: list[torch.Size] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.shape)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        scores = RenoiseReplayEstimator(model.process).token_logprobs(model, traj, 0)
    assert scores.mask.any() and scores.logprobs.requires_grad
    logit_like = [shape for shape in saved if len(shape) == 3 and shape[-1] == vocab]
    assert saved and not logit_like, logit_like
