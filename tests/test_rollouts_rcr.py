"""Running Confidence Remasking on a model whose confidences are set by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from unmask.models.base import DiffusionLM
from unmask.rollouts.generate import generate

MASK, EOS, VOCAB = 7, 6, 8


class HandSetModel(DiffusionLM):
    """Predicts token ``1 + (pos + n) % 5`` with a chosen probability at answer position ``pos``.

    ``n`` is the number of answer positions already filled: on an all-masked answer
    the confidences are ``[.9, .8, .3, .2]``, afterwards ``[.99, .97, .96, .95]``, so
    the token committed first (at .9) ends up the least confident one.
    """

    def __init__(self, prompt_length: int) -> None:
        super().__init__(SimpleNamespace(mask_token_id=MASK, eos_token_id=EOS))
        self.prompt_length = prompt_length

    def logits(self, input_ids, attention_mask=None, positions=None, prompt_length=None):
        answer = input_ids[:, self.prompt_length :]
        filled = (answer != MASK).sum(1, keepdim=True)
        first = torch.tensor([0.9, 0.8, 0.3, 0.2])
        later = torch.tensor([0.99, 0.97, 0.96, 0.95])
        conf = torch.where(filled == 0, first, later).double()  # [B, 4]
        token = 1 + (torch.arange(4) + filled) % 5
        out = ((1 - conf) / (VOCAB - 2)).log().unsqueeze(-1).repeat(1, 1, VOCAB)
        out.scatter_(-1, token.unsqueeze(-1), conf.log().unsqueeze(-1))
        full = torch.zeros(*input_ids.shape, VOCAB, dtype=torch.float64)
        full[:, self.prompt_length :] = out
        return full


PROMPT = torch.tensor([[1, 2, 3]])


def test_rcr_remasks_a_committed_token_and_keeps_the_schedule():
    traj = generate(HandSetModel(3), PROMPT, gen_length=4, steps=4, block_length=4, remasking="rcr", record=True)
    masked = traj.step_masked[:, 0]  # [T, L]
    assert masked.sum(-1).tolist() == [4, 3, 2, 1]
    assert not masked[1, 0] and masked[2, 0]  # kept after step 0, re-masked after step 1
    assert traj.step_pred[0, 0, 0] == 1 and traj.answer_ids[0, 0] == 3  # re-predicted with 2 filled
    assert traj.commit_step[0].tolist() == [2, 1, 1, 3]
    assert math.isclose(float(traj.step_confidence[1, 0, 0]), 0.9, rel_tol=1e-3)  # buffer persisted


def test_rcr_buffer_persists_across_blocks():
    traj = generate(HandSetModel(3), PROMPT, gen_length=4, steps=4, block_length=2, remasking="rcr", record=True)
    masked = traj.step_masked[:, 0]
    assert masked.sum(-1).tolist() == [4, 3, 2, 1]
    assert not masked[2, 0] and masked[3, 0]  # block 0's first token re-masked during block 1


def test_low_confidence_never_remasks():
    traj = generate(HandSetModel(3), PROMPT, gen_length=4, steps=4, block_length=4, record=True)
    masked = traj.step_masked[:, 0]
    assert (masked[:-1] >= masked[1:]).all()
    assert traj.commit_step[0].tolist() == [0, 1, 2, 3]


def test_rcr_confidence_is_pluggable():
    least_sure_first = generate(
        HandSetModel(3), PROMPT, gen_length=4, steps=4, block_length=4, remasking="rcr",
        confidence=lambda stats, rand: -stats.confidence, record=True,
    )
    assert least_sure_first.step_masked[1, 0].tolist() == [True, True, True, False]
