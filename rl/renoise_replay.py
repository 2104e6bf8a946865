"""The renoise replay: the exact per-step likelihood of a uniform-noise (DiffusionGemma) rollout.

The sampler's step n of block k is a transition from the state (context c_k, canvas x_n,
SC input h_n) to x_{n-1}: each accepted slot i ∈ A_n draws x_{n-1}^i ~ softmax(z_n)^i with
z_n = f_θ(state) / T_n, every other slot a uniform id (θ-free). So

    log p_θ(x_{n-1} | state) = Σ_{i ∈ A_n} log softmax(z_n)^i[x_{n-1}^i] + const,

and a decision is one accepted (step, slot). The replay rescores the recorded canvases,
accepted sets and SC embeddings: per block one encoder pass over the committed context
(with gradient: the encoder shares θ) and one decoder call over the block's recorded steps
against that cache, repeated per step. At θ = θ_old it reproduces the rollout's log-probs.
The transition at the stop step n* and the steps of rows that had already ended cannot
change the answer and are not scored (docs/diffusion-gemma.md).

Approximations (stated in the docs): the SC input, the accepted sets and the stop step are
θ_old's. ``accept_changed`` logs the share of scored (step, slot) pairs whose entropy-bound
set under θ differs from the recorded one: the part of the chain the replay holds fixed;
``replay_drift`` and ``near_deterministic`` are the spec's parity and credit diagnostics.

``Scores`` are decision-major: ``[B, T·L]`` over the rollout's T recorded steps (flat over
blocks) and the canvas' L slots, so objectives read their loss mask from ``scores.mask``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.distributions import Categorical

from unmask.diffusion.process import DiffusionProcess
from unmask.errors import UserError
from unmask.rl.estimators import Estimator, Key, Scores, _generator
from unmask.rollouts.trajectory import Trajectory
from unmask.rollouts.uniform_sampler import UniformTrajectory, entropy_bound_accept


def scorable_steps(run: UniformTrajectory) -> torch.Tensor:
    """``[T, B]``: the row was live at the step and the step came before its block's stop step."""
    return run.step_active & (run.step_n[:, None] > run.stop_step[run.step_block])


class RenoiseReplayEstimator(Estimator):
    """Renoise replay of every scorable step, or of ``steps_per_row`` of them drawn from the key.

    With ``steps_per_row = m`` a row's decisions get weight ``T_b / m`` (``T_b`` its scorable
    steps), which keeps the sum over decisions unbiased. ``per_step=True`` takes the key as a
    ``[B]`` tensor of trained steps instead (MDPO's (answer, step) items). ``exact_sc=True``
    recomputes the SC inputs under θ, step after step (``replay_block_exact``: a decoder pass
    per step instead of one per block), instead of reading θ_old's recorded ones.
    """

    varies_per_iteration = False

    def __init__(
        self, process: DiffusionProcess, steps_per_row: int | None = None, per_step: bool = False, exact_sc: bool = False
    ) -> None:
        if process.mask_token:
            raise UserError(
                f"the renoise replay rescores uniform-noise rollouts (DiffusionGemma); the {process.name} process "
                "has a mask token: use one_step, trajectory, step or block_replay"
            )
        super().__init__(process, 1.0)
        self.steps_per_row = None if per_step else steps_per_row
        self.per_step = per_step
        self.replay = replay_block_exact if exact_sc else replay_block
        self.varies_per_iteration = self.steps_per_row is not None

    def key_for(self, traj: Trajectory, seed: int) -> Key:
        if self.per_step:
            raise TypeError("per-step renoise replay keys are the trained steps; the objective provides them")
        return seed

    def passes_for(self, traj: Trajectory) -> int:
        """Two model calls (encoder, decoder) per block."""
        return 2 * int(_record(traj).stop_step.shape[0])

    def chosen_steps(self, run: UniformTrajectory, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        """``[T, B]`` steps to score and ``[B]`` each row's weight."""
        scorable = scorable_steps(run)
        weight = torch.ones(scorable.shape[1], device=scorable.device)
        if self.per_step:
            steps = torch.as_tensor(key, dtype=torch.long, device=scorable.device)
            picked = torch.arange(scorable.shape[0], device=scorable.device)[:, None] == steps[None]
            return scorable & picked, weight
        if self.steps_per_row is None:
            return scorable, weight
        draw = torch.rand(scorable.shape, generator=_generator(int(key))).to(scorable.device)
        rank = draw.masked_fill(~scorable, 2.0).argsort(0).argsort(0)
        count = scorable.sum(0).float()
        return scorable & (rank < self.steps_per_row), (count / self.steps_per_row).clamp(min=1.0)

    def token_logprobs(self, model: nn.Module, traj: Trajectory, key: Key) -> Scores:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            raise UserError("the renoise replay calls DiffusionGemma's encode/decode, which bypass DDP's gradient "
                            "sync: train this family in one process")  # fmt: skip
        run = _record(traj)
        chosen, row_weight = self.chosen_steps(run, key)
        steps, batch, length = run.step_canvas.shape
        logprobs = torch.zeros(steps, batch, length, device=chosen.device)
        entropy = torch.zeros_like(logprobs)
        changed = slots = 0
        for block in range(int(run.stop_step.shape[0])):
            at = ((run.step_block == block) & chosen.any(1)).nonzero()[:, 0]
            if not len(at):
                continue
            rows = chosen[at].any(0).nonzero()[:, 0]
            lp, ent = self.replay(model, traj, run, block, at, rows)  # [n, R, L]
            logprobs = logprobs.index_put((at[:, None], rows[None]), lp)
            entropy[at[:, None], rows[None]] = ent.detach()
            picked = chosen[at][:, rows]
            bound = float(traj.settings["entropy_bound"])
            moved = entropy_bound_accept(ent.detach(), bound) != run.step_accept[at][:, rows]
            changed += int(moved[picked].sum())
            slots += int(picked.sum()) * length
        mask = chosen[..., None] & run.step_accept
        weight = row_weight[None, :, None].expand_as(logprobs)

        def flat(values: torch.Tensor) -> torch.Tensor:  # [T, B, L] → decision-major [B, T·L]
            return values.transpose(0, 1).reshape(batch, steps * length)

        return Scores(
            flat(logprobs.masked_fill(~mask, 0.0)), flat(entropy.masked_fill(~mask, 0.0)), flat(mask), flat(weight),
            metrics={"accept_changed": changed / max(slots, 1), **decision_metrics(logprobs.detach(), run, mask)},
        )


def decision_metrics(logprobs: torch.Tensor, run: UniformTrajectory, mask: torch.Tensor) -> dict[str, float]:
    """``replay_drift``: the largest |log-prob under θ − the rollout's| over scored decisions (about 1e-6
    at θ = θ_old in fp32); ``near_deterministic``: their share with log-prob above −1e-3 (no gradient to speak of)."""
    if not mask.any():
        return {}
    scored = logprobs[mask]
    return {"replay_drift": float((scored - run.step_logprob.to(scored.device)[mask]).abs().max()),
            "near_deterministic": float((scored > -1e-3).float().mean())}  # fmt: skip


@dataclass
class BlockContext:
    """The cache of one block's committed context for some rows, and the decoder's mask and positions."""

    cache: Any
    decoder_mask: torch.Tensor | None
    positions: torch.Tensor


def encode_context(model: nn.Module, traj: Trajectory, run: UniformTrajectory, block: int, rows: torch.Tensor) -> BlockContext:
    """One encoder pass (with gradient) over the rows' prompt ⊕ earlier blocks, left padding as the sampler had it."""
    length = run.step_canvas.shape[-1]
    end = run.prompt_length + block * length
    context = traj.tokens[rows, :end]
    mask = traj.attention_mask[rows, :end].bool()
    padded = None if mask.all() else mask
    cache, _ = model.encode(context, None, padded, torch.arange(end, device=context.device)[None])
    decoder_mask = None if padded is None else nn.functional.pad(padded, (0, length), value=True)
    return BlockContext(cache, decoder_mask, torch.arange(end, end + length, device=context.device)[None])


def drawn_logprobs(z: torch.Tensor, draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of ``draws`` under softmax(z) and (detached) entropies, from processed logits ``z [..., V]``."""
    return z.log_softmax(-1).gather(-1, draws[..., None])[..., 0], Categorical(logits=z.detach()).entropy()


def replay_block(
    model: nn.Module, traj: Trajectory, run: UniformTrajectory, block: int, at: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the recorded draws and entropies, ``[len(at), len(rows), L]``, at steps ``at`` of ``block``.

    The context's cache repeated row-major for the steps, one decoder call on the recorded
    canvases with the recorded SC embeddings, logits divided by each step's temperature.
    """
    ctx, n, length = encode_context(model, traj, run, block, rows), len(at), run.step_canvas.shape[-1]
    ctx.cache.batch_repeat_interleave(n)

    def row_major(recorded: torch.Tensor) -> torch.Tensor:  # [T, B, ...] → [R·n, ...], a row's steps adjacent
        picked = recorded[at][:, rows].transpose(0, 1)
        return picked.reshape(-1, *picked.shape[2:])

    mask = None if ctx.decoder_mask is None else ctx.decoder_mask.repeat_interleave(n, 0)
    logits = model.decode(row_major(run.step_canvas), ctx.cache, row_major(run.step_sc), attention_mask=mask,
                          position_ids=ctx.positions)  # fmt: skip
    z = logits / run.step_temperature[at].repeat(len(rows))[:, None, None].to(logits.device)
    drawn, entropy = drawn_logprobs(z, row_major(run.step_sample))
    return tuple(values.view(len(rows), n, length).transpose(0, 1) for values in (drawn, entropy))


def replay_block_exact(
    model: nn.Module, traj: Trajectory, run: UniformTrajectory, block: int, at: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``replay_block`` with θ's own SC: the block's steps decoded one after another up to the last of
    ``at``, each conditioned on the previous step's θ logits (gradient through the chain), as the
    sampler ran them. Exact for the recorded accepted sets and stop step; one decoder pass per step."""
    ctx = encode_context(model, traj, run, block, rows)
    wanted = set(at.tolist())
    steps = [t for t in (run.step_block == block).nonzero()[:, 0].tolist() if t <= max(wanted)]
    sc, out = None, []
    for t in steps:
        logits = model.decode(run.step_canvas[t, rows], ctx.cache, sc, attention_mask=ctx.decoder_mask,
                              position_ids=ctx.positions)  # fmt: skip
        z = logits / run.step_temperature[t].to(logits.device)
        if t in wanted:
            out.append(drawn_logprobs(z, run.step_sample[t, rows]))
        sc = model.soft_embeddings(z.to(model.dtype))
    return torch.stack([lp for lp, _ in out]), torch.stack([ent for _, ent in out])


def _record(traj: Trajectory) -> UniformTrajectory:
    if traj.renoise is None:
        raise ValueError("the renoise replay needs uniform-noise rollouts sampled with record=True (DiffusionGemma)")
    return traj.renoise
