"""The trainer's rollout side: prompts → trajectories (in-process or Ray pool) → rewards.

``Rollouts`` is the ``RolloutContext`` objectives see: it samples with the recipe's
decoding settings and grades answers (and MDPO's intermediate predictions) in one
``RewardRunner`` call each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from unmask.diffusion.process import DiffusionProcess
from unmask.recipe import RolloutConfig
from unmask.rewards.runner import RewardBatch
from unmask.rl.objective import RewardResult
from unmask.rollouts import samplers
from unmask.rollouts.trajectory import Trajectory


def encode_prompts(tokenizer: Any, texts: Sequence[str], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``[B, P]`` prompt ids and their attention mask."""
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    width = max(len(ids) for ids in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(encoded), width, dtype=torch.bool)
    for row, tokens in enumerate(encoded):
        if tokens:
            ids[row, width - len(tokens) :] = torch.tensor(tokens)
            mask[row, width - len(tokens) :] = True
    return ids, mask


def decode_answers(tokenizer: Any, answers: torch.Tensor, eos_ids: Sequence[int]) -> list[str]:
    """Answer texts, each cut at its first EOS (what follows is padding)."""
    texts = []
    for row in answers.tolist():
        end = next((i for i, tok in enumerate(row) if tok in eos_ids), len(row))
        texts.append(tokenizer.decode(row[:end], skip_special_tokens=True))
    return texts


def intermediate_answers(traj: Trajectory, process: DiffusionProcess) -> torch.Tensor:
    """``[T, B, L]``: every step's canvas with its masked positions filled by that step's prediction
    (uniform-noise rollouts: the finished blocks and the step's argmax canvas)."""
    if traj.renoise is not None:
        return traj.renoise.intermediate_answers(traj.answer_ids, int(traj.settings["pad_token_id"]))
    plen = traj.prompt_length
    return torch.stack([
        torch.where(traj.step_masked[t], traj.step_pred[t], traj.canvas(t, process)[:, plen:])
        for t in range(traj.num_steps)
    ])


class Rollouts:
    """Samples with one policy (local model or a pool) and grades with ``RewardRunner.score``."""

    def __init__(
        self,
        sample: Callable[..., Trajectory],
        settings: RolloutConfig,
        score_fn: Callable[..., RewardBatch],
        tokenizer: Any,
        *,
        process: DiffusionProcess,
        eos_ids: Sequence[int],
        correct_threshold: float,
        record: bool,
        device: torch.device | str = "cpu",
    ) -> None:
        self.sample = sample
        self.settings = settings
        self.score_fn = score_fn
        self._tokenizer = tokenizer
        self.process = process
        self.eos_ids = tuple(eos_ids)
        self.correct_threshold = correct_threshold
        self.record = record
        #: where prompts go for sampling (the local model's device; pools move rows themselves)
        self.device = torch.device(device)
        #: sampler seed of the current RL step (set by the trainer, so resumed runs replay it)
        self.seed = 0

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def generate(
        self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor, hints: torch.Tensor | None = None,
        temperature: float | None = None,
    ) -> Trajectory:
        """Sample with the recipe's settings; ``temperature`` overrides its temperature (0: greedy)."""
        traj = self.sample(**self.sample_kwargs(prompt_ids, attention_mask, hints, self.seed, temperature))
        return traj.to("cpu")  # trajectories wait on the CPU while the accelerator trains

    def sample_kwargs(
        self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor, hints: torch.Tensor | None, seed: int,
        temperature: float | None = None,
    ) -> dict[str, Any]:
        """``generate`` keyword arguments for these prompts under the recipe's decoding settings."""
        sampler = self.settings.generate_kwargs()
        if temperature is not None:
            sampler["temperature"] = temperature
        device = self.device
        return {
            "prompt_ids": prompt_ids.to(device),
            "attention_mask": attention_mask.to(device),
            **sampler,
            "hints": None if hints is None else hints.to(device),
            "seed": seed,
            "record": self.record,
        }

    def _grade(
        self, texts: list[str], ids: list[list[int]], rows: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        names = dict.fromkeys(key for row in rows for key in row if key != "prompt")
        columns = {key: [row.get(key) for row in rows] for key in names}  # rows may lack optional columns
        result = self.score_fn([row["prompt"] for row in rows], texts, columns, completion_ids=ids)
        return torch.tensor(result.totals, dtype=torch.float), result.metrics

    def score(self, traj: Trajectory, rows: list[dict[str, Any]]) -> RewardResult:
        """Rewards of the final answers; ``completion_ids`` run up to and including the first EOS, as in TRL."""
        ids = [row[:length] for row, length in zip(traj.answer_ids.tolist(), traj.answer_mask.sum(1).tolist(), strict=True)]
        rewards, metrics = self._grade(decode_answers(self.tokenizer, traj.answer_ids, self.eos_ids), ids, rows)
        return RewardResult(rewards, rewards >= self.correct_threshold, metrics)

    def score_steps(self, traj: Trajectory, rows: list[dict[str, Any]]) -> torch.Tensor:
        """``[B, T]`` rewards of every intermediate prediction, graded in one batch.

        Each prediction is decoded whole with special tokens dropped (as the published MDPO
        trainer does), not cut at its first EOS: a stray early EOS in a still-changing
        canvas must not zero a step whose text is right.
        """
        answers = intermediate_answers(traj, self.process)  # [T, B, L]
        steps, batch = answers.shape[:2]
        ids = answers.reshape(steps * batch, -1).tolist()
        rewards, _ = self._grade(self.tokenizer.batch_decode(ids, skip_special_tokens=True), ids, list(rows) * steps)
        return rewards.reshape(steps, batch).T


def local_sampler(model: torch.nn.Module) -> Callable[..., Trajectory]:
    """Sample in this process with the training model itself (the default on one CPU), with the
    sampler its diffusion process names."""

    def sample(prompt_ids: torch.Tensor, **kwargs: Any) -> Trajectory:
        was_training = model.training
        model.eval()
        try:
            return samplers.sample(model, prompt_ids, **kwargs)
        finally:
            model.train(was_training)

    return sample
