"""IGPO's parts: all-wrong groups get a second, hinted group; correct hinted answers replace some
originals; low-entropy hint tokens leave the loss.

Examples without a reference reasoning trace (e.g. generated Countdown, which has
no ``reasoning`` column) cannot be hinted: their groups train exactly as in
diffu-GRPO and the ``igpo/unhintable`` metric counts them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from unmask.rl.advantages import all_wrong_groups
from unmask.rl.aggregation import LOSS_MASKS, answer_mask
from unmask.rl.batches import BATCHES, Batches
from unmask.rl.estimators import Scores
from unmask.rl.hints import entropy_filter, hint_row, reasoning_only
from unmask.rl.objective import Objective, Rollout, RolloutContext, TrainBatch
from unmask.rollouts.trajectory import Trajectory

_ROW_FIELDS = ("tokens", "attention_mask", "answer_mask", "commit_step", "hint_mask", "nfe")


def splice(base: Trajectory, rows: list[int], donor: Trajectory, donor_rows: list[int]) -> Trajectory:
    """``base`` with ``rows`` taken from ``donor``; the per-step record is dropped (one-step estimator)."""
    target, source = torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(donor_rows, dtype=torch.long)
    merged = {}
    for name in _ROW_FIELDS:
        value = getattr(base, name).clone()
        value[target] = getattr(donor, name)[source].to(value.dtype)
        merged[name] = value
    return replace(base, **merged, step_masked=None, step_pred=None, step_confidence=None, step_logprob=None)


class Hinted(Batches):
    """One item per answer; all-wrong groups first get hinted answers spliced in."""

    @staticmethod
    def trace_ids(config: Any, row: dict[str, Any], tokenizer: Any) -> list[int] | None:
        trace = row.get(config.reasoning_column)
        if not isinstance(trace, str) or not reasoning_only(trace):
            return None
        return list(tokenizer(reasoning_only(trace), add_special_tokens=False)["input_ids"])

    def hints(
        self, config: Any, gen_length: int, rows: list[dict[str, Any]], tokenizer: Any, seed: int
    ) -> tuple[torch.Tensor, list[int]]:
        """``[n, L]`` hints (−1 = free) for the hintable ``rows``, and their indices."""
        gen = torch.Generator().manual_seed(seed)
        out, index = [], []
        for i, row in enumerate(rows):
            ids = self.trace_ids(config, row, tokenizer)
            if ids is None:
                continue
            out.append(hint_row(
                ids, gen_length, ratio_range=(config.hint_ratio_min, config.hint_ratio_max),
                chunk_range=(config.chunk_min, config.chunk_max), free_tail=config.free_tail, gen=gen,
            ))
            index.append(i)
        return (torch.stack(out) if out else torch.empty(0, gen_length, dtype=torch.long)), index

    def prepare(self, objective: Objective, rollout: Rollout, ctx: RolloutContext) -> TrainBatch:
        group, config = rollout.group_size, objective.config
        wrong = all_wrong_groups(rollout.correct, group).repeat_interleave(group)
        candidates = torch.nonzero(wrong).flatten().tolist()
        hints, hintable = self.hints(
            config, objective.gen_length, [rollout.rows[i] for i in candidates], ctx.tokenizer, rollout.seed
        )
        rows = [candidates[i] for i in hintable]
        traj, rewards, correct = rollout.traj, rollout.rewards.clone(), rollout.correct.clone()
        replaced = 0
        if rows:
            prompt = slice(0, traj.prompt_length)
            hinted = ctx.generate(traj.tokens[rows, prompt], traj.attention_mask[rows, prompt], hints)
            scored = ctx.score(hinted, [rollout.rows[i] for i in rows])
            targets, donors = self.replacements(config, rows, scored.correct, group)
            if targets:
                traj = splice(traj, targets, hinted, donors)
                rewards[targets] = scored.rewards[donors].to(rewards.dtype)
                correct[targets] = scored.correct[donors]
                replaced = len(targets)
        advantages = objective.advantages(rewards, group)
        metrics = {
            "all_wrong_fraction": float(wrong.float().mean()),
            "igpo/hinted_rows": float(len(rows)),
            "igpo/unhintable": float(len(candidates) - len(rows)),
            "igpo/replaced": float(replaced),
        }
        return TrainBatch(traj, advantages, metrics=metrics)

    @staticmethod
    def replacements(config: Any, rows: list[int], hinted_correct: torch.Tensor, group: int) -> tuple[list[int], list[int]]:
        """Pairs (original row, hinted row): per group, up to ``⌊λG⌋`` correct hinted answers."""
        limit = int(config.replace_fraction * group)
        targets, donors, used = [], [], {}
        for donor, row in enumerate(rows):
            g = row // group
            if bool(hinted_correct[donor]) and used.get(g, 0) < limit:
                targets.append(g * group + used.get(g, 0))
                donors.append(donor)
                used[g] = used.get(g, 0) + 1
        return targets, donors


BATCHES.register(
    "hinted", needs=("reasoning_column", "hint_ratio_min", "hint_ratio_max", "chunk_min", "chunk_max", "free_tail",
                     "replace_fraction"),
)(Hinted())


@LOSS_MASKS.register("hint_filtered", needs=("entropy_clip_ratio",))
def hint_filtered(batch: TrainBatch, scores: Scores, config: Any) -> torch.Tensor:
    """The answer mask without the hint tokens whose entropy is below the ``entropy_clip_ratio`` quantile."""
    hint = batch.traj.hint_mask.bool()
    kept = entropy_filter(scores.entropy, hint, config.entropy_clip_ratio)
    return answer_mask(batch, scores, config) & (~hint | kept)
