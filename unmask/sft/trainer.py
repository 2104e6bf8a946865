"""``unmask sft``: masked-diffusion supervised fine-tuning on the RL trainer's machinery.

One optimizer step takes ``per_device_train_batch_size × gradient_accumulation_steps``
rows per process from a seeded, epoch-wise shuffled stream. Each row's noise comes
from a generator keyed by its stream position, and the loss of every micro-batch is
divided by the denominator of the whole step (all micro-batches of all processes,
which each process computes from the data alone), so neither the accumulation
layout, the process count nor a resume changes what is learned. The policy and
optimizer (rl/policy.py), checkpoints (rl/checkpoint.py), SIGTERM handling and
process agreement (rl/distributed.py) and metrics (rl/logging.py) are the RL
trainer's. The run ends with ``output_dir/final/``: a plain checkpoint (LoRA merged)
with its tokenizer and generation defaults, which an RL recipe takes as its
``model.name_or_path``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from unmask.errors import UserError
from unmask.evaluation.settings import EvalSettings
from unmask.models.base import DiffusionLM
from unmask.models.export import merge_and_save
from unmask.models.generation import GenerationDefaults, write_generation_defaults
from unmask.recipe import Recipe, save_recipe
from unmask.rl.checkpoint import load_checkpoint, save_checkpoint
from unmask.rl.distributed import (
    Preemption,
    any_process,
    end_processes,
    make_accelerator,
    mean_over_processes,
)
from unmask.rl.logging import MetricsLogger, drop_metrics_after, progress_bar
from unmask.rl.policy import build_optimizer, build_policy
from unmask.rl.stream import PromptStream
from unmask.rl.trainer import derive_seed
from unmask.sft.config import SFTRecipe, answer_length, fed_recipe, loss_choice
from unmask.sft.data import Example, collate, encode, records, to_pair
from unmask.sft.loss import (
    Corruption,
    LossSettings,
    OwnLoss,
    RowRandom,
    SFTBatch,
    denominator,
    family_corruption,
    loss_terms,
)

#: purposes mixed into the noise seeds, so training and validation draws never coincide
TRAIN_NOISE, VAL_NOISE, VAL_SPLIT = 1 << 22, 1 << 23, 1 << 24
FINAL = "final"


class ExampleStream(PromptStream):
    """The prompt stream's seeded epoch-wise order over tokenized examples."""

    def __init__(self, examples: list[Example], seed: int) -> None:
        self.rows, self.seed = examples, seed


class SFTTrainer:
    def __init__(
        self,
        recipe: SFTRecipe,
        *,
        model_factory: Callable[[], DiffusionLM] | None = None,
        rows: list[dict[str, Any]] | None = None,
    ) -> None:
        """``rows``: raw records to use instead of ``data`` (tests, notebooks)."""
        from unmask.run import model_factory as recipe_model

        self.recipe = recipe
        self.out = Path(recipe.output_dir)
        torch.manual_seed(recipe.seed)
        self.fed: Recipe | None = fed_recipe(recipe)
        base = (model_factory or recipe_model(recipe.model, recipe.seed))()
        self.base_model = base
        self.length = answer_length(recipe, self.fed)
        weighting, normalization = loss_choice(recipe, base.family)
        s = recipe.sft
        self.settings = LossSettings(weighting, normalization, s.epsilon, s.geo_p)  # type: ignore[arg-type]
        self.corruption: Corruption | OwnLoss = family_corruption(base)
        pairs = [to_pair(r, i, recipe) for i, r in enumerate(rows if rows is not None else records(recipe, self.fed))]
        encoded = encode(pairs, base, recipe, self.length)
        self.train_rows, self.val_rows = self._split(encoded.examples)
        self.accelerator = make_accelerator(recipe.model.device == "cpu", base.partly_used)
        if self.accelerator.is_main_process:
            print(f"sft: {encoded.summary()}; {len(self.val_rows)} held out for the validation loss", flush=True)
        o = recipe.optim
        self.max_steps = o.max_steps or math.ceil((o.num_train_epochs or 1.0) * len(self.train_rows) / self.global_rows)
        warmup = o.warmup_steps + round(o.warmup_ratio * self.max_steps)
        model = build_policy(base, recipe.model, recipe.lora)
        optimizer, self.scheduler = build_optimizer(model, o, self.max_steps, warmup)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.stream = ExampleStream(self.train_rows, recipe.seed)
        self.step = 0
        #: stream position and the step it was measured at (a resumed run may use another process count)
        self._data_start, self._step_start = 0, 0
        self.preempted = False

    def _split(self, examples: list[Example]) -> tuple[list[Example], list[Example]]:
        """A seeded shuffle's first ``eval.val_size`` examples are held out; the rest keep their order."""
        size = self.recipe.eval.val_size
        if size >= len(examples):
            raise UserError(f"eval.val_size: {size} leaves no training rows of {len(examples)}; lower it")
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(derive_seed(self.recipe.seed, VAL_SPLIT)))
        held = set(order[:size].tolist())
        return [e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    @property
    def global_rows(self) -> int:
        o = self.recipe.optim
        return o.per_device_train_batch_size * o.gradient_accumulation_steps * self.accelerator.num_processes

    def _position(self, step: int) -> int:
        return self._data_start + (step - self._step_start) * self.global_rows

    def batch(self, examples: list[Example], seeds: list[int]) -> SFTBatch:
        model = self.base_model
        longest = self.recipe.sft.eos_fill == "batch_longest"
        return collate(examples, seeds, model.pad_token_id, model.eos_token_ids[0], longest)

    # -- one optimizer step --------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """All micro-batches of the step, each divided by the step's denominator, then one clipped update."""
        began = time.perf_counter()
        o, acc = self.recipe.optim, self.accelerator
        start, size = self._position(self.step), o.per_device_train_batch_size
        examples = self.stream.take(start, self.global_rows)
        seeds = [derive_seed(self.recipe.seed, TRAIN_NOISE, start + i) for i in range(len(examples))]
        micro = [self.batch(examples[i : i + size], seeds[i : i + size]) for i in range(0, len(examples), size)]
        total = sum(denominator(mb, self.settings.normalization) for mb in micro)
        per_rank = o.gradient_accumulation_steps
        mine = micro[acc.process_index * per_rank : (acc.process_index + 1) * per_rank]
        sums = {"loss": 0.0, "elbo_sum": 0.0, "tokens": 0.0}
        for mb in mine:
            terms = loss_terms(self.model, mb.to(acc.device), RowRandom.keyed(mb.seeds), self.settings, self.corruption)
            if any_process(acc, not bool(torch.isfinite(terms.numerator))):  # every process skips together
                self.optimizer.zero_grad(set_to_none=True)
                return {"skipped": 1.0, "loss": float("nan")}
            # DDP averages gradients over processes; the step's loss is their sum
            acc.backward(terms.numerator * (acc.num_processes / total))
            sums["loss"] += float(terms.numerator.detach()) / total * acc.num_processes
            sums["elbo_sum"] += terms.elbo_sum * acc.num_processes
            sums["tokens"] += float(mb.supervised.sum()) * acc.num_processes
        grad_norm = float(acc.clip_grad_norm_(self.model.parameters(), o.max_grad_norm)) if o.max_grad_norm > 0 else 0.0
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return {"skipped": 1.0, "grad_norm": grad_norm}
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        metrics = mean_over_processes(acc, sums)
        return {
            "skipped": 0.0, "loss": metrics["loss"], "elbo": metrics["elbo_sum"] / max(metrics["tokens"], 1.0),
            "grad_norm": grad_norm, "lr": self.scheduler.get_last_lr()[0],
            "epoch": (start + len(examples)) / len(self.train_rows), "time/step": time.perf_counter() - began,
        }  # fmt: skip

    # -- evaluation ------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Validation loss at fixed ratios and held-out accuracy (whatever the recipe asks for)."""
        from unmask.sft.validation import heldout_accuracy, validation_loss

        e, model = self.recipe.eval, self.unwrapped
        metrics: dict[str, float] = {}
        was_training = model.training
        model.eval()
        try:
            if self.val_rows:
                metrics.update(validation_loss(self, model, self.val_rows))
            if e.accuracy:
                metrics.update(heldout_accuracy(self, model))
        finally:
            model.train(was_training)
        return metrics

    def eval_settings(self) -> EvalSettings:
        """Greedy decoding of the answer window: the fed RL recipe's first greedy setting, or one token per step."""
        if self.fed is not None:
            from unmask.run import eval_settings

            return next(iter(eval_settings(self.fed).values()))
        return EvalSettings(self.length, self.length, self.length, 0.0, "low_confidence", self.recipe.eval.cache)

    # -- checkpoints -----------------------------------------------------------------
    def save(self) -> Path:
        """Rank 0 writes ``checkpoint-N`` (every rank holds the same weights); the others wait."""
        path = self.out / f"checkpoint-{self.step}"
        if self.accelerator.is_main_process:
            path = save_checkpoint(self.out, self.step, self.unwrapped, self.optimizer, self.scheduler,
                                   {"data_position": self._position(self.step)})
        self.accelerator.wait_for_everyone()
        return path

    def resume(self, path: str) -> None:
        state = load_checkpoint(path, self.unwrapped, self.optimizer, self.scheduler)
        self.step = int(state["step"])
        self._step_start, self._data_start = self.step, int(state["data_position"])
        if self.accelerator.is_main_process:  # the killed run's later lines are replayed, not kept twice
            drop_metrics_after(self.out / "metrics.jsonl", self.step)

    def export(self) -> Path:
        """``output_dir/final``: the model with any adapter merged, its tokenizer and how it answers."""
        final = merge_and_save(self.unwrapped, self.out / FINAL)
        settings = self.eval_settings()
        write_generation_defaults(final, GenerationDefaults(
            gen_length=settings.gen_length, steps=settings.steps, block_length=settings.block_length, temperature=0.0,
            remasking=settings.remasking, task=self.recipe.data.task))
        return final

    def close(self) -> torch.nn.Module:
        """End this process's part of the run (every process): the DDP wrapper and optimizer are
        released before the process group goes (rl/distributed.py ``end_processes``); returns the policy."""
        policy = self.unwrapped
        self.model = self.optimizer = None
        end_processes(self.accelerator)
        return policy

    # -- the loop ----------------------------------------------------------------------
    def steps(self) -> Iterator[dict[str, float]]:
        """Train to the step count, yielding each step's metrics; SIGTERM saves a checkpoint and stops."""
        r = self.recipe
        if r.checkpoint.resume_from:
            self.resume(r.checkpoint.resume_from)
        main = self.accelerator.is_main_process
        if main:
            save_recipe(r, self.out)
        logger = MetricsLogger(self.out, r.logging.report_to if main else [], r.model_dump(mode="json"))
        bar = progress_bar(r.logging.progress and main, "SFT")
        try:
            with bar, Preemption().installed() as preemption:
                task = bar.add_task("starting", total=self.max_steps, completed=self.step)
                if self.step == 0 and r.eval.before and main:
                    logger.log(0, {"phase": "before", **self.evaluate()})
                while self.step < self.max_steps:
                    metrics = self.train_step()
                    self.step += 1
                    every = r.eval.every
                    if main and every and self.step % every == 0:
                        metrics.update({f"eval/{k}": v for k, v in self.evaluate().items()})
                    if self.step % r.logging.logging_steps == 0:
                        logger.log(self.step, metrics)
                    bar.update(task, advance=1, description=f"loss {metrics.get('loss', float('nan')):.4f}")
                    self.preempted = any_process(self.accelerator, preemption.requested)
                    if self.preempted:
                        path = self.save()
                        if main:
                            print(f"SIGTERM: saved {path} at step {self.step}; resume with checkpoint.resume_from={path}")
                    elif r.checkpoint.save_steps and self.step % r.checkpoint.save_steps == 0:
                        self.save()
                    yield metrics
                    if self.preempted:
                        return
            if main and r.eval.after:
                logger.log(self.step, {"phase": "after", **self.evaluate()})
            if r.checkpoint.save_final:
                self.save()
            if main:
                print(f"sft: wrote {self.export()}", flush=True)
            self.accelerator.wait_for_everyone()
        finally:
            logger.close()


def train_sft(recipe: SFTRecipe, *, end: bool = True, **kwargs: Any) -> dict[str, float]:
    """Run ``recipe``; returns the last step's metrics.

    ``end=False`` keeps the process group for a stage that follows in the same processes
    (``unmask sft --then-train``), which ends it; the trainer is simply dropped on return.
    """
    last: dict[str, float] = {}
    run = SFTTrainer(recipe, **kwargs)
    for metrics in run.steps():
        last = metrics
    if end:
        run.close()
    return last
