"""``run_recipe``: what ``unmask train`` does around the RL trainer.

A run is: resolve the model, evaluate it on the held-out set, train, evaluate
again on the very same problems with the very same seeds, and report the paired
differences with 95 % intervals. Everything lands in ``recipe.output_dir``: the
resolved recipe, ``metrics.jsonl`` (training steps and evaluation phases),
``report.md``, ``report.json`` and the curve PNG.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unmask.data.countdown import problem_key
from unmask.errors import UserError
from unmask.evaluation.benchmarks import benchmark_rows
from unmask.evaluation.runner import evaluate
from unmask.evaluation.settings import EvalSettings
from unmask.models.base import DiffusionLM
from unmask.recipe import ModelConfig, Recipe, save_recipe
from unmask.report import CURVE_FILE, Comparison, compare, markdown_table, plot_curves, print_table
from unmask.rewards.registry import RewardSpec
from unmask.rewards.runner import RewardRunner
from unmask.rl.trainer import Trainer, default_rows

METRICS_FILE = "metrics.jsonl"
SAMPLED = "sampled"


@dataclass
class Phase:
    """Per-problem scores of one evaluation phase, keyed by decoding label."""

    accuracy: dict[str, list[float]]
    reward: list[float]
    nfe: dict[str, float]
    seconds: float
    completions: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        out = {f"accuracy/{k}": sum(v) / len(v) for k, v in self.accuracy.items()}
        out.update({f"nfe/{k}": v for k, v in self.nfe.items()})
        out["reward/sampled"] = sum(self.reward) / len(self.reward)
        out["seconds"] = self.seconds
        return out


def model_factory(config: ModelConfig, seed: int = 0) -> Callable[[], DiffusionLM]:
    """A picklable loader of ``model.name_or_path`` (rollout workers call it too);
    ``builtin:NAME`` is a checkpoint shipped in ``unmask/assets``, ``new:FAMILY`` a fresh
    model of ``model.config`` initialised from ``seed``."""
    from unmask.assets import PREFIX, builtin_path
    from unmask.models import load_model
    from unmask.models.fresh import is_new, new_model_factory

    if is_new(config.name_or_path):
        return new_model_factory(config.name_or_path, config.config, seed)
    name: str | Path = config.name_or_path
    if str(name).startswith(PREFIX):
        name = builtin_path(str(name))
    return functools.partial(load_model, name, family=config.family, dtype=config.dtype, device=config.device)


def eval_settings(recipe: Recipe) -> dict[str, EvalSettings]:
    """Greedy decoding at each ``eval.steps_per_token`` tokens per step, plus the rollout sampler (with ``eval.cache``)."""
    rollout = recipe.rollout
    length, cache = rollout.max_completion_length, recipe.eval.cache
    block = recipe.eval.block_length or rollout.block_length
    if length % block:
        raise UserError(f"eval.block_length: {block} does not divide rollout.max_completion_length {length}")
    grid = {}
    for per_step in recipe.eval.steps_per_token:
        if length % per_step:
            raise UserError(
                f"eval.steps_per_token: {per_step} tokens per step does not divide "
                f"rollout.max_completion_length {length}"
            )
        grid[f"greedy {per_step} tok/step"] = EvalSettings(
            length, length // per_step, block, recipe.eval.temperature, "low_confidence", cache
        )
    grid[SAMPLED] = EvalSettings(**{**rollout.generate_kwargs(), "cache": cache})
    return grid


def eval_rows(recipe: Recipe) -> list[dict[str, Any]]:
    """The held-out problems: ``eval.path`` if given, else the fixed generated Countdown set."""
    generator = recipe.data.generator.model_dump()
    return benchmark_rows(
        recipe.data.task, path=recipe.eval.path, limit=recipe.eval.limit, generator=generator,
        template=recipe.data.prompt_template,
    )  # fmt: skip


def training_rows(recipe: Recipe, heldout: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trainer's prompts with every held-out Countdown problem removed (no training on the test)."""
    rows = default_rows(recipe)
    if recipe.data.task != "countdown" or recipe.data.path is not None:
        return rows
    excluded = {problem_key(r) for r in heldout}
    kept = [r for r in rows if problem_key(r) not in excluded]
    if not kept:
        raise UserError("data.generator: every training problem is in the held-out set; widen the number ranges")
    return kept


def reward_runner(recipe: Recipe) -> RewardRunner:
    specs = [RewardSpec(f.name, f.weight, f.kwargs) for f in recipe.rewards.functions]
    return RewardRunner(specs, num_workers=0, deadline_s=recipe.rewards.timeout, on_error=recipe.rewards.on_error)


def evaluate_phase(
    model: DiffusionLM,
    rows: list[dict[str, Any]],
    recipe: Recipe,
    settings: dict[str, EvalSettings],
    runner: RewardRunner,
) -> Phase:
    """Accuracy per decoding setting and the recipe's reward on the sampled answers."""
    started = time.perf_counter()
    result = evaluate(
        model, rows, recipe.data.task, list(settings.values()),
        batch_size=recipe.eval.batch_size, seed=recipe.seed,
    )  # fmt: skip
    by_label = {s.label: name for name, s in settings.items()}
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in settings}
    for record in sorted(result.records, key=lambda r: r["problem"]):
        records[by_label[record["setting"]]].append(record)
    sampled = records[SAMPLED]
    columns = {k: [row[k] for row in rows] for k in rows[0] if k not in ("prompt", "solution")}
    texts = [r["completion"] for r in sampled]
    ids = model.tokenizer(texts, add_special_tokens=False)["input_ids"]  # TRL-style rewards may read the tokens
    rewards = runner.score([r["prompt"] for r in sampled], texts, columns, completion_ids=ids).totals
    return Phase(
        accuracy={name: [float(r["correct"]) for r in recs] for name, recs in records.items()},
        reward=rewards,
        nfe={name: sum(r["nfe"] for r in recs) / len(recs) for name, recs in records.items()},
        seconds=time.perf_counter() - started,
        completions={name: [r["completion"] for r in recs] for name, recs in records.items()},
    )


def greedy_eval_fn(recipe: Recipe, rows: list[dict[str, Any]]) -> Callable[[DiffusionLM, int], dict[str, float]]:
    """The trainer's periodic evaluation: held-out accuracy at the first greedy setting."""
    name, setting = next(iter(eval_settings(recipe).items()))

    def run(model: DiffusionLM, step: int) -> dict[str, float]:
        result = evaluate(model, rows, recipe.data.task, setting, batch_size=recipe.eval.batch_size, seed=recipe.seed)
        return {f"accuracy/{name}": result.accuracy()}

    return run


def comparisons(before: Phase, after: Phase, seed: int) -> list[Comparison]:
    """Accuracy per setting and mean reward with paired intervals; NFE per answer as is."""
    rows = [compare(f"accuracy, {name}", before.accuracy[name], after.accuracy[name], seed=seed) for name in before.accuracy]
    rows.append(compare("mean reward, sampled", before.reward, after.reward, unit="", seed=seed))
    rows += [Comparison(f"forward passes/answer, {name}", before.nfe[name], after.nfe[name], None, "") for name in before.nfe]
    return rows


def start_metrics_log(out_dir: Path, resuming: bool) -> None:
    """A fresh run starts a fresh ``metrics.jsonl``; a resumed run appends to its history."""
    if not resuming:
        (out_dir / METRICS_FILE).unlink(missing_ok=True)


def log_metrics(out_dir: Path, record: dict[str, Any]) -> None:
    with (out_dir / METRICS_FILE).open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def training_curves(out_dir: Path) -> tuple[list[tuple[int, float]], dict[str, list[tuple[int, float]]]]:
    """(step, mean rollout reward) and (step, held-out accuracy) series from ``metrics.jsonl``."""
    path = out_dir / METRICS_FILE
    reward: list[tuple[int, float]] = []
    accuracy: dict[str, list[tuple[int, float]]] = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        record = json.loads(line)
        step = int(record["step"])
        if "phase" not in record and "reward" in record:
            reward.append((step, float(record["reward"])))
        for key, value in record.items():
            if key.startswith(("accuracy/", "eval/accuracy/")) and value is not None:
                accuracy.setdefault(key.removeprefix("eval/").removeprefix("accuracy/"), []).append((step, float(value)))
    return reward, {name: sorted(points) for name, points in accuracy.items()}


def run_recipe(recipe: Recipe) -> list[Comparison]:
    """Evaluate, train, evaluate, report; returns the before/after comparisons.

    Under ``accelerate launch`` every process trains; only the main one evaluates
    and reports. A run stopped by SIGTERM reports nothing (it resumes later).
    """
    from accelerate import PartialState

    main = PartialState(cpu=recipe.model.device == "cpu").is_main_process  # the state Trainer's Accelerator reuses
    out_dir = Path(recipe.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if main:
        start_metrics_log(out_dir, resuming=recipe.checkpoint.resume_from is not None)
        save_recipe(recipe, out_dir)
    factory = model_factory(recipe.model, recipe.seed)
    model = factory()
    rows = eval_rows(recipe)
    settings = eval_settings(recipe)
    timings: dict[str, float] = {}
    with reward_runner(recipe) as runner:
        before = evaluate_phase(model, rows, recipe, settings, runner) if recipe.eval.before and main else None
        if before is not None:
            timings["eval before"] = before.seconds
            log_metrics(out_dir, {"phase": "eval_before", "step": 0, **before.summary()})
        started = time.perf_counter()
        periodic = greedy_eval_fn(recipe, rows) if recipe.eval.every else None
        trainer = Trainer(recipe, eval_fn=periodic, model_factory=factory, rows=training_rows(recipe, rows))
        for _ in trainer.steps():
            pass
        model = trainer.close()
        if trainer.preempted or not main:
            return []
        timings["train"] = time.perf_counter() - started
        after = evaluate_phase(model, rows, recipe, settings, runner) if recipe.eval.after else None
        if after is not None:
            timings["eval after"] = after.seconds
            log_metrics(out_dir, {"phase": "eval_after", "step": recipe.optim.max_steps, **after.summary()})
    if recipe.logging.plot:
        plot_curves(*training_curves(out_dir), out_dir / CURVE_FILE)
    if after is None:
        return []
    if before is None:
        print(json.dumps(after.summary(), indent=2))
        return []
    table = comparisons(before, after, recipe.seed)
    title = f"{recipe.algorithm.name} on {len(rows)} held-out {recipe.data.task} problems (seed {recipe.seed})"
    print_table(table, timings, title)
    (out_dir / "report.md").write_text(f"# {title}\n\n" + markdown_table(table, timings))
    (out_dir / "report.json").write_text(
        json.dumps({"title": title, "timings": timings, "rows": [c.as_dict() for c in table]}, indent=2) + "\n"
    )
    return table
