"""Reward health: catch, in the first steps of a run, rewards that cannot read the answers.

A grader that rejects the model's answer format scores every rollout 0, and RL then
trains on nothing, silently, for as long as the run lasts. ``RewardHealth`` counts,
per reward and per step, the completions in which the grader found no answer or
could not parse one; when the total reward has been 0 for the first ``watch_steps``
steps and most completions of one reward failed, it returns one warning naming the
reward, the commonest reason and one offending completion.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

#: failure reasons that mean the grader could not read the answer (``worker.failure_reason``)
UNGRADEABLE = ("no answer", "unparseable")
#: characters of the offending completion shown in the warning (its end: where the answer is)
EXAMPLE_CHARS = 240


def trim(text: str, width: int = EXAMPLE_CHARS) -> str:
    """The last ``width`` characters of ``text`` on one line (answers sit at the end)."""
    flat = text.replace("\n", "⏎")
    return flat if len(flat) <= width else "…" + flat[-width:]


@dataclass
class _Tally:
    items: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)


@dataclass
class RewardHealth:
    """Watches the first ``watch_steps`` steps; ``end_step`` returns at most one warning per run."""

    watch_steps: int = 3
    min_failed: float = 0.5
    steps: int = 0
    done: bool = False
    _tallies: dict[str, _Tally] = field(default_factory=dict)
    _any_reward: bool = False

    def record(
        self, name: str, reasons: Sequence[str | None], completions: Sequence[str], totals: Sequence[float]
    ) -> None:
        """One graded batch of reward ``name``: a failure reason (or None) per completion."""
        if self.done:
            return
        tally = self._tallies.setdefault(name, _Tally())
        tally.items += len(reasons)
        for reason, text in zip(reasons, completions, strict=True):
            if reason is not None and reason.startswith(UNGRADEABLE):
                tally.reasons[reason] += 1
                tally.examples.setdefault(reason, text)
        self._any_reward = self._any_reward or any(t != 0 for t in totals)

    def end_step(self) -> str | None:
        """Close a training step; the warning once the first steps all scored 0 and failed."""
        if self.done:
            return None
        self.steps += 1
        if self._any_reward:
            self.done = True  # something scored: the rewards read the answers
            return None
        if self.steps < self.watch_steps:
            return None
        self.done = True
        return self._warning()

    def _warning(self) -> str | None:
        worst = max(
            self._tallies.items(),
            key=lambda kv: sum(kv[1].reasons.values()) / max(kv[1].items, 1),
            default=None,
        )
        if worst is None:
            return None
        name, tally = worst
        failed = sum(tally.reasons.values())
        if not tally.items or failed / tally.items <= self.min_failed:
            return None
        reason, count = tally.reasons.most_common(1)[0]
        return (
            f"reward {name!r} gave a total reward of 0 for the first {self.steps} steps: "
            f"{failed} of {tally.items} completions ({failed / tally.items:.0%}) had no gradeable answer, "
            f"most often ({count}) '{reason}'. One of them ends: {trim(tally.examples[reason])!r}. "
            "Check that the prompt asks for the answer format this reward reads."
        )
