"""Seconds and peak memory per RL step, split into rollout / reward / update, per algorithm.

    python bench/train_step.py                       # tiny family, CPU, all algorithms
    python bench/train_step.py --device cuda --steps 5 --algorithms mdpo

Runs the real trainer (in-process rollouts) on a freshly initialised tiny model with
generated Countdown prompts; the first step is a warm-up and is not averaged.
Memory: on CUDA the peak allocated memory inside each phase; on the CPU the
process's peak resident set size when the phase ends (it only grows).
"""

from __future__ import annotations

import argparse
import functools
import resource
import tempfile
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from unmask.models.tiny import tiny
from unmask.recipe import validate_recipe
from unmask.rl.trainer import Trainer

ALGORITHMS = ("diffu_grpo", "mdpo", "igpo", "wd1")
PHASES = ("rollout", "reward", "update")


class PeakMemory:
    """Peak memory (MiB) observed per phase, across calls."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.peaks: dict[str, float] = defaultdict(float)

    def _peak(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

    def wrap(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def measured(*args: Any, **kwargs: Any) -> Any:
            if self.cuda:
                torch.cuda.reset_peak_memory_stats()
            try:
                return fn(*args, **kwargs)
            finally:
                self.peaks[phase] = max(self.peaks[phase], self._peak())

        return measured


def build_recipe(algorithm: str, args: argparse.Namespace, output_dir: str) -> Any:
    extra = {"sample_train_steps": args.train_steps} if algorithm == "mdpo" else {}
    return validate_recipe({
        "output_dir": output_dir,
        "model": {"device": args.device},
        "lora": {"r": 16, "alpha": 32},
        "data": {"task": "countdown", "chat_template": False, "limit": 256},
        "rollout": {
            "num_generations": args.generations, "prompts_per_step": args.prompts,
            "max_completion_length": args.gen_length, "steps": args.gen_length, "block_length": args.gen_length,
            "temperature": 0.7, "remasking": "rcr" if algorithm == "mdpo" else "low_confidence",
        },
        "algorithm": {"name": algorithm, "num_iterations": args.iterations, **extra},
        "rewards": {"functions": [{"name": "countdown"}], "num_workers": 0},
        "optim": {"max_steps": args.steps, "per_device_train_batch_size": args.micro_batch},
        "logging": {"report_to": ["none"], "progress": False},
        "checkpoint": {"save_final": False},
    }, f"bench {algorithm}")


def bench(algorithm: str, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(build_recipe(algorithm, args, out), model_factory=functools.partial(tiny, seed=0))
        memory = PeakMemory(args.device)
        trainer.rollouts.sample = memory.wrap("rollout", trainer.rollouts.sample)
        trainer.rollouts.score_fn = memory.wrap("reward", trainer.rollouts.score_fn)
        trainer.update = memory.wrap("update", trainer.update)
        steps = list(trainer.steps())
    timed = steps[1:] or steps
    result = {phase: sum(m[f"time/{phase}"] for m in timed) / len(timed) for phase in (*PHASES, "step")}
    result.update({f"mem/{phase}": memory.peaks[phase] for phase in PHASES})
    result["forward_passes"] = sum(m["forward_passes"] for m in timed) / len(timed)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="RL steps per algorithm (first is warm-up)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--gen-length", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=1, help="num_iterations (inner updates)")
    parser.add_argument("--train-steps", type=int, default=4, help="MDPO sample_train_steps")
    parser.add_argument("--micro-batch", type=int, default=16)
    args = parser.parse_args()
    print(f"tiny family, {args.device}, {args.prompts} prompts x G={args.generations}, L={args.gen_length}, "
          f"mu={args.iterations}; mean over steps 2..{args.steps}")
    header = f"{'algorithm':<11}" + "".join(f"{h:>11}" for h in (*PHASES, "step", "fwd/step"))
    header += "".join(f"{'MiB ' + p:>14}" for p in PHASES)
    print(header)
    for algorithm in args.algorithms:
        r = bench(algorithm, args)
        row = f"{algorithm:<11}" + "".join(f"{r[p]:>10.3f}s" for p in (*PHASES, "step"))
        row += f"{r['forward_passes']:>11.0f}" + "".join(f"{r['mem/' + p]:>14.1f}" for p in PHASES)
        print(row)


if __name__ == "__main__":
    main()
