"""Likelihood estimators: how a masked dLLM scores the tokens of a sampled answer.

A dLLM has no cheap exact sequence likelihood, so each objective picks one of
these estimators (diffu-GRPO by `algorithm.estimator`, docs/recipes.md). They share one call,
``token_logprobs(model, traj, key) -> Scores``, so objectives never know how a
score was obtained. ``key`` is the only source of randomness: passing the same
key to the θ, θ_old and reference passes of one inner iteration gives them the
same masks, which is what makes their ratios meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from unmask.diffusion.process import DiffusionProcess
from unmask.kernels.ops import token_logprobs
from unmask.rollouts.trajectory import Trajectory

#: an integer seed (one-step, ELBO) or ``[B]`` long step indices (per-step)
Key = int | torch.Tensor


@dataclass
class Scores:
    """Per-token scores of the answer positions of a batch, all ``[B, L]``."""

    #: log-prob of each answer token (zero where ``mask`` is False)
    logprobs: torch.Tensor
    #: entropy of the predictive distribution (detached; IGPO's hint filter, metrics)
    entropy: torch.Tensor
    #: positions the estimator scored
    mask: torch.Tensor
    #: per-token estimator weight (``1/t`` for the ELBO, 1 elsewhere); for the ELBO estimators
    #: ``Σ_k weight_k · logprobs_k`` is exactly one sequence ELBO estimate (``sequence_elbo``)
    weight: torch.Tensor
    #: SPG's per-token upper-bound (EUBO) term ``(1/β) ln a_k`` where ``mask``, else 0; None elsewhere
    upper: torch.Tensor | None = None
    #: the estimator's own diagnostics, logged with the micro-batch's loss metrics
    metrics: dict[str, float] = field(default_factory=dict)


def sequence_elbo(scores: Scores) -> torch.Tensor:
    """``[B]`` one ELBO estimate per row, in nats: ``Σ_k weight_k · logprobs_k`` over scored tokens."""
    return (scores.logprobs * scores.weight).masked_fill(~scores.mask, 0.0).sum(1)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)


def _answer_scores(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    targets: torch.Tensor,
    prompt_length: int,
    temperature: float,
    process: DiffusionProcess,
    *,
    clean: torch.Tensor | None = None,
    exclude_noise: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of ``targets`` ``[B, L]`` at the answer positions, and (detached) entropies.

    ``input_ids`` is a corrupted canvas. With ``clean`` (the uncorrupted canvas) it is
    scored as the process trains: two-stream ``[x_t ; x_0]`` on block-causal families,
    so every noisy block sees clean earlier blocks; without, as one canvas (a replayed
    sampler canvas already holds the context its step saw). ``exclude_noise`` drops
    the noise token from the distribution: the sampler never emits it, so scoring its
    own choices exactly renormalises without it.

    The LM head runs only at the answer columns (``logits_at``) and the reduction
    goes through :func:`unmask.kernels.token_logprobs`, so neither the prompt's
    logits nor a float32 ``[B, L, V]`` copy of the answer's ever exists.
    """
    answer = torch.arange(prompt_length, input_ids.shape[1], device=input_ids.device)
    if clean is None:
        logits = model(input_ids, attention_mask=attention_mask, logits_at=answer, prompt_length=prompt_length)
    else:
        logits = process.scoring_logits(model, input_ids, clean, attention_mask, prompt_length, logits_at=answer)
    if exclude_noise:
        logits = process.forbid_noise(logits)
    logprobs, entropy = token_logprobs(logits, targets.long(), temperature)
    return logprobs, entropy.detach()


def _canvases(traj: Trajectory, rows: torch.Tensor, steps: torch.Tensor, process: DiffusionProcess) -> torch.Tensor:
    """The canvas ``x_t`` the sampler saw, for each ``(rows[i], steps[i])`` pair: ``[len(rows), P + L]``."""
    canvases = traj.tokens.new_empty(len(rows), traj.tokens.shape[1])
    for t in steps.unique().tolist():
        chosen = steps == t
        canvases[chosen] = traj.canvas(int(t), process)[rows[chosen]]
    return canvases


class Estimator:
    """Base: subclasses build the masked input(s) and say which positions they score."""

    #: whether ``key_for`` changes across inner iterations (so θ_old/ref are re-scored)
    varies_per_iteration: bool = True
    #: model forward passes per ``token_logprobs`` call
    passes: int = 1

    def __init__(self, process: DiffusionProcess, temperature: float = 1.0) -> None:
        self.process = process
        self.temperature = temperature

    def key_for(self, traj: Trajectory, seed: int) -> Key:
        """The key of one inner iteration (``seed`` is drawn by the trainer)."""
        return seed

    def passes_for(self, traj: Trajectory) -> int:
        """Model forward passes per row that one ``token_logprobs`` call on ``traj`` costs."""
        return self.passes

    def token_logprobs(self, model: nn.Module, traj: Trajectory, key: Key) -> Scores:
        raise NotImplementedError


class OneStepEstimator(Estimator):
    """d1's estimator: prompt masked at rate ``p_mask``, answer fully masked, one pass."""

    def __init__(self, process: DiffusionProcess, p_mask: float = 0.15, temperature: float = 1.0) -> None:
        super().__init__(process, temperature)
        self.p_mask = p_mask

    def masked_input(self, traj: Trajectory, key: Key) -> torch.Tensor:
        prompt = traj.prompt_ids
        drop = torch.rand(prompt.shape, generator=_generator(int(key))) < self.p_mask
        drop = drop.to(prompt.device) & traj.attention_mask[:, : traj.prompt_length].bool()
        return torch.cat([self.process.corrupt(prompt, drop), self.process.blank(traj.answer_ids)], dim=1)

    def token_logprobs(self, model: nn.Module, traj: Trajectory, key: Key) -> Scores:
        ids = self.masked_input(traj, key)
        logprobs, entropy = _answer_scores(
            model, ids, traj.attention_mask, traj.answer_ids, traj.prompt_length, self.temperature, self.process,
            clean=traj.tokens,
        )
        mask = torch.ones_like(traj.answer_mask, dtype=torch.bool)
        return Scores(logprobs, entropy, mask, torch.ones_like(logprobs))


class StepEstimator(Estimator):
    """MDPO's per-step conditional: the canvas ``x_t`` as sampled, scoring ``x̂_t`` where masked.

    ``key`` is a ``[B]`` tensor of step indices (one trained step per row). Exact for
    the sampled trajectory; use the sampling temperature.
    """

    varies_per_iteration = False

    def key_for(self, traj: Trajectory, seed: int) -> Key:
        raise TypeError("StepEstimator keys are the trained steps; the objective provides them")

    def token_logprobs(self, model: nn.Module, traj: Trajectory, key: Key) -> Scores:
        if traj.step_masked is None or traj.step_pred is None:
            raise ValueError("the per-step estimator needs trajectories sampled with record=True")
        steps = torch.as_tensor(key, dtype=torch.long, device=traj.tokens.device)
        rows = torch.arange(traj.batch_size, device=steps.device)
        canvas = _canvases(traj, rows, steps, self.process)
        targets = traj.step_pred[steps, rows]
        # a block-cached rollout predicts only the current block: later blocks' masked positions
        # hold the noise token, not a prediction, and are not scored
        mask = traj.step_masked[steps, rows] & ~self.process.is_noise_token(targets)
        logprobs, entropy = _answer_scores(
            model, canvas, traj.attention_mask, targets, traj.prompt_length, self.temperature, self.process,
            exclude_noise=True,
        )
        return Scores(logprobs.masked_fill(~mask, 0.0), entropy, mask, torch.ones_like(logprobs))


class TrajectoryEstimator(Estimator):
    """Exact replay (TraceRL): each answer token scored on the canvas of the step that committed it.

    The sum over tokens is the log-likelihood of the sampler's own token choices
    (given where it chose to unmask), so the policy gradient moves the decoding
    policy itself rather than a fully-masked proxy of it. It costs one forward per
    distinct commit step of a row (``T`` passes at one token per step); with
    ``steps_per_row = k`` each row scores only ``k`` of its commit steps, drawn
    from ``key`` (an unbiased per-token estimate at ``k/T`` of the cost). Use the
    sampling temperature. Hint positions (``commit_step = −1``) are not scored.
    """

    def __init__(self, process: DiffusionProcess, temperature: float = 1.0, steps_per_row: int | None = None) -> None:
        super().__init__(process, temperature)
        self.steps_per_row = steps_per_row
        self.varies_per_iteration = steps_per_row is not None

    @staticmethod
    def steps(traj: Trajectory) -> int:
        """Denoising steps of ``traj`` (commit steps index ``[0, steps)``)."""
        return max(traj.num_steps, int(traj.commit_step.max()) + 1)

    def passes_for(self, traj: Trajectory) -> int:
        steps = self.steps(traj)
        return steps if self.steps_per_row is None else min(steps, self.steps_per_row)

    def token_logprobs(self, model: nn.Module, traj: Trajectory, key: Key) -> Scores:
        if traj.step_masked is None or traj.step_pred is None:
            raise ValueError("the trajectory estimator needs trajectories sampled with record=True")
        commit = traj.commit_step  # [B, L]
        scored = commit >= 0
        # [B, T]: the row commits something at t; counted, since a scatter of ``scored`` would let a
        # hint's False (clamped to step 0) overwrite a real commit at step 0
        committed = torch.zeros(traj.batch_size, self.steps(traj), dtype=torch.long, device=commit.device)
        committed = committed.scatter_add_(1, commit.clamp(min=0), scored.long()) > 0
        if self.steps_per_row is not None:
            draw = torch.rand(committed.shape, generator=_generator(int(key))).to(commit.device)
            rank = draw.masked_fill(~committed, 2.0).argsort(1).argsort(1)
            committed &= rank < self.steps_per_row
            scored &= committed.gather(1, commit.clamp(min=0))
        if not committed.any():
            raise ValueError("the trajectory estimator got no token the policy chose: every answer token is a hint")
        rows, times = committed.nonzero(as_tuple=True)  # one replayed canvas per (row, commit step)
        logprobs, entropy = _answer_scores(
            model, _canvases(traj, rows, times, self.process), traj.attention_mask[rows],
            traj.answer_ids[rows], traj.prompt_length, self.temperature, self.process, exclude_noise=True,
        )
        index = torch.zeros_like(committed, dtype=torch.long)
        index[rows, times] = torch.arange(len(rows), device=rows.device)
        pick = index.gather(1, commit.clamp(min=0))  # [B, L]: the item replaying each token's commit step
        cols = torch.arange(commit.shape[1], device=commit.device).expand_as(commit)
        logprobs = logprobs[pick, cols].masked_fill(~scored, 0.0)
        entropy = entropy[pick, cols].masked_fill(~scored, 0.0)
        return Scores(logprobs, entropy, scored, torch.ones_like(logprobs))


class ElboEstimator(Estimator):
    """Monte-Carlo ELBO: answer masked at a random ratio ``t`` per row, weight ``1/t``.

    ``coupled=True`` adds the complementary mask (weight ``1/(1-t)``) so every answer
    token is scored exactly once over two passes, which lowers the variance; both
    weights carry a ½ so the pair averages to one ELBO estimate instead of summing to two.
    ``answer_only=True`` is BGPO's single-sample item: only positions up to the first
    EOS can be masked and scored, and the EOS fill after it is left out of the input.
    """

    def __init__(
        self, process: DiffusionProcess, coupled: bool = False, temperature: float = 1.0, min_ratio: float = 1e-3,
        answer_only: bool = False,
    ) -> None:
        super().__init__(process, temperature)
        self.coupled = coupled
        self.passes = 2 if coupled else 1
        self.min_ratio = min_ratio
        self.answer_only = answer_only

    def draw(self, traj: Trajectory, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row ratios ``t`` ``[B]`` and the mask ``[B, L]`` they induce."""
        gen = _generator(int(key))
        batch, length = traj.answer_ids.shape
        ratio = self.min_ratio + (1 - 2 * self.min_ratio) * torch.rand(batch, generator=gen)
        mask = torch.rand(batch, length, generator=gen) < ratio[:, None]
        mask = mask.to(traj.tokens.device)
        if self.answer_only:
            mask &= traj.answer_mask
        return ratio.to(traj.tokens.device), mask

    def _pass(self, model: nn.Module, traj: Trajectory, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.cat([traj.prompt_ids, self.process.corrupt(traj.answer_ids, mask)], 1)
        attention = traj.attention_mask
        if self.answer_only:
            attention = torch.cat([attention[:, : traj.prompt_length], traj.answer_mask.to(attention.dtype)], 1)
        return _answer_scores(
            model, ids, attention, traj.answer_ids, traj.prompt_length, self.temperature, self.process, clean=traj.tokens
        )

    def token_logprobs(self, model: nn.Module, traj: Trajectory, key: Key) -> Scores:
        ratio, mask = self.draw(traj, key)
        logprobs, entropy = self._pass(model, traj, mask)
        half = 0.5 if self.coupled else 1.0
        weight = (half / ratio)[:, None].expand_as(logprobs)
        if not self.coupled:
            return Scores(logprobs * mask, entropy, mask, weight * mask)
        other_lp, other_ent = self._pass(model, traj, ~mask)
        other_weight = (half / (1.0 - ratio))[:, None].expand_as(logprobs)
        return Scores(
            torch.where(mask, logprobs, other_lp),
            torch.where(mask, entropy, other_ent),
            torch.ones_like(mask),
            torch.where(mask, weight, other_weight),
        )
