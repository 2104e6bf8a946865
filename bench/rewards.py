"""Grading throughput per grader (in-process and pool), on real MATH500 answers, and
dedup on an MDPO-like batch.

Run: python bench/rewards.py [--workers N] [--items N] [--real DIR]. Prints numbers,
asserts nothing. The real-answer rows need d1's LLaDA MATH500 generations
(default ../shared/data/real_generations; skipped when absent).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

from unmask.evaluation.generations import read_generations
from unmask.rewards.mathgrade import _parse, extract_math_answer, math_equal, verify_equal
from unmask.rewards.registry import RewardSpec
from unmask.rewards.runner import RewardRunner

REAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_generations"

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


def tree_cpu_seconds(root: int | None = None) -> float:
    """CPU seconds (user + system) used so far by this process and all its descendants
    (pool workers, forkserver): load-independent, unlike wall time on a shared machine."""
    root = os.getpid() if root is None else root
    stats, parents = {}, {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(name)] = int(fields[1])
            stats[int(name)] = int(fields[11]) + int(fields[12])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    return sum(stats.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


def _rates(answers: int, seconds: float, cpu: float, workers: int) -> str:
    cores = max(workers, 1)
    return (
        f"{answers / seconds:.0f} answers/s wall, {answers / cpu:.0f} answers per CPU-second "
        f"(≈ {cores * answers / cpu:.0f}/s on {cores} idle cores if the work splits evenly)"
    )


def real_math(directory: Path) -> list[tuple[str, str]]:
    """(completion, gold) of every real LLaDA MATH500 answer in ``directory``."""
    paths = sorted(directory.glob("math500_*.json"))
    return [(i.completion, i.reference["answer"]) for p in paths for i in read_generations(p)[0]]


def grpo_stream(pairs: list[tuple[str, str]], group: int, prompts: int, epochs: int, seed: int = 0):
    """Steps of ``prompts`` x ``group`` (completion, gold): each prompt's group holds its own
    real answer and ``group - 1`` real answers to other problems (drawn with ``seed``), so
    a step mixes right and wrong forms; prompts cycle in order for ``epochs`` epochs."""
    rng = random.Random(seed)
    order = list(range(len(pairs))) * epochs
    for start in range(0, len(order), prompts):
        step = []
        for p in order[start : start + prompts]:
            others = rng.sample(range(len(pairs)), group - 1)
            step += [(pairs[p][0], pairs[p][1])] + [(pairs[o][0], pairs[p][1]) for o in others]
        yield step


def cheap_path_gain(pairs: list[tuple[str, str]]) -> None:
    """One process, CPU time: math-verify alone against the cheap path first, on the
    extracted answers (the parser warmed on the same answers before either is timed)."""
    answers = [(gold, extract_math_answer(c)) for c, gold in pairs]
    answers = [(g, a) for g, a in answers if a]
    for gold, answer in answers:  # warm math-verify's parser: both timings start equal
        verify_equal(gold, answer)
    rates = {}
    for label, check in (("math-verify only", verify_equal), ("cheap path first", math_equal)):
        _parse.cache_clear()
        started = time.process_time()
        for gold, answer in answers:
            check(gold, answer)
        rates[label] = len(answers) / (time.process_time() - started)
    print("math, one process, " + ", ".join(f"{k}: {v:.0f} answers per CPU-second" for k, v in rates.items()))


def real_math_rows(pairs: list[tuple[str, str]], workers: int) -> None:
    """Answers/s on real MATH500 answers: each distinct answer once (cold), and a
    training-like stream through one runner (its cache and dedup work across steps).
    Wall rates depend on the machine's load; CPU-second rates do not."""
    with RewardRunner([RewardSpec("math")], num_workers=workers) as runner:
        runner.score(["", ""], ["\\boxed{x}", "\\boxed{y}"], {"answer": ["1", "2"]})  # start the pool
        cpu, started = tree_cpu_seconds(), time.perf_counter()
        batch = runner.score([""] * len(pairs), [c for c, _ in pairs], {"answer": [g for _, g in pairs]})
        seconds, cpu = time.perf_counter() - started, tree_cpu_seconds() - cpu
    m = batch.metrics
    print(
        f"math, {len(pairs)} distinct real answers: {_rates(len(pairs), seconds, cpu, workers)}; "
        f"{m['in_process'] / m['graded']:.0%} decided in process, the rest by math-verify in the pool"
    )
    for epochs in (1, 2):
        with RewardRunner([RewardSpec("math")], num_workers=workers) as runner:
            runner.score(["", ""], ["\\boxed{x}", "\\boxed{y}"], {"answer": ["1", "2"]})
            total, cpu, started = 0, tree_cpu_seconds(), time.perf_counter()
            for step in grpo_stream(pairs, group=8, prompts=8, epochs=epochs):
                runner.score([""] * len(step), [c for c, _ in step], {"answer": [g for _, g in step]})
                total += len(step)
            seconds, cpu = time.perf_counter() - started, tree_cpu_seconds() - cpu
            c = runner.counters
        print(
            f"math, GRPO-like stream (8 prompts x 8 answers a step, {epochs} epoch(s), {total} answers): "
            f"{_rates(total, seconds, cpu, workers)}; in process {c['in_process'] / c['graded']:.0%} of "
            f"{c['graded']} graded, cache hits {c['cache_hits'] / total:.0%}, dedup hits {c['dedup_hits'] / total:.0%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--real", type=Path, default=REAL_DIR, help="folder of d1's MATH500 generations")
    args = parser.parse_args()
    pairs = real_math(args.real)
    if pairs:
        cheap_path_gain(pairs)
        real_math_rows(pairs, args.workers)
    else:
        print(f"(no MATH500 generations in {args.real}: real-answer rows skipped)")
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
