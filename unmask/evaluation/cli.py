"""``unmask eval``: evaluate a checkpoint on benchmarks, or compare two eval runs.

Output directory layout: ``run.json`` (what was evaluated), ``samples.jsonl``
(one line per benchmark, setting, problem and sample; resumable), ``summary.json``
and ``table.md``. Rerunning with the same ``--out`` only generates missing samples.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from unmask.data import render_prompt
from unmask.errors import UserError
from unmask.evaluation.benchmarks import benchmark_rows, parse_benchmarks
from unmask.evaluation.compare import compare_runs, print_comparison
from unmask.evaluation.loading import load_eval_model
from unmask.evaluation.report import print_table, write_report
from unmask.evaluation.runner import GenerateFn, evaluate
from unmask.evaluation.settings import (
    default_gen_lengths,
    parse_caches,
    parse_int_list,
    parse_thresholds,
    settings_grid,
)
from unmask.evaluation.store import SampleLog
from unmask.models.generation import read_generation_defaults
from unmask.rollouts.pool import RolloutPool
from unmask.rollouts.sampler_flags import GRID_SETTINGS, given_settings
from unmask.rollouts.samplers import sample

RUN_FILE = "run.json"


def default_out_dir(model: str, adapter: str | None) -> Path:
    """``runs/eval/<model or adapter name>-<timestamp>``."""
    name = Path(str(adapter or model).rstrip("/")).name.split(":")[-1]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name) or "model"
    return Path("runs") / "eval" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def family_template(family: str, bench: str) -> str | None:
    """The prompt a model family was trained on, where it differs from the task's default.

    Tiny models (the families built from scratch, ``unmask.models.fresh``) are trained on
    a shorter Countdown prompt (``unmask.pretrain``); evaluating them on another would
    measure prompt transfer, not the model.
    """
    from unmask.models.fresh import BUILDABLE

    if family in BUILDABLE and bench == "countdown":
        from unmask.data.countdown import TINY_TEMPLATE

        return TINY_TEMPLATE
    return None


def apply_family_templates(rows: dict[str, list[dict[str, Any]]], family: str) -> None:
    """Re-render ``{bench: rows}`` prompts with ``family_template`` where there is one."""
    for bench, bench_rows in rows.items():
        template = family_template(family, bench)
        if template is not None:
            for row in bench_rows:
                row["prompt"] = render_prompt(bench, row, template)


def _check_positive(args: argparse.Namespace) -> None:
    for option in ("num_samples", "batch_size", "workers", "limit"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise UserError(f"--{option.replace('_', '-')} must be at least 1 (got {value})")


def _claim_out_dir(out: Path, identity: dict[str, Any]) -> None:
    """Record what this directory evaluates; refuse to resume it with another model."""
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / RUN_FILE
    if run_file.is_file():
        previous = json.loads(run_file.read_text())
        if previous != identity:
            raise UserError(
                f"--out {out} holds an evaluation of {previous} (now {identity}); "
                f"choose another --out to evaluate a different model or seed"
            )
    else:
        run_file.write_text(json.dumps(identity, indent=2) + "\n")


@contextmanager
def sampler(model: str, adapter: str | None, workers: int) -> Iterator[GenerateFn]:
    """The in-process sampler the model's process names, or a Ray ``RolloutPool`` of ``workers`` model replicas.

    Rows carry their own seeds, so both give the same answers; the pool only adds throughput.
    """
    if workers == 1:
        yield sample
        return
    pool = RolloutPool(functools.partial(load_eval_model, model, adapter), workers)
    try:
        yield lambda _model, prompt_ids, **kwargs: pool.generate(prompt_ids, **kwargs)
    finally:
        pool.shutdown()


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console,
    )  # fmt: skip


def checkpoint_lengths(args: argparse.Namespace, family: str) -> tuple[list[int], list[int] | None, int | None]:
    """Answer lengths, steps and block: the command line's, else the checkpoint's ``generation_config.json``
    (whose steps and block apply only to its own answer length, not to a ``--gen-length`` grid)."""
    lengths = parse_int_list("--gen-length", args.gen_length)
    steps = parse_int_list("--steps", args.steps)
    declared = read_generation_defaults(args.model).sampler_settings(own_length=lengths is None)
    if lengths is not None or "gen_length" not in declared:
        return lengths or default_gen_lengths(family), steps, args.block_length
    own = [declared["steps"]] if "steps" in declared else None
    return [declared["gen_length"]], steps or own, args.block_length or declared.get("block_length")


def run_eval(args: argparse.Namespace) -> int:
    """Entry point of ``unmask eval`` (see ``unmask.cli``)."""
    console = Console()
    if getattr(args, "regrade", None):
        from unmask.evaluation.regrade import run_regrade

        return run_regrade(args, console)
    if args.compare:
        print_comparison(compare_runs(*args.compare, seed=args.seed), console)
        return 0
    if not args.model:
        raise UserError("unmask eval needs --model (checkpoint dir, hub id or builtin:NAME) or --compare A B")
    _check_positive(args)
    benches = parse_benchmarks(args.bench)
    rows = {b: benchmark_rows(b, data_dir=args.data_dir, limit=args.limit) for b in benches}
    model = load_eval_model(args.model, args.adapter)
    apply_family_templates(rows, model.family)
    lengths, steps, block = checkpoint_lengths(args, model.family)
    grid = settings_grid(
        lengths, steps, block,
        caches=parse_caches(getattr(args, "cache", None)), thresholds=parse_thresholds(getattr(args, "threshold", None)),
        **given_settings(args, skip=(*GRID_SETTINGS, "block_length")),  # the block: checkpoint_lengths
    )  # fmt: skip
    if args.num_samples > 1 and grid[0].temperature == 0:
        console.print("[yellow]warning: --num-samples > 1 with --temperature 0 repeats near-identical answers")

    out = Path(args.out) if args.out else default_out_dir(args.model, args.adapter)
    _claim_out_dir(out, {"model": args.model, "adapter": args.adapter, "seed": args.seed})
    log = SampleLog(out)
    records = []
    with sampler(args.model, args.adapter, args.workers) as generate_fn, _progress(console) as progress:
        for bench in benches:
            result = evaluate(
                model, rows[bench], bench, grid, num_samples=args.num_samples, batch_size=args.batch_size,
                seed=args.seed, log=log, progress=progress, generate_fn=generate_fn,
            )  # fmt: skip
            records.extend(result.records)
    meta = {
        "model": args.model, "adapter": args.adapter, "benchmarks": benches, "data_dir": args.data_dir,
        "limit": args.limit, "num_samples": args.num_samples, "seed": args.seed, "engine": args.engine,
        "settings": [s.as_dict() for s in grid],
    }  # fmt: skip
    summaries = write_report(out, records, meta)
    print_table(summaries, f"{args.model}{' + ' + args.adapter if args.adapter else ''}", console)
    console.print(f"results in {out}")
    return 0
