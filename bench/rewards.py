"""Grading throughput per grader (in-process and pool) and dedup on an MDPO-like batch.

Run: python bench/rewards.py [--workers N] [--items N]. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import time

from unmask.rewards import RewardRunner, RewardSpec

WORKLOADS = {
    "math": (lambda i: f"so \\boxed{{\\frac{{{i}}}{{{i + 1}}}}}", {"answer": "\\frac{1}{2}"}),
    "gsm8k": (lambda i: f"<answer>{i}</answer>", {"answer": "#### 18"}),
    "countdown": (
        lambda i: f"<answer>({i % 97} + 3) * 4</answer>",
        {"nums": "3,4,5", "target": 32},
    ),
    "sudoku": (
        lambda i: f"<answer>{i:016d}</answer>",
        {"puzzle": "3102200002100320", "solution": "3142243142131324"},
    ),
}


def throughput(task: str, items: int, workers: int) -> float:
    make, reference = WORKLOADS[task]
    texts = [make(i) for i in range(items)]  # all distinct: no dedup, no cache
    columns = {k: [v] * items for k, v in reference.items()}
    with RewardRunner([RewardSpec(task)], num_workers=workers) as runner:
        if workers:
            runner.score([""], ["warm-up"], {k: v[:1] for k, v in columns.items()})
        started = time.perf_counter()
        runner.score([""] * items, texts, columns)
        return items / (time.perf_counter() - started)


def mdpo_batch(steps: int, group: int, seed: int = 0) -> list[str]:
    """``steps x group`` intermediate answers: each rollout settles early and then repeats."""
    rng = random.Random(seed)
    texts = []
    for _ in range(group):
        settle = rng.randrange(steps)
        final = rng.randrange(10)
        texts += [f"\\boxed{{{rng.randrange(10) if t < settle else final}}}" for t in range(steps)]
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--items", type=int, default=400)
    args = parser.parse_args()
    print(f"{'grader':<10} {'in-process/s':>13} {f'pool({args.workers})/s':>12}")
    for task in WORKLOADS:
        single = throughput(task, args.items, 0)
        pooled = throughput(task, args.items, args.workers)
        print(f"{task:<10} {single:>13.0f} {pooled:>12.0f}")
    steps, group = 64, 8
    texts = mdpo_batch(steps, group)
    with RewardRunner([RewardSpec("math")], num_workers=args.workers) as runner:
        started = time.perf_counter()
        batch = runner.score([""] * len(texts), texts, {"answer": ["7"] * len(texts)})
        seconds = time.perf_counter() - started
    m = batch.metrics
    print(
        f"MDPO-like batch T={steps} x G={group}: {len(texts)} texts, graded {m['graded']:.0f}, "
        f"dedup hit rate {m['dedup_hits'] / m['items']:.1%}, {seconds:.2f} s (pool start included)"
    )


if __name__ == "__main__":
    main()
