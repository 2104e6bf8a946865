"""Rollout speed per decoding strategy on the tiny family: tokens/s and forwards per answer.

    python bench/rollout.py [--batch 8 --gen-length 64 --steps 64 --block-length 32 --device cpu --threads 1]

Untrained weights: the numbers measure the sampler, not answer quality, and
threshold decoding's forward count depends on how confident the model is.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table
from unmask.rollouts import generate

from unmask.models.tiny import tiny

STRATEGIES = {
    "low_confidence": {},
    "random": {"remasking": "random"},
    "margin": {"remasking": "margin"},
    "entropy": {"remasking": "entropy"},
    "rcr (τ=0.4)": {"remasking": "rcr", "temperature": 0.4},
    "low_confidence, cosine": {"schedule": "cosine"},
    "threshold 0.9": {"threshold": 0.9},
    "cfg 1.0": {"cfg_scale": 1.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--gen-length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (oversubscription is slow)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = tiny(seed=0).eval().to(args.device)
    prompts = torch.randint(10, 100, (args.batch, 16), generator=torch.Generator().manual_seed(0)).to(args.device)
    settings = {"gen_length": args.gen_length, "steps": args.steps, "block_length": args.block_length, "seed": 0}
    generate(model, prompts, **settings)  # warm-up

    table = Table(title=f"rollouts on tiny ({args.device}, batch {args.batch}, L={args.gen_length}, S={args.steps}, B={args.block_length})")
    for column in ("strategy", "tokens/s", "forwards / answer", "seconds"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for name, extra in STRATEGIES.items():
        start = time.perf_counter()
        traj = generate(model, prompts, **settings, **extra)
        if args.device != "cpu":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        tokens = args.batch * args.gen_length
        table.add_row(name, f"{tokens / seconds:,.0f}", f"{traj.nfe.double().mean():.1f}", f"{seconds:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
