"""Peak host memory of one renoise-replay forward + backward at DiffusionGemma's real vocabulary.

A tiny DiffusionGemma stack with the real 262 144-token vocabulary samples one row, then the
renoise replay scores it with ``--chunk`` fp32 logit elements per chunk (``LOGIT_CHUNK_ELEMENTS``
by default). ``ru_maxrss`` is a per-process peak, so run one setting per process and compare
the rise above the sampling peak (docs/diffusion-gemma.md):

    python bench/replay_memory.py --chunk 16777216      # one 64-slot canvas per chunk
    python bench/replay_memory.py --chunk 1073741824    # every step in one chunk (unchunked)
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from unmask.models.diffusion_gemma import (
    TINY_TEXT,
    TINY_TOP,
    TINY_VISION,
    DiffusionGemma,
    diffusion_gemma_config,
)
from unmask.rl.renoise_replay import LOGIT_CHUNK_ELEMENTS, RenoiseReplayEstimator
from unmask.rollouts.samplers import sample


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk", type=int, default=LOGIT_CHUNK_ELEMENTS, help="fp32 logit elements per chunk")
    parser.add_argument("--vocab", type=int, default=262_144)
    parser.add_argument("--canvas", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    text = {**TINY_TEXT, "vocab_size": args.vocab, "sliding_window": 4 * args.canvas}
    model = DiffusionGemma(diffusion_gemma_config(text, TINY_VISION, **{**TINY_TOP, "canvas_length": args.canvas}))
    prompt = torch.tensor([[2, 5, 9, 11, 40]])
    traj = sample(model.eval(), prompt, gen_length=args.canvas, steps=args.steps, seed=[3], record=True)
    sampled = peak_mib()
    start = time.perf_counter()
    scores = RenoiseReplayEstimator(model.process, chunk_elements=args.chunk).token_logprobs(model, traj, 0)
    scores.logprobs.sum().backward()
    print(f"vocab {args.vocab} canvas {args.canvas} scored decisions {int(scores.mask.sum())} chunk {args.chunk}: "
          f"peak RSS {sampled:.0f} MiB after sampling, {peak_mib():.0f} MiB after the replay "
          f"(+{peak_mib() - sampled:.0f}), replay {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
