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

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.distributions import Categorical
from torch.utils.checkpoint import checkpoint

from unmask.diffusion.process import DiffusionProcess
from unmask.errors import UserError
from unmask.kernels.sampling import row_chunks
from unmask.models.diffusion_gemma import DiffusionGemma
from unmask.rl.estimators import Estimator, Key, Scores, _generator
from unmask.rollouts.trajectory import Trajectory
from unmask.rollouts.uniform.entropy_bound import entropy_bound_accept
from unmask.rollouts.uniform_sampler import UniformTrajectory

#: fp32 logit elements (2^27: 512 MiB) that one chunk of the replay's vocabulary reductions holds. The
#: replay decodes all of a block's recorded steps at once, and at the real size (canvas 256, vocabulary
#: 262 144) one canvas' logits take 268 MB in fp32, a 48-step row-block's about 13 GB, several times over
#: (soft-cap, log-softmax, their copies saved for backward). So the head, log-softmax and entropy run on
#: a few canvases at a time under activation checkpointing: forward and backward each hold one chunk's
#: logits, and the results equal the unchunked replay's (docs/diffusion-gemma.md).
LOGIT_CHUNK_ELEMENTS = 1 << 27


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
    ``chunk_elements`` bounds the logits alive at once (``LOGIT_CHUNK_ELEMENTS``).
    """

    varies_per_iteration = False

    def __init__(
        self, process: DiffusionProcess, steps_per_row: int | None = None, per_step: bool = False,
        exact_sc: bool = False, chunk_elements: int = LOGIT_CHUNK_ELEMENTS,
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
        self.chunk_elements = chunk_elements
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
        run = _record(traj)
        chosen, row_weight = self.chosen_steps(run, key)
        # one forward of whatever wraps the family, so DDP all-reduces the gradient of every block's calls
        logprobs, entropy = model(within=functools.partial(self.replay_chosen, traj=traj, run=run, chosen=chosen))
        steps, batch, length = run.step_canvas.shape
        mask = chosen[..., None] & run.step_accept
        moved = entropy_bound_accept(entropy, float(traj.settings["entropy_bound"])) != run.step_accept
        changed = int(moved[chosen].sum()) / max(int(chosen.sum()) * length, 1)
        weight = row_weight[None, :, None].expand_as(logprobs)

        def flat(values: torch.Tensor) -> torch.Tensor:  # [T, B, L] → decision-major [B, T·L]
            return values.transpose(0, 1).reshape(batch, steps * length)

        return Scores(
            flat(logprobs.masked_fill(~mask, 0.0)), flat(entropy.masked_fill(~mask, 0.0)), flat(mask), flat(weight),
            metrics={"accept_changed": changed, **decision_metrics(logprobs.detach(), run, mask)},
        )

    def replay_chosen(
        self, model: DiffusionGemma, traj: Trajectory, run: UniformTrajectory, chosen: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[T, B, L]`` log-probs of the recorded draws and (detached) entropies, 0 where not replayed:
        per block one replay of its chosen steps, for the rows chosen at any of them."""
        steps, batch, length = run.step_canvas.shape
        logprobs = torch.zeros(steps, batch, length, device=chosen.device)
        entropy = torch.zeros_like(logprobs)
        for block in range(int(run.stop_step.shape[0])):
            at = ((run.step_block == block) & chosen.any(1)).nonzero()[:, 0]
            if not len(at):
                continue
            rows = chosen[at].any(0).nonzero()[:, 0]
            lp, ent = self.replay(model, traj, run, block, at, rows, self.chunk_elements)  # [n, R, L]
            logprobs = logprobs.index_put((at[:, None], rows[None]), lp)
            entropy[at[:, None], rows[None]] = ent.detach()
        return logprobs, entropy


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


def encode_context(model: DiffusionGemma, traj: Trajectory, run: UniformTrajectory, block: int, rows: torch.Tensor) -> BlockContext:
    """One encoder pass (with gradient) over the rows' prompt ⊕ earlier blocks, left padding as the sampler had it."""
    length = run.step_canvas.shape[-1]
    end = run.prompt_length + block * length
    context = traj.tokens[rows, :end]
    mask = traj.attention_mask[rows, :end].bool()
    padded = None if mask.all() else mask
    cache, _ = model.encode(context, None, padded, torch.arange(end, device=context.device)[None])
    decoder_mask = None if padded is None else nn.functional.pad(padded, (0, length), value=True)
    return BlockContext(cache, decoder_mask, torch.arange(end, end + length, device=context.device)[None])


def head_scores(
    model: DiffusionGemma, hidden: torch.Tensor, temperature: torch.Tensor, draws: torch.Tensor, with_sc: bool = False
) -> tuple[torch.Tensor, ...]:
    """Log-probs of ``draws [N, L]`` under softmax(z) with z = head(hidden) / T, (detached) entropies and,
    ``with_sc``, the next step's SC embeddings, for ``N`` canvases of decoder hidden states with temperatures ``[N]``."""
    z = model.head(hidden) / temperature.to(hidden.device)[:, None, None]
    scores = z.log_softmax(-1).gather(-1, draws[..., None])[..., 0], Categorical(logits=z.detach()).entropy()
    return (*scores, model.soft_embeddings(z.to(model.dtype))) if with_sc else scores


def chunked_head_scores(
    model: DiffusionGemma, hidden: torch.Tensor, temperature: torch.Tensor, draws: torch.Tensor,
    chunk_elements: int, with_sc: bool = False,
) -> tuple[torch.Tensor, ...]:
    """``head_scores`` of a chunk of canvases at a time, each under activation checkpointing when grad is on,
    so at most ``chunk_elements`` logits (and their temporaries) exist at once in forward and in backward."""
    score = functools.partial(head_scores, model, with_sc=with_sc)
    parts = [
        checkpoint(score, hidden[rows], temperature[rows], draws[rows], use_reentrant=False)
        if torch.is_grad_enabled() else score(hidden[rows], temperature[rows], draws[rows])
        for rows in row_chunks(hidden.shape[0], hidden.shape[1] * model.lm_head.out_features, chunk_elements)
    ]
    return tuple(torch.cat(field) for field in zip(*parts, strict=True))


def replay_block(
    model: DiffusionGemma, traj: Trajectory, run: UniformTrajectory, block: int, at: torch.Tensor,
    rows: torch.Tensor, chunk_elements: int = LOGIT_CHUNK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the recorded draws and entropies, ``[len(at), len(rows), L]``, at steps ``at`` of ``block``.

    The context's cache repeated row-major for the steps, one decoder call on the recorded
    canvases with the recorded SC embeddings, logits divided by each step's temperature
    (the head chunked over canvases).
    """
    ctx, n, length = encode_context(model, traj, run, block, rows), len(at), run.step_canvas.shape[-1]
    ctx.cache.batch_repeat_interleave(n)

    def row_major(recorded: torch.Tensor) -> torch.Tensor:  # [T, B, ...] → [R·n, ...], a row's steps adjacent
        picked = recorded[at][:, rows].transpose(0, 1)
        return picked.reshape(-1, *picked.shape[2:])

    mask = None if ctx.decoder_mask is None else ctx.decoder_mask.repeat_interleave(n, 0)
    hidden = model.decode(row_major(run.step_canvas), ctx.cache, row_major(run.step_sc), attention_mask=mask,
                          position_ids=ctx.positions, before_head=True)  # fmt: skip
    scores = chunked_head_scores(model, hidden, run.step_temperature[at].repeat(len(rows)),
                                 row_major(run.step_sample), chunk_elements)  # fmt: skip
    return tuple(values.view(len(rows), n, length).transpose(0, 1) for values in scores)


def replay_block_exact(
    model: DiffusionGemma, traj: Trajectory, run: UniformTrajectory, block: int, at: torch.Tensor,
    rows: torch.Tensor, chunk_elements: int = LOGIT_CHUNK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``replay_block`` with θ's own SC: the block's steps decoded one after another up to the last of
    ``at``, each conditioned on the previous step's θ logits (gradient through the chain), as the
    sampler ran them. Exact for the recorded accepted sets and stop step; one decoder pass per step."""
    ctx = encode_context(model, traj, run, block, rows)
    wanted = set(at.tolist())
    steps = [t for t in (run.step_block == block).nonzero()[:, 0].tolist() if t <= max(wanted)]
    sc, out = None, []
    for t in steps:
        hidden = model.decode(run.step_canvas[t, rows], ctx.cache, sc, attention_mask=ctx.decoder_mask,
                              position_ids=ctx.positions, before_head=True)  # fmt: skip
        *scores, sc = chunked_head_scores(model, hidden, run.step_temperature[t].expand(len(rows)),
                                          run.step_sample[t, rows], chunk_elements, with_sc=True)  # fmt: skip
        if t in wanted:
            out.append(scores)
    return torch.stack([lp for lp, _ in out]), torch.stack([ent for _, ent in out])


def _record(traj: Trajectory) -> UniformTrajectory:
    if traj.renoise is None:
        raise ValueError("the renoise replay needs uniform-noise rollouts sampled with record=True (DiffusionGemma)")
    return traj.renoise
