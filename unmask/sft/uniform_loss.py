"""DiffusionGemma's SFT objective: flat CE over a uniformly noised canvas plus the encoder's next-token CE.

Google's published recipe (docs/diffusion-gemma.md, "SFT"): per row a ratio
``t ~ U[ε, 1 − ε]``; each supervised answer slot is replaced, with probability ``t``,
by an id drawn uniformly over the whole vocabulary; the decoder's cross-entropy is
taken at *every* supervised slot, noised or not, with no 1/t weight (so it is not an
ELBO); the encoder, run causally over prompt + clean answer, adds its next-token CE on
the answer at weight 1, and the denoiser's gradient reaches the encoder through the
cache. Self-conditioning is trained two-pass: for a row drawn with probability
``sc_probability`` (½), a first decoder pass without gradient gives the SC input of
the scored pass; other rows get zero SC, as at a sampler's first step.

An answer window of several canvases is decoded canvas by canvas, each against the
cache of the prompt and the clean canvases before it (what the sampler commits).
Positions count from each row's first real token, so left padding changes nothing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unmask.errors import UserError
from unmask.models.base import positions_from_mask
from unmask.sft.loss import LossSettings, LossTerms, RowRandom, SFTBatch, row_sums


@dataclass(frozen=True)
class UniformCanvasLoss:
    """The ``OwnLoss`` of the uniform-noise process (``unmask.sft.loss.family_corruption`` picks it)."""

    #: share of rows whose scored pass is self-conditioned on a first, gradient-free pass
    sc_probability: float = 0.5

    def terms(
        self, model: nn.Module, batch: SFTBatch, rand: RowRandom, settings: LossSettings, t: torch.Tensor | None
    ) -> LossTerms:
        """``numerator`` = canvas CE + encoder CE, normalised; ``elbo_sum`` holds the flat canvas CE
        (there is no ELBO), ``ce_sum`` the canvas CE at the noised slots."""
        if settings.weighting != "none":
            raise UserError(f"sft.weighting: {settings.weighting} does not apply to DiffusionGemma, whose published "
                            "loss is the unweighted canvas CE; set sft.weighting: none (or auto)")
        # every encode/decode call inside ONE forward of the wrapper, so DDP syncs their gradients
        return model(within=functools.partial(self._terms, batch=batch, rand=rand, settings=settings, t=t))

    def _terms(
        self, model: nn.Module, batch: SFTBatch, rand: RowRandom, settings: LossSettings, t: torch.Tensor | None
    ) -> LossTerms:
        length = batch.answer_ids.shape[1]
        if t is None:
            t = settings.epsilon + (1 - 2 * settings.epsilon) * rand.uniform(1)
        t = t.to(batch.answer_ids.device)
        noised = (rand.uniform(length).to(t.device) < t) & batch.supervised
        vocab = model.text_config.vocab_size
        ids = (rand.uniform(length) * vocab).long().clamp(max=vocab - 1).to(t.device)
        canvas = torch.where(noised, ids, batch.answer_ids)
        use_sc = (rand.uniform(1)[:, 0] < self.sc_probability).to(t.device)
        canvas_logits, encoder_logits = self.logits(model, batch, canvas, use_sc)
        canvas_ce = cross_entropy(canvas_logits, batch.answer_ids) * batch.supervised
        encoder_ce = cross_entropy(encoder_logits, batch.answer_ids) * batch.supervised
        numerator = row_sums(canvas_ce + encoder_ce, batch, settings.normalization)
        return LossTerms(numerator, float(canvas_ce.detach().sum()), float((canvas_ce * noised).detach().sum()),
                         int(noised.sum()))

    @staticmethod
    def logits(
        model: nn.Module, batch: SFTBatch, canvas: torch.Tensor, use_sc: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(decoder logits of the noised canvases, encoder next-token logits of the answer)``, both ``[B, L, V]``."""
        plen, length = batch.prompt_ids.shape[1], batch.answer_ids.shape[1]
        size = model.config.canvas_length
        if plen == 0:
            raise UserError("DiffusionGemma SFT needs a prompt for its encoder: give prompt/completion rows and "
                            "keep sft.completion_only_loss true")
        if length % size:
            raise UserError(f"sft.answer_length: {length} must be a multiple of DiffusionGemma's canvas_length ({size})")
        attention = torch.cat([batch.prompt_mask, batch.window_attention], dim=1)
        positions = positions_from_mask(attention)
        cache, hidden = model.encode(batch.prompt_ids, None, attention[:, :plen], positions[:, :plen])
        hiddens, decoded = [hidden], []
        for start in range(plen, plen + length, size):
            end = start + size
            noisy, seen, where = canvas[:, start - plen : end - plen], attention[:, :end], positions[:, start:end]
            sc = None
            if bool(use_sc.any()):
                with torch.no_grad():
                    sc = model.soft_embeddings(model.decode(noisy, cache, attention_mask=seen, position_ids=where))
            decoded.append(model.decode(noisy, cache, sc, use_sc, attention_mask=seen, position_ids=where))
            clean = batch.answer_ids[:, start - plen : end - plen]
            hiddens.append(model.encode(clean, cache, seen, where)[1])
        encoder_hidden = torch.cat(hiddens, dim=1)[:, plen - 1 : plen + length - 1]
        return torch.cat(decoded, dim=1), model.head(encoder_hidden)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` per-position CE of ``[B, L, V]`` logits."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view(targets.shape)
