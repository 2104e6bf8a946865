"""Learning benchmark: MDPO, diffu-GRPO (one-step, trajectory replay), IGPO, wd1, SPG, ESPO, BGPO, coupled-GRPO,
CJ-GRPO, GDSD and JustGRPO on tiny Countdown.

Every variant runs its shipped recipe (``recipes/tiny/countdown_*.yaml``; ``--task tinycode``:
the tiny code task's, graded by unit tests in the sandbox) from the
same model and step budget, for each seed, and is evaluated greedily at one and at
two tokens per step on the same held-out problems every ``--every`` steps. Each run
writes ``OUT/ALGORITHM-seedS.json`` (curve, per-problem answers, KL, weight change),
so runs can be spread over processes and tabulated together afterwards:

    python bench/learning.py --steps 80 --every 20 --seeds 0,1,2 --algorithms mdpo
    python bench/learning.py --report --out runs/bench-learning

``--train-seconds S`` compares at equal wall time instead: each run trains for as many
steps as fit in S seconds of training (give such runs their own ``--out``).

The report gives, per run, the held-out gain with its paired-bootstrap 95 % interval
over problems; per objective, the mean gain over seeds with its 95 % t-interval;
and MDPO's own claim on this task: accuracy after equal numbers of optimizer
updates, and the updates each objective needed to reach the best final accuracy of
the others. ``--set KEY=VALUE …`` overrides every recipe alike.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from unmask.evaluation import evaluate, paired_bootstrap
from unmask.recipe import load_recipe
from unmask.rl.checkpoint import trainable_state
from unmask.rl.trainer import Trainer
from unmask.run import eval_rows, eval_settings, model_factory, training_rows

ALGORITHMS = ("mdpo", "diffu_grpo", "igpo", "wd1", "diffu_grpo_trajectory", "spg", "espo", "bgpo",
              "coupled_grpo", "cj_grpo", "gdsd", "justgrpo")
RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "tiny"
#: two-sided 95 % Student-t quantiles by degrees of freedom (seeds − 1)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def greedy_accuracy(model: Any, recipe: Any, rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per-problem correctness at each greedy setting of the recipe (``greedy N tok/step``)."""
    settings = {name: s for name, s in eval_settings(recipe).items() if name.startswith("greedy")}
    result = evaluate(model, rows, recipe.data.task, list(settings.values()), batch_size=recipe.eval.batch_size,
                      seed=recipe.seed, chat_template=recipe.data.chat_template)
    by_label = {s.label: name for name, s in settings.items()}
    out: dict[str, list[float]] = {name: [] for name in settings}
    for record in sorted(result.records, key=lambda r: r["problem"]):
        out[by_label[record["setting"]]].append(float(record["correct"]))
    return out


def start_accuracy(model: Any, recipe: Any, rows: list[dict[str, Any]], out: Path) -> dict[str, list[float]]:
    """The start model's greedy answers, evaluated once per output folder: greedy decoding of one
    model on one problem set gives the same answers for every objective and seed."""
    cache = out / f"start-{recipe.model.name_or_path.replace(':', '_').replace('/', '_')}-{len(rows)}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    result = greedy_accuracy(model, recipe, rows)
    write_json(result, cache)
    return result


def reset_peak_memory() -> None:
    """Start a new peak: the accelerator's allocator where there is one, else the process's peak RSS
    (Linux resets VmHWM when "5" is written to clear_refs)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mib() -> float:
    """Peak memory since the last ``reset_peak_memory``, MiB (CUDA allocated, or resident set on the CPU)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def weight_change(start: dict[str, torch.Tensor], model: Any) -> float:
    """L2 norm of the trainable parameters' change since ``start``."""
    now = trainable_state(model)
    return math.sqrt(sum(float((now[k] - v).pow(2).sum()) for k, v in start.items()))


def out_of_time(seconds: float, steps: int, budget: float | None) -> bool:
    """Whether another step would overrun the training-time budget, predicting its time as the mean
    step so far: every run then ends at most about one of its steps short of the budget."""
    return budget is not None and seconds + seconds / steps > budget


def run(algorithm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one objective on one seed, for ``--steps`` steps or, with ``--train-seconds``, for as many
    steps as fit in that training time (the recipes' schedule is constant after warm-up, so the step
    cap does not change the learning rate); held-out greedy accuracy at step 0, every ``--every``
    steps, at ``--eval-at`` and at the end."""
    recipe = load_recipe(
        RECIPES / f"{args.task}_{algorithm}.yaml",
        [
            f"seed={seed}", f"optim.max_steps={args.steps}", f"eval.limit={args.limit}", "eval.every=0",
            f"output_dir={args.out}/{algorithm}-seed{seed}", "logging.progress=false",
            "checkpoint.save_final=false", *args.set,
        ],
    )  # fmt: skip
    rows = eval_rows(recipe)
    factory = model_factory(recipe.model)
    trainer = Trainer(recipe, model_factory=factory, rows=training_rows(recipe, rows))
    start = {k: v.clone() for k, v in trainable_state(trainer.unwrapped).items()}
    first = start_accuracy(trainer.unwrapped, recipe, rows, Path(args.out))
    curve = [{"step": 0, "updates": 0, "seconds": 0.0, "weight_change": 0.0,
              **{name: statistics.mean(v) for name, v in first.items()}}]
    updates, seconds, kl, peaks, last = 0, 0.0, [], [], first
    eval_at = {int(s) for s in args.eval_at.split(",") if s} if args.eval_at else set()
    reset_peak_memory()
    for metrics in trainer.steps():
        peaks.append(peak_memory_mib())
        updates += int(metrics.get("optimizer_steps", 0))
        seconds += metrics["time/step"]
        kl.append(metrics.get("kl", 0.0))
        done = trainer.step == args.steps or out_of_time(seconds, trainer.step, args.train_seconds)
        if done or trainer.step in eval_at or (args.every and trainer.step % args.every == 0):
            last = greedy_accuracy(trainer.unwrapped, recipe, rows)
            curve.append({"step": trainer.step, "updates": updates, "seconds": seconds,
                          "weight_change": weight_change(start, trainer.unwrapped),
                          **{name: statistics.mean(v) for name, v in last.items()}})
        reset_peak_memory()
        if done:
            break
    print(f"{algorithm} seed {seed}: {trainer.step} steps, {updates} updates, {seconds:.0f} s training", flush=True)
    return {"algorithm": algorithm, "seed": seed, "steps": trainer.step, "train_seconds": args.train_seconds,
            "overrides": args.set, "curve": curve, "kl": kl, "peak_memory_mib": peaks, "before": first, "after": last}


def write_json(value: Any, target: Path) -> None:
    """Atomically: several benchmark processes may share one output folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(value, handle)
    os.replace(tmp, target)


def interval(values: list[float]) -> str:
    """Mean and 95 % t-interval over seeds, in points."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return f"{mean:+.1f}"
    half = T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}]"


def report(out: Path) -> None:
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*-seed*.json"))]
    if not results:
        raise SystemExit(f"no results in {out}")
    console = Console(width=220)
    settings = list(results[0]["before"])
    budgets = {r.get("train_seconds") for r in results}
    if len(budgets) > 1:
        raise SystemExit(f"{out} mixes runs with different --train-seconds budgets: give each its own --out")
    budget = budgets.pop()
    timed = f", each run trained until its next step would pass {budget:.0f} s" if budget is not None else ""
    problems = len(results[0]["before"][settings[0]])
    runs = Table(title=f"held-out greedy accuracy (%), per run ({problems} problems{timed})")
    for column in ("algorithm", "seed", *settings, "steps", "updates", "KL (last 10)", "weight change", "train s", "s/step",
                   "peak MiB/step"):
        runs.add_column(column, no_wrap=True)
    gains: dict[str, dict[str, list[float]]] = {}
    for r in results:
        cells = []
        for name in settings:
            ci = paired_bootstrap(r["before"][name], r["after"][name], seed=r["seed"])
            before, after = 100 * statistics.mean(r["before"][name]), 100 * statistics.mean(r["after"][name])
            cells.append(f"{before:.1f} → {after:.1f} ({100 * ci.diff:+.1f} [{100 * ci.low:+.1f}, {100 * ci.high:+.1f}])")
            gains.setdefault(r["algorithm"], {}).setdefault(name, []).append(100 * ci.diff)
        end = r["curve"][-1]
        kl = r["kl"][-10:]
        runs.add_row(r["algorithm"], str(r["seed"]), *cells, str(end["step"]), str(end["updates"]), f"{statistics.mean(kl):.4f}",
                     f"{end['weight_change']:.2f}", f"{end['seconds']:.0f}", f"{end['seconds'] / end['step']:.2f}",
                     f"{max(r.get('peak_memory_mib') or [float('nan')]):.0f}")
    console.print(runs)
    summary = Table(title="mean gain over seeds, points [95 % t-interval]")
    for column in ("algorithm", "seeds", *settings):
        summary.add_column(column, no_wrap=True)
    for algorithm, per_setting in gains.items():
        seeds = len(next(iter(per_setting.values())))
        summary.add_row(algorithm, str(seeds), *[interval(per_setting[name]) for name in settings])
    console.print(summary)
    leader(results, settings, console)
    curves: dict[str, list[list[dict[str, Any]]]] = {}
    for r in results:
        curves.setdefault(r["algorithm"], []).append(r["curve"])
    if budget is None:  # timed runs are already at equal training time, and their updates differ by design
        equal_budget(curves, settings, "seconds", "training seconds", console)
        claim(curves, settings, console)


def leader(results: list[dict[str, Any]], settings: list[str], console: Console) -> None:
    """The objective with the largest mean gain (first setting) against each other one: the
    difference of final accuracies paired by seed, mean over the seeds both ran, 95 % t-interval
    (run-to-run variation, which the per-run bootstrap over problems does not cover)."""
    final = {(r["algorithm"], r["seed"]): {n: 100 * statistics.mean(r["after"][n]) for n in settings} for r in results}
    algorithms = sorted({a for a, _ in final})
    if len(algorithms) < 2:
        return
    mean = {a: statistics.mean(v[settings[0]] for (b, _), v in final.items() if b == a) for a in algorithms}
    best = max(algorithms, key=mean.get)
    table = Table(title=f"{best} minus each other objective, final accuracy, points, paired by seed [95 % t-interval]")
    for column in ("other", "seeds", *settings):
        table.add_column(column, no_wrap=True)
    for other in algorithms:
        seeds = sorted(s for a, s in final if a == other and (best, s) in final)
        if other == best or not seeds:
            continue
        table.add_row(other, str(len(seeds)), *[
            interval([final[(best, s)][n] - final[(other, s)][n] for s in seeds]) for n in settings])
    console.print(table)


def equal_budget(curves: dict[str, list[list[dict[str, Any]]]], settings: list[str], key: str, what: str,
                 console: Console) -> int:
    """Each objective's accuracy at its last evaluation within the smallest budget any run used."""
    budget = min(c[-1][key] for runs in curves.values() for c in runs)
    table = Table(title=f"at equal {what} (≤ {budget:.0f}), mean over seeds, % (step of that evaluation)")
    for column in ("algorithm", *settings, "steps"):
        table.add_column(column, no_wrap=True)
    for algorithm, runs in curves.items():
        at = [[p for p in c if p[key] <= budget][-1] for c in runs]
        table.add_row(algorithm, *[f"{100 * statistics.mean(p[name] for p in at):.1f}" for name in settings],
                      ", ".join(str(p["step"]) for p in at))
    console.print(table)
    return budget


def claim(curves: dict[str, list[list[dict[str, Any]]]], settings: list[str], console: Console) -> None:
    """MDPO's claim: accuracy at equal optimizer updates, and updates to reach the others' best."""
    if "mdpo" not in curves or len(curves) < 2:
        return
    equal_budget(curves, settings, "updates", "optimizer updates", console)
    table = Table(title="optimizer updates to reach the best other objective's final mean accuracy (1st setting)")
    for column in ("algorithm", "target %", "updates per seed (first evaluation at or above it)"):
        table.add_column(column, no_wrap=True)
    final = {a: statistics.mean(c[-1][settings[0]] for c in runs) for a, runs in curves.items()}
    for algorithm, runs in curves.items():
        target = max(v for a, v in final.items() if a != algorithm)
        reached = [next((p["updates"] for p in c if p[settings[0]] >= target), None) for c in runs]
        table.add_row(algorithm, f"{100 * target:.1f}", ", ".join("never" if u is None else str(u) for u in reached))
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=5, help="evaluate every N steps (0: only at the end)")
    parser.add_argument("--train-seconds", type=float, default=None,
                        help="equal wall time: train each run until another step would pass this many training "
                             "seconds (--steps stays the cap)")
    parser.add_argument("--eval-at", default="", help="extra evaluation steps, comma list, e.g. 5 (= 40 updates at 8 per step)")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--seeds", default="0", help="comma list, e.g. 0,1,2")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--task", default="countdown", help="recipes/tiny/TASK_ALGORITHM.yaml, e.g. tinycode (diffu_grpo)")
    parser.add_argument("--out", default="runs/bench-learning")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides for every run")
    parser.add_argument("--report", action="store_true", help="only tabulate the results already in --out")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.report:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for algorithm in args.algorithms.split(","):
                began = time.perf_counter()
                write_json(run(algorithm, seed, args), out / f"{algorithm}-seed{seed}.json")
                print(f"  ({time.perf_counter() - began:.0f} s with evaluations)", flush=True)
    report(out)


if __name__ == "__main__":
    main()
