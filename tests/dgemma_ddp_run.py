"""Renoise-replay gradients of a tiny DiffusionGemma LoRA policy under DDP: test_renoise_replay_scale.py.

Usage: ``torchrun --standalone --nproc_per_node 2 tests/dgemma_ddp_run.py OUT_DIR``. Every rank
builds the same policy and rollout (two rows, seeded), wraps the policy in
``DistributedDataParallel`` (gloo), replays its own row through the wrapper, runs one backward
and saves its (all-reduced) LoRA gradients to ``OUT_DIR/rank{r}.pt``. The test compares them
with the one-process gradient of both rows, computed with the same helpers.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

import torch.distributed as dist  # noqa: E402
from peft import PeftModel  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from unmask.models.diffusion_gemma import tiny_diffusion_gemma  # noqa: E402
from unmask.models.lora import apply_lora  # noqa: E402
from unmask.rl.renoise_replay import RenoiseReplayEstimator  # noqa: E402
from unmask.rollouts.samplers import sample  # noqa: E402
from unmask.rollouts.trajectory import Trajectory  # noqa: E402

PROMPT = torch.tensor([[0, 0, 9, 11, 40], [2, 7, 8, 30, 31]])  # row 0 left-padded


def policy() -> PeftModel:
    """A tiny DiffusionGemma with tied LoRA whose B matrices are non-zero, so every adapter gets a gradient."""
    with torch.random.fork_rng(devices=[]):  # peft draws lora_A from the global RNG
        torch.manual_seed(1)
        model = apply_lora(tiny_diffusion_gemma(0), r=4, alpha=8)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.1)
    return model


def rollout(model: nn.Module) -> Trajectory:
    with torch.no_grad():
        return sample(model, PROMPT, attention_mask=PROMPT != 0, gen_length=16, steps=12, seed=[3, 4], record=True)


def replay_loss(model: nn.Module, traj: Trajectory) -> torch.Tensor:
    """The summed log-probs of every scored decision (what a policy-gradient loss weighs by advantages)."""
    return RenoiseReplayEstimator(tiny_diffusion_gemma(0).process).token_logprobs(model, traj, 0).logprobs.sum()


def lora_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.grad.clone() for name, param in model.named_parameters() if param.requires_grad}


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    local = policy()
    traj = rollout(local)
    wrapped = DistributedDataParallel(local)
    replay_loss(wrapped, traj.select([rank])).backward()  # DDP averages: the mean of the two rows' gradients
    torch.save(lora_grads(local), out / f"rank{rank}.pt")
    # a DDP module still alive when its group is destroyed left one rank hanging at exit in 2 of ~10 runs (rl/distributed.py)
    dist.barrier()
    del wrapped
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
