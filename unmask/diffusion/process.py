"""The interface every diffusion process implements (docs/diffusion.md).

Three processes exist in the field: absorbing ``[MASK]`` noise over one canvas
(LLaDA, Dream, tiny), the same noise over block-causal canvases with an exact KV
cache of finished blocks (SDAR, TraDo), and uniform-token noise with re-noising
(DiffusionGemma). They differ in exactly the questions below, so a sampler step,
``Trajectory.canvas`` and every likelihood estimator are written once against this
interface and a new process is one short file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Literal

import torch

from unmask.errors import UserError

if TYPE_CHECKING:
    from unmask.models.base import DiffusionLM

Attention = Literal["full", "prompt_blind", "block_causal"]


class DiffusionProcess(ABC):
    """How text is corrupted, the attention pattern, and the training forward.

    ``attention``: ``full`` (every token sees every token), ``prompt_blind`` (prompt
    queries see prompt keys only, so the prompt's keys/values never go stale) or
    ``block_causal`` (bidirectional inside blocks of ``block_size``, causal across).
    ``two_stream``: the training forward scores a noisy canvas against a clean copy
    ``[x_t ; x_0]`` instead of the noisy canvas alone.
    """

    name: str
    attention: Attention
    block_size: int | None = None
    two_stream: bool = False
    #: the sampler family that decodes this process (``rollouts/samplers.py``)
    sampler: ClassVar[str] = "masked"
    #: noise is a token the model reads (absorbing); False for uniform noise, where the
    #: estimators that corrupt a canvas with it are refused (``rl/objective.py``)
    mask_token: ClassVar[bool] = True

    @abstractmethod
    def noised(self, tokens: torch.Tensor) -> torch.Tensor:
        """Bool mask of the positions of ``tokens`` that still hold noise (to be decoded)."""

    @abstractmethod
    def corrupt(self, tokens: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """``tokens`` with noise written at the True positions of ``where`` (same shape)."""

    @abstractmethod
    def is_noise_token(self, tokens: torch.Tensor) -> torch.Tensor:
        """Bool mask of ids that no position may be committed to (e.g. the mask token)."""

    @abstractmethod
    def forbid_noise(self, logits: torch.Tensor) -> torch.Tensor:
        """A copy of ``logits [..., V]`` in which the noise token is impossible (differentiable)."""

    @abstractmethod
    def forbid_noise_(self, logits: torch.Tensor) -> torch.Tensor:
        """``forbid_noise`` in place, for the sampler's ``[N, V]`` logits (no second copy); returns them."""

    def answer_blocks(self, prompt_mask: torch.Tensor, gen_length: int, block_length: int) -> torch.Tensor:
        """``[B, L]`` long: the decoding round of each answer position (0 = decoded first).

        One canvas: semi-autoregressive blocks of ``block_length`` answer tokens,
        the same for every row. ``prompt_mask`` ``[B, P]`` marks real prompt tokens.
        """
        rounds = torch.arange(gen_length, device=prompt_mask.device) // block_length
        return rounds.expand(prompt_mask.shape[0], gen_length)

    def in_reach(self, answer_blocks: torch.Tensor, current: int) -> torch.Tensor:
        """Positions a step of round ``current`` may decode or re-mask: every round so far."""
        return answer_blocks <= current

    def blank(self, like: torch.Tensor) -> torch.Tensor:
        """A canvas shaped like ``like`` with every position noised (the sampler's start)."""
        return self.corrupt(like, torch.ones_like(like, dtype=torch.bool))

    def scoring_logits(
        self,
        model: DiffusionLM,
        noisy: torch.Tensor,
        clean: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prompt_length: int,
        **options: object,
    ) -> torch.Tensor:
        """Logits ``[B, P + L, V]`` of the noisy canvas, as training scores it.

        One stream: the noisy canvas alone (``clean`` is unused). Two-stream processes
        override this to score every block against clean earlier blocks. Called through
        the model's ``forward``, so DDP and peft wrappers see the call.
        """
        return model(noisy, attention_mask=attention_mask, prompt_length=prompt_length, **options)

    def two_stream_logits(self, model: DiffusionLM, noisy: torch.Tensor, clean: torch.Tensor,
                          attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The ``[x_t ; x_0]`` training forward; only block-causal processes define it."""
        raise UserError(
            f"the {self.name} process ({self.attention} attention) has no two-stream input: "
            "[x_t ; x_0] scoring needs a block-causal family such as SDAR"
        )
