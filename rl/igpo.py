"""IGPO: all-wrong groups get a second, hinted group; correct hinted answers replace some originals.

Examples without a reference reasoning trace (e.g. generated Countdown, which has
no ``reasoning`` column) cannot be hinted: their groups train exactly as in
diffu-GRPO and the ``igpo/unhintable`` metric counts them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from unmask.rl.advantages import all_wrong_groups, group_advantages
from unmask.rl.diffu_grpo import DiffuGRPO
from unmask.rl.estimators import Scores
from unmask.rl.hints import entropy_filter, hint_row, reasoning_only
from unmask.rl.losses import sequence_log_ratio
from unmask.rl.objective import Rollout, RolloutContext, TrainBatch, register
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


@register
class IGPO(DiffuGRPO):
    name = "igpo"

    def trace_ids(self, row: dict[str, Any], tokenizer: Any) -> list[int] | None:
        trace = row.get(self.config.reasoning_column)
        if not isinstance(trace, str) or not reasoning_only(trace):
            return None
        return list(tokenizer(reasoning_only(trace), add_special_tokens=False)["input_ids"])

    def hints(self, rows: list[dict[str, Any]], tokenizer: Any, seed: int) -> tuple[torch.Tensor, list[int]]:
        """``[n, L]`` hints (−1 = free) for the hintable ``rows``, and their indices."""
        gen = torch.Generator().manual_seed(seed)
        cfg = self.config
        out, index = [], []
        for i, row in enumerate(rows):
            ids = self.trace_ids(row, tokenizer)
            if ids is None:
                continue
            out.append(hint_row(
                ids, self.gen_length, ratio_range=(cfg.hint_ratio_min, cfg.hint_ratio_max),
                chunk_range=(cfg.chunk_min, cfg.chunk_max), free_tail=cfg.free_tail, gen=gen,
            ))
            index.append(i)
        return (torch.stack(out) if out else torch.empty(0, self.gen_length, dtype=torch.long)), index

    def prepare(self, rollout: Rollout, ctx: RolloutContext) -> TrainBatch:
        group = rollout.group_size
        wrong = all_wrong_groups(rollout.correct, group).repeat_interleave(group)
        candidates = torch.nonzero(wrong).flatten().tolist()
        hints, hintable = self.hints([rollout.rows[i] for i in candidates], ctx.tokenizer, rollout.seed)
        rows = [candidates[i] for i in hintable]
        traj, rewards, correct = rollout.traj, rollout.rewards.clone(), rollout.correct.clone()
        replaced = 0
        if rows:
            prompt = slice(0, traj.prompt_length)
            hinted = ctx.generate(traj.tokens[rows, prompt], traj.attention_mask[rows, prompt], hints)
            scored = ctx.score(hinted, [rollout.rows[i] for i in rows])
            targets, donors = self.replacements(rows, scored.correct, group)
            if targets:
                traj = splice(traj, targets, hinted, donors)
                rewards[targets] = scored.rewards[donors].to(rewards.dtype)
                correct[targets] = scored.correct[donors]
                replaced = len(targets)
        advantages = group_advantages(rewards, group, self.config.scale_rewards)
        metrics = {
            "all_wrong_fraction": float(wrong.float().mean()),
            "igpo/hinted_rows": float(len(rows)),
            "igpo/unhintable": float(len(candidates) - len(rows)),
            "igpo/replaced": float(replaced),
        }
        return TrainBatch(traj, advantages, metrics=metrics)

    def replacements(self, rows: list[int], hinted_correct: torch.Tensor, group: int) -> tuple[list[int], list[int]]:
        """Pairs (original row, hinted row): per group, up to ``⌊λG⌋`` correct hinted answers."""
        limit = int(self.config.replace_fraction * group)
        targets, donors, used = [], [], {}
        for donor, row in enumerate(rows):
            g = row // group
            if bool(hinted_correct[donor]) and used.get(g, 0) < limit:
                targets.append(g * group + used.get(g, 0))
                donors.append(donor)
                used[g] = used.get(g, 0) + 1
        return targets, donors

    def loss_mask(self, batch: TrainBatch, scores: Scores) -> torch.Tensor:
        hint = batch.traj.hint_mask.bool()
        kept = entropy_filter(scores.entropy, hint, self.config.entropy_clip_ratio)
        return super().loss_mask(batch, scores) & (~hint | kept)

    def log_ratio(self, batch: TrainBatch, scores: Scores, old: Scores | None) -> torch.Tensor | None:
        if not self.config.sequence_level_ratio:
            return None
        old_lp = scores.logprobs.detach() if old is None else old.logprobs
        return sequence_log_ratio(scores.logprobs, old_lp, self.loss_mask(batch, scores))
