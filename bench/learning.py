"""Learning benchmark: MDPO, diffu-GRPO (one-step and trajectory-replay estimators), IGPO and wd1 on the tiny Countdown model.

Every variant runs its shipped recipe (``recipes/tiny/countdown_*.yaml``) from the
same model, seed and step budget, and is evaluated greedily (one token per step)
on the same held-out problems every ``--every`` steps. The table shows held-out
accuracy after equal numbers of gradient updates and after equal training wall
time (the shortest run's; evaluation time excluded): the toolkit's own version
of the papers' comparison.

    python bench/learning.py --steps 20 --every 5 --limit 300 --seed 0

``--set KEY=VALUE …`` overrides every recipe alike (e.g. the default run's
``optim.learning_rate=1e-3 rollout.num_generations=16``), so the objectives can be
compared at one shared RL setting rather than at each recipe's own.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from unmask.recipe import load_recipe
from unmask.rl.trainer import Trainer
from unmask.run import eval_rows, greedy_eval_fn, model_factory, training_rows

ALGORITHMS = ("mdpo", "diffu_grpo", "igpo", "wd1", "diffu_grpo_trajectory", "spg", "espo", "bgpo")
RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "tiny"

Curve = list[tuple[int, float, float]]  # (step, training seconds so far, accuracy)


def run(algorithm: str, args: argparse.Namespace) -> Curve:
    """Train one algorithm; held-out accuracy at step 0 and every ``--every`` steps."""
    recipe = load_recipe(
        RECIPES / f"countdown_{algorithm}.yaml",
        [
            f"seed={args.seed}", f"optim.max_steps={args.steps}", f"eval.limit={args.limit}",
            f"eval.every={args.every}", f"output_dir={args.out}/{algorithm}",
            "logging.progress=false", "logging.plot=false", "checkpoint.save_final=false", *args.set,
        ],
    )  # fmt: skip
    rows = eval_rows(recipe)
    evaluate = greedy_eval_fn(recipe, rows)
    factory = model_factory(recipe.model)
    curve: Curve = [(0, 0.0, next(iter(evaluate(factory(), 0).values())))]
    trainer = Trainer(recipe, eval_fn=evaluate, model_factory=factory, rows=training_rows(recipe, rows))
    seconds, began = 0.0, time.perf_counter()
    for metrics in trainer.steps():
        seconds += metrics["time/step"]
        accuracy = [v for k, v in metrics.items() if k.startswith("eval/")]
        if accuracy:
            curve.append((trainer.step, seconds, accuracy[0]))
    print(f"{algorithm}: {args.steps} steps in {time.perf_counter() - began:.0f} s", flush=True)
    return curve


def at_time(curve: Curve, budget: float) -> float:
    """Accuracy of the last evaluation reached within ``budget`` training seconds."""
    return [acc for _, seconds, acc in curve if seconds <= budget + 1e-9][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--out", default="runs/bench-learning")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides for every run")
    args = parser.parse_args()
    curves = {name: run(name, args) for name in args.algorithms.split(",")}
    budget = min(curve[-1][1] for curve in curves.values())
    steps = [step for step, _, _ in next(iter(curves.values()))]
    overrides = f", {' '.join(args.set)}" if args.set else ""
    table = Table(title=f"held-out greedy accuracy (%), {args.limit} problems, seed {args.seed}{overrides}")
    table.add_column("algorithm", no_wrap=True)
    for step in steps:
        table.add_column(f"step {step}", justify="right")
    table.add_column(f"at {budget:.0f} s", justify="right")
    table.add_column("s/step", justify="right")
    for name, curve in curves.items():
        cells = [f"{100 * acc:.1f}" for _, _, acc in curve]
        table.add_row(name, *cells, f"{100 * at_time(curve, budget):.1f}", f"{curve[-1][1] / args.steps:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
