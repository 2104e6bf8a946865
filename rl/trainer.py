"""The RL trainer: rollout → reward → objective → update, for every algorithm alike.

``train(recipe)`` is the entry point ``unmask train`` calls. One RL step samples
``prompts_per_step × num_generations`` answers with the current policy, grades them,
lets the objective build its batch, then runs ``num_iterations`` passes over that
buffered batch (shuffled micro-batches of ``per_device_train_batch_size`` items,
``gradient_accumulation_steps`` micro-batches per optimizer step, or
``optimizer_steps_per_rollout`` steps per pass). Whenever one batch feeds more than
one optimizer step, θ_old is scored before the first, as is the reference, with
the same estimator keys the θ passes of each inner iteration use.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unmask.errors import UserError
from unmask.models.base import DiffusionLM
from unmask.recipe import Recipe, save_recipe
from unmask.rewards.batch import RewardState
from unmask.rewards.registry import RewardSpec
from unmask.rewards.runner import COUNTS, RewardRunner
from unmask.rl.checkpoint import load_checkpoint, save_checkpoint, trainable_state
from unmask.rl.critic import Critic
from unmask.rl.distributed import (
    Preemption,
    any_process,
    end_processes,
    make_accelerator,
    max_over_processes,
    mean_over_processes,
)
from unmask.rl.logging import MetricsLogger, drop_metrics_after, progress_bar
from unmask.rl.objective import Objective, Rollout, TrainBatch, build_objective
from unmask.rl.policy import build_optimizer, build_policy
from unmask.rl.rollout import Rollouts, encode_prompts, local_sampler
from unmask.rl.stream import PromptStream
from unmask.rl.update import (
    FrozenScorer,
    MicroBatches,
    UpdateRollback,
    behaviour_policy,
    cut_batch,
    derive_seed,
    estimator_keys,
    frozen_passes,
    micro_batch_loss,
)
from unmask.rollouts.pool import PendingRollout
from unmask.rollouts.trajectory import Trajectory

EvalFn = Callable[[nn.Module, int], dict[str, float]]
MAX_BAD_STEPS = 3


class TrainingDiverged(UserError):
    """The loss (or gradient norm) stayed NaN/inf for several steps in a row."""


def default_model_factory(recipe: Recipe) -> Callable[[], DiffusionLM]:
    from unmask.models import load_model

    m = recipe.model
    return functools.partial(load_model, m.name_or_path, family=m.family, dtype=m.dtype, device=m.device)


def default_rows(recipe: Recipe) -> list[dict[str, Any]]:
    from unmask.data import load_rows

    d = recipe.data
    return load_rows(
        d.task, path=d.path, hub_id=d.hub_id, split=d.split, limit=d.limit,
        template=d.prompt_template, generator=d.generator.model_dump(), seed=recipe.seed,
    )


def lora_replica(factory: Callable[[], DiffusionLM], **lora: Any) -> nn.Module:
    """A rollout replica wrapped like the policy, so pushed LoRA tensors match by name."""
    from unmask.models.lora import apply_lora

    return apply_lora(factory(), **lora)


class Trainer:
    def __init__(
        self,
        recipe: Recipe,
        *,
        eval_fn: EvalFn | None = None,
        model_factory: Callable[[], DiffusionLM] | None = None,
        rows: list[dict[str, Any]] | None = None,
        pool: Any = None,
        critic: Critic | None = None,
    ) -> None:
        """``pool``: an existing ``RolloutPool`` (LoRA-wrapped like this run) to reuse, e.g. across a sweep;
        ``critic``: a value model the update engine asks for token advantages and a value loss (rl/critic.py)."""
        self.recipe = recipe
        self.critic = critic
        self.eval_fn = eval_fn
        self.out = Path(recipe.output_dir)
        torch.manual_seed(recipe.seed)
        factory = model_factory or default_model_factory(recipe)
        base = factory()
        self.base_model = base
        self.accelerator = make_accelerator(recipe.model.device == "cpu", base.partly_used)
        self.model = build_policy(base, recipe.model, recipe.lora)
        #: None: LoRA's reference is the adapter disabled; full fine-tuning copies the base below if needed
        self.reference: nn.Module | None = None
        o = recipe.optim
        optimizer, self.scheduler = build_optimizer(self.model, o, o.max_steps, o.warmup_steps)
        self.model, self.optimizer = self.accelerator.prepare(self.model, optimizer)
        r = recipe.rollout
        self.objective: Objective = build_objective(
            recipe.algorithm, process=base.process, temperature=r.temperature,
            gen_length=r.max_completion_length,
        )
        if self.objective.needs_reference and self.reference is None:
            self.reference = copy.deepcopy(base).eval().requires_grad_(False)
        rw = recipe.rewards
        specs = [RewardSpec(f.name, f.weight, f.kwargs) for f in rw.functions]
        self.runner = RewardRunner(specs, num_workers=rw.num_workers, deadline_s=rw.timeout, on_error=rw.on_error)
        self.owns_pool = pool is None
        self.pool = self._pool(factory) if pool is None else pool
        if self.pool is not None:
            self.pool.update_adapter(trainable_state(self.unwrapped), 0)
        sampler = self.pool.generate if self.pool is not None else local_sampler(self.unwrapped)
        self.rollouts = Rollouts(
            self._timed("rollout", sampler), r, self._timed("reward", self.runner.score), base.tokenizer,
            process=base.process, eos_ids=base.eos_token_ids,
            correct_threshold=recipe.algorithm.correct_threshold, record=self.objective.record_steps,
            device="cpu" if self.pool is not None else self.accelerator.device,
        )
        self.step = 0
        self.bad_steps = 0
        #: stream position and step it was measured at (a resumed run may use another process count)
        self._data_start, self._step_start = 0, 0
        #: set when a SIGTERM stopped the run after saving a checkpoint
        self.preempted = False
        self.timings: dict[str, float] = {}
        self.forward_passes = 0
        training = rows if rows is not None else default_rows(recipe)
        self.stream = PromptStream(self.objective.training_rows(training, self.rollouts, self.encode), recipe.seed)
        if r.overlap and (self.pool is None or self.pool.num_workers == 0):
            raise UserError(
                "rollout.overlap: true needs Ray rollout actors (ray.address set and ray.num_workers >= 1): "
                "they generate the next step while this process updates; set rollout.overlap: false otherwise"
            )
        #: overlap: the next step's submitted rollout, with the adapter that generates it
        self._next: NextRollout | None = None
        #: overlap: the adapter the batch being trained on was sampled with (θ_old), or None (θ_old = θ)
        self._behaviour: dict[str, torch.Tensor] | None = None

    # -- set-up ----------------------------------------------------------------
    def _pool(self, factory: Callable[[], DiffusionLM]) -> Any:
        ray = self.recipe.ray
        if ray.address is None:
            return None
        if not self.recipe.lora.enabled:
            raise UserError(
                "ray.address: the rollout pool syncs LoRA adapters only; set lora.enabled: true "
                "or ray.address: null to roll out in-process with fully fine-tuned weights"
            )
        from unmask.rollouts.pool import RolloutPool

        lora = self.recipe.lora
        replica = functools.partial(
            lora_replica, factory, r=lora.r, alpha=lora.alpha, dropout=lora.dropout, target_modules=lora.target_modules
        )
        return RolloutPool(
            replica, num_workers=ray.num_workers, address=None if ray.address == "local" else ray.address,
            num_cpus_per_worker=ray.num_cpus_per_worker, num_gpus_per_worker=ray.num_gpus_per_worker,
        )

    @property
    def unwrapped(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def close(self) -> nn.Module:
        """End this process's part of the run; returns the trained (unwrapped) policy.

        Call it on every process once training is over: the DDP wrapper and the
        optimizer are dropped before the process group is destroyed (``end_processes``).
        """
        policy = self.unwrapped
        self.model = self.optimizer = None
        end_processes(self.accelerator)
        return policy

    def _timed(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - began
            if phase == "rollout":
                self.forward_passes += int(result.nfe.max()) if result.nfe.numel() else 0
            return result

        return wrapper

    # -- the update --------------------------------------------------------------
    def _cut(self, batch: TrainBatch) -> MicroBatches:
        """This step's micro-batches of ``per_device_train_batch_size`` items and their optimizer steps
        (``update.cut_batch``), padded to the busiest process's count."""
        o = self.recipe.optim
        cut = cut_batch(
            len(batch), seed=self.recipe.seed, step=self.step, size=o.per_device_train_batch_size,
            accumulate=o.gradient_accumulation_steps, steps_per_pass=o.optimizer_steps_per_rollout,
        )
        return cut.padded(max_over_processes(self.accelerator, len(cut.indices)))

    def _keys(self, micro: list[TrainBatch]) -> list[list[Any]]:
        """This process's estimator keys per inner iteration and micro-batch (``update.estimator_keys``)."""
        return estimator_keys(
            self.objective, micro, seed=self.recipe.seed, step=self.step,
            iterations=self.recipe.algorithm.num_iterations, process_index=self.accelerator.process_index,
        )

    def _rollout_policy(self) -> contextlib.AbstractContextManager[None]:
        """θ swapped for the adapter this step's batch was sampled with (overlap), or left as it is."""
        return behaviour_policy(self.unwrapped, self._behaviour)

    # -- one RL step -------------------------------------------------------------
    def encode(self, rows: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and attention mask of ``rows``, chat template applied if the recipe asks."""
        base = self.base_model
        texts = [base.format_prompt(row["prompt"]) if self.recipe.data.chat_template else row["prompt"] for row in rows]
        return encode_prompts(base.tokenizer, texts, base.pad_token_id)

    def _rollout_inputs(self, step: int) -> tuple[list[dict[str, Any]], torch.Tensor, torch.Tensor, int]:
        """``(rows, prompt_ids, attention_mask, sampler seed)`` of an RL step (each answer its own row)."""
        r, group = self.recipe.rollout, self.recipe.rollout.num_generations
        acc = self.accelerator  # each training process rolls out its own share of the step's prompts
        start = self._position(step) + acc.process_index * r.prompts_per_step
        rows = [row for row in self.stream.take(start, r.prompts_per_step) for _ in range(group)]
        prompt_ids, attention = self.encode(rows)
        # rows keep their global seeds: rank k's first row is row k·len(rows) of the step's batch
        return rows, prompt_ids, attention, derive_seed(self.recipe.seed, step, 1 << 20) + acc.process_index * len(rows)

    def _submit(self, step: int) -> NextRollout:
        """Start ``step``'s rollout on the actors with the current adapter (overlap)."""
        rows, prompt_ids, attention, seed = self._rollout_inputs(step)
        pending = self.pool.submit(**self.rollouts.sample_kwargs(prompt_ids, attention, None, seed))
        adapter = {name: value.clone() for name, value in trainable_state(self.unwrapped).items()}  # not a view of θ
        return NextRollout(step, rows, seed, pending, adapter)

    def _sample(self) -> tuple[list[dict[str, Any]], Trajectory, int]:
        """This step's rows, trajectories and seed: sampled now, or (overlap) collected from the actors,
        which then start the next step's rollout with the adapter this step updates."""
        if not self.recipe.rollout.overlap:
            rows, prompt_ids, attention, seed = self._rollout_inputs(self.step)
            self.rollouts.seed = seed
            return rows, self.rollouts.generate(prompt_ids, attention), seed
        submitted = self._next if self._next is not None and self._next.step == self.step else self._submit(self.step)
        traj = self._timed("rollout", self.pool.collect)(submitted.pending)
        self._behaviour = submitted.adapter
        self._next = self._submit(self.step + 1) if self.step + 1 < self.recipe.optim.max_steps else None
        self.rollouts.seed = submitted.seed
        return submitted.rows, traj, submitted.seed

    def rollout(self) -> tuple[Rollout, dict[str, float]]:
        group = self.recipe.rollout.num_generations
        rows, traj, seed = self._sample()
        self.runner.state = RewardState(global_step=self.step, max_steps=self.recipe.optim.max_steps)
        result = self.rollouts.score(traj, rows)
        rollout = Rollout(traj, rows, result.rewards, result.correct, group, seed=seed)
        answer_tokens = float(traj.answer_mask.sum())
        metrics = {
            "reward": float(result.rewards.mean()),
            "accuracy": float(result.correct.float().mean()),
            "answer_tokens": answer_tokens,
            **{k: v for k, v in result.metrics.items() if k not in COUNTS},  # reward means, logged metrics
        }
        return rollout, metrics

    def update(self, batch: TrainBatch) -> dict[str, float]:
        """``num_iterations`` passes over the buffered batch, applied all or nothing.

        A NaN/inf loss (or gradient norm) anywhere skips the whole RL step: when
        the update spans several optimizer steps, the trainable parameters and
        optimizer state are restored to what they were before its first step.
        """
        if any_process(self.accelerator, len(batch) == 0):  # processes skip together or DDP hangs
            return {"skipped": 1.0, "empty_batch": 1.0}
        cut = self._cut(batch)
        micro, windows = cut.select(batch, self.accelerator.device), cut.windows
        keys = self._keys(micro)
        iterations = self.recipe.algorithm.num_iterations
        updates = iterations * len(windows)
        scorer = FrozenScorer(self.objective, self.model, self.reference, self.accelerator.unwrap_model)
        old, ref = frozen_passes(
            self.objective, micro, keys, scorer, optimizer_steps=updates, first_step=windows[0],
            stale=self._behaviour is not None, behaviour=self._rollout_policy(),
        )
        self.forward_passes += scorer.passes
        rollback = UpdateRollback(self.model, self.optimizer) if updates > 1 else None
        sums: dict[str, float] = {}
        count = 0
        for i in range(iterations):
            for window in windows:
                for j in window:
                    self.forward_passes += self.objective.estimator.passes_for(micro[j].traj)
                    loss, metrics = micro_batch_loss(
                        self.objective, self.model, micro[j], keys[i][j], old[i][j] if old else None,
                        ref[i][j] if ref else None, self.critic,
                    )
                    if any_process(self.accelerator, not bool(torch.isfinite(loss))):
                        return self._abandon(rollback, {"loss": float("nan") if torch.isfinite(loss) else float(loss.detach())})
                    self.accelerator.backward(cut.scaled(j, loss))
                    if j >= cut.real:
                        continue
                    for key, value in {"loss": float(loss.detach()), **metrics}.items():
                        sums[key] = sums.get(key, 0.0) + value
                    count += 1
                grad_norm = float(
                    self.accelerator.clip_grad_norm_(self.model.parameters(), self.recipe.optim.max_grad_norm)
                    if self.recipe.optim.max_grad_norm > 0
                    else 0.0
                )
                if not math.isfinite(grad_norm):
                    return self._abandon(rollback, {"grad_norm": grad_norm})
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm * len(window)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        return {"skipped": 0.0, "optimizer_steps": float(updates), **{k: v / max(count, 1) for k, v in sums.items()}}

    def _abandon(self, rollback: UpdateRollback | None, metrics: dict[str, float]) -> dict[str, float]:
        """Drop the step's gradients and undo its optimizer steps (if any were taken)."""
        self.optimizer.zero_grad(set_to_none=True)
        if rollback is not None:
            rollback.restore()
        return {"skipped": 1.0, **metrics}

    def train_step(self) -> dict[str, float]:
        self.timings, self.forward_passes = {}, 0
        began = time.perf_counter()
        rollout, metrics = self.rollout()
        batch = self.objective.prepare(rollout, self.rollouts)
        update_began = time.perf_counter()
        metrics.update(batch.metrics)
        metrics.update(self.update(batch))
        if not metrics["skipped"]:
            self.scheduler.step()  # the schedule counts optimizer updates, not skipped steps
        if self.pool is not None:  # with overlap the actors load it after the rollout they are running
            self.pool.update_adapter(trainable_state(self.unwrapped), self.step + 1, wait=not self.recipe.rollout.overlap)
        total = time.perf_counter() - began
        metrics.update({
            "lr": self.scheduler.get_last_lr()[0],
            "forward_passes": float(self.forward_passes),
            "tokens_per_second": metrics.pop("answer_tokens") / max(total, 1e-9),
            "time/rollout": self.timings.get("rollout", 0.0),
            "time/reward": self.timings.get("reward", 0.0),
            "time/update": time.perf_counter() - update_began,
            "time/step": total,
        })
        return mean_over_processes(self.accelerator, metrics)

    @property
    def data_position(self) -> int:
        """Prompts consumed by all processes before the current step."""
        return self._position(self.step)

    def _position(self, step: int) -> int:
        """Prompts consumed by all processes before ``step``."""
        per_step = self.recipe.rollout.prompts_per_step * self.accelerator.num_processes
        return self._data_start + (step - self._step_start) * per_step

    def _check_divergence(self, metrics: dict[str, float]) -> None:
        bad = any(not math.isfinite(metrics.get(key, 0.0)) for key in ("loss", "grad_norm"))
        self.bad_steps = self.bad_steps + 1 if bad else 0
        if self.bad_steps >= MAX_BAD_STEPS:
            raise TrainingDiverged(
                f"training stopped at step {self.step}: the loss was NaN/inf for {MAX_BAD_STEPS} steps in a row; "
                "lower optim.learning_rate or algorithm.beta, or check the rewards"
            )

    # -- the loop ------------------------------------------------------------------
    def save(self) -> Path:
        """Rank 0 writes the checkpoint (every rank holds the same weights); the others wait for it."""
        final = self.out / f"checkpoint-{self.step}"
        if self.accelerator.is_main_process:
            final = save_checkpoint(
                self.out, self.step, self.unwrapped, self.optimizer, self.scheduler,
                {"data_position": self.data_position, "bad_steps": self.bad_steps},
            )
        self.accelerator.wait_for_everyone()
        return final

    def resume(self, path: str) -> None:
        """Every process loads rank 0's checkpoint, whatever process count wrote it."""
        state = load_checkpoint(path, self.unwrapped, self.optimizer, self.scheduler)
        self.step, self.bad_steps = int(state["step"]), int(state.get("bad_steps", 0))
        self._step_start, self._data_start = self.step, int(state.get("data_position", self.data_position))
        if self.accelerator.is_main_process:  # the killed run's later lines are replayed, not kept twice
            drop_metrics_after(self.out / "metrics.jsonl", self.step)
        if self.pool is not None:
            self.pool.update_adapter(trainable_state(self.unwrapped), self.step)

    def steps(self) -> Iterator[dict[str, float]]:
        """Run to ``optim.max_steps``, yielding each step's metrics after logging them.

        Logging, the progress bar, evaluation and checkpoint writes happen on the main
        process only. A SIGTERM ends the run after the current step with a checkpoint
        (``self.preempted`` is then set), so a scheduler's preemption loses nothing.
        """
        c = self.recipe.checkpoint
        if c.resume_from:
            self.resume(c.resume_from)
        main = self.accelerator.is_main_process
        if main:
            save_recipe(self.recipe, self.out)
        logger = MetricsLogger(self.out, self.recipe.logging.report_to if main else [], self.recipe.model_dump(mode="json"))
        bar = progress_bar(self.recipe.logging.progress and main)
        try:
            with bar, Preemption().installed() as preemption:
                task = bar.add_task("starting", total=self.recipe.optim.max_steps, completed=self.step)
                while self.step < self.recipe.optim.max_steps:
                    metrics = self.train_step()
                    self.runner.end_step()  # reward health: warns once if answers go unread
                    self.step += 1
                    every = self.recipe.eval.every
                    if main and self.eval_fn is not None and every and self.step % every == 0:
                        metrics.update({f"eval/{k}": v for k, v in self.eval_fn(self.unwrapped, self.step).items()})
                    if self.step % self.recipe.logging.logging_steps == 0:
                        logger.log(self.step, metrics)
                    self._check_divergence(metrics)
                    bar.update(task, advance=1, description=_describe(metrics))
                    self.preempted = any_process(self.accelerator, preemption.requested)
                    if self.preempted:
                        path = self.save()
                        if main:
                            print(f"SIGTERM: saved {path} at step {self.step}; resume with checkpoint.resume_from={path}")
                    elif c.save_steps and self.step % c.save_steps == 0:
                        self.save()
                    yield metrics
                    if self.preempted:
                        return
            if c.save_final:
                self.save()
        finally:
            logger.close()
            self.runner.close()
            if self.pool is not None and self.owns_pool:
                self.pool.shutdown()


@dataclass
class NextRollout:
    """A rollout submitted ahead (overlap): its step, rows, seed, pending result and sampling adapter."""

    step: int
    rows: list[dict[str, Any]]
    seed: int
    pending: PendingRollout
    adapter: dict[str, torch.Tensor]


def _describe(metrics: dict[str, float]) -> str:
    return (
        f"reward {metrics.get('reward', 0):.3f} acc {metrics.get('accuracy', 0):.2f} "
        f"| rollout {metrics['time/rollout']:.1f}s reward {metrics['time/reward']:.1f}s "
        f"update {metrics['time/update']:.1f}s"
    )


def train(
    recipe: Recipe,
    *,
    eval_fn: EvalFn | None = None,
    model_factory: Callable[[], DiffusionLM] | None = None,
    rows: list[dict[str, Any]] | None = None,
    pool: Any = None,
) -> dict[str, float]:
    """Train with ``recipe``; returns the last step's metrics."""
    last: dict[str, float] = {}
    for metrics in Trainer(recipe, eval_fn=eval_fn, model_factory=model_factory, rows=rows, pool=pool).steps():
        last = metrics
    return last


__all__ = ["Trainer", "TrainingDiverged", "train"]
