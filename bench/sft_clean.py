"""Clean SFT of the shipped tiny model: does it lower the validation loss and the careless habit?

The shipped model learnt Countdown from demonstrations of which three in ten are
careless (the numbers added up, whatever the target). ``tiny/sft_countdown`` fine-tunes
it on clean demonstrations only. This script runs that recipe and measures, before and
after, on the first ``--limit`` held-out problems of ``tiny/countdown_mdpo`` (greedy, one
token per step): accuracy, the careless share (the answer is the numbers added up in the
given order) with paired-bootstrap 95 % intervals of the change, and ``val/elbo``:

    python bench/sft_clean.py --steps 200 --limit 500 --seed 0
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from unmask.cli import recipes_dir
from unmask.data.countdown import careless_solution
from unmask.evaluation import evaluate, paired_bootstrap
from unmask.run import eval_rows
from unmask.sft.config import load_sft_recipe
from unmask.sft.trainer import SFTTrainer
from unmask.sft.validation import validation_loss


def measure(trainer: SFTTrainer, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-problem correctness and carelessness, and the validation ELBO, of the current weights."""
    model = trainer.unwrapped.eval()
    result = evaluate(model, rows, "countdown", trainer.eval_settings(), batch_size=100, seed=trainer.recipe.seed,
                      chat_template=False)
    records = sorted(result.records, key=lambda r: r["problem"])
    careless = [float(r["extracted"] == careless_solution(rows[r["problem"]]["nums"])) for r in records]
    out = {"correct": [float(r["correct"]) for r in records], "careless": careless,
           "elbo": validation_loss(trainer, model, trainer.val_rows)["val/elbo"]}
    model.train()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--limit", type=int, default=500, help="held-out problems evaluated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], help="more recipe overrides, key=value")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        overrides = [f"output_dir={out}", f"optim.max_steps={args.steps}", f"seed={args.seed}", "eval.before=false",
                     "eval.after=false", "logging.progress=false", "checkpoint.save_final=false", *args.set]
        trainer = SFTTrainer(load_sft_recipe(recipes_dir() / "tiny/sft_countdown.yaml", overrides))
        rows = eval_rows(trainer.fed)[: args.limit]
        before = measure(trainer, rows)
        for _ in trainer.steps():
            pass
        after = measure(trainer, rows)
    table = Table(title=f"clean SFT, {args.steps} steps, seed {args.seed}, {len(rows)} held-out problems (greedy)")
    for column in ("metric", "before", "after", "after - before [95% CI]"):
        table.add_column(column, justify="right")
    for name, key in (("accuracy %", "correct"), ("careless answers %", "careless")):
        ci = paired_bootstrap(before[key], after[key], seed=args.seed)
        mean = lambda xs: 100 * sum(xs) / len(xs)  # noqa: E731
        table.add_row(name, f"{mean(before[key]):.1f}", f"{mean(after[key]):.1f}",
                      f"{100 * ci.diff:.1f} [{100 * ci.low:.1f}, {100 * ci.high:.1f}]")
    table.add_row("val/elbo (nats/token)", f"{before['elbo']:.4f}", f"{after['elbo']:.4f}", "")
    Console().print(table)


if __name__ == "__main__":
    main()
