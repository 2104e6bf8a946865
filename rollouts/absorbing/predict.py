"""An absorbing-mask step's prediction: the step's scope and work, its draws, the forward (``rollouts.predict``)."""

from __future__ import annotations

import torch

from unmask.rollouts.absorbing.state import MaskedCanvas
from unmask.rollouts.draws import RowDraws
from unmask.rollouts.predict import Predictor
from unmask.rollouts.rules.base import DecodingRule, Step


class MaskedPredict:
    """Step ``i`` of the round, or ``None`` when a data-decided rule's round has no scope left."""

    def __init__(self, canvas: MaskedCanvas, rule: DecodingRule, predictor: Predictor, draws: RowDraws | None,
                 *, passes: int, record_all: bool) -> None:
        self.canvas, self.rule, self.predictor, self.draws = canvas, rule, predictor, draws
        self.passes = passes  # forward passes per step (two with CFG)
        self.record_all = record_all

    def __call__(self, i: int) -> Step | None:
        c = self.canvas
        scope = self.rule.scope(c.masked, c.in_reach)
        predict = scope | c.masked if self.record_all else scope
        if c.plan is None:  # a data-decided rule: one read of the step's work, and of the forward's count
            ahead = self.predictor.read_ahead(c.answer, predict, c.span)
            wanted = [predict.any(1).sum()[None], predict.sum()[None], scope.any().long()[None]]
            n_rows, n_pred, any_scope, *counted = torch.cat(wanted + ([] if ahead is None else [ahead])).tolist()
            if self.rule.ends_when_done and not any_scope:
                return None
            work = (n_rows, n_pred, *counted)
        else:
            work = c.plan[i]
        c.nfe += self.passes * scope.any(1)
        uniforms = None if self.draws is None else self.draws.next()
        step, c.cached = self.predictor(i, c.answer, c.masked, scope, predict, work, uniforms, c.span)
        return step
