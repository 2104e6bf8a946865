"""The renoise replay at scale: it trains under DDP (two gloo processes get the one-process gradient of
their rows together), and its vocabulary reductions run in chunks of canvases that change nothing
but the memory they hold (docs/diffusion-gemma.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dgemma_ddp_run as ddp
import pytest
import torch
from test_renoise_replay import peaky, rollout

from unmask.rl.renoise_replay import RenoiseReplayEstimator
from unmask.rollouts.trajectory import Trajectory

TESTS = Path(__file__).resolve().parent


def grads_of(traj: Trajectory, rows: list[int], scale: float) -> dict[str, torch.Tensor]:
    """One-process LoRA gradients of ``scale`` × the replay loss of ``rows``."""
    model = ddp.policy()
    (ddp.replay_loss(model, traj.select(rows)) * scale).backward()
    return ddp.lora_grads(model)


def test_two_ddp_processes_get_the_one_process_gradient_of_both_rows(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(TESTS / "dgemma_ddp_run.py"), str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
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
