"""The SFT losses on hand-built batches: each weighting and normalisation against values worked out by hand."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from unmask.diffusion.process import DiffusionProcess
from unmask.models import Dream, DreamConfig, tiny
from unmask.models.sdar import tiny_sdar
from unmask.rl.estimators import ElboEstimator, sequence_elbo
from unmask.rollouts.trajectory import Trajectory
from unmask.sft.loss import (
    LossSettings,
    ProcessCorruption,
    RowRandom,
    SFTBatch,
    cart_weights,
    denominator,
    family_corruption,
    loss_terms,
    sft_loss,
)

LN8 = math.log(8)
SMALL = {"d_model": 32, "n_heads": 2, "n_layers": 1, "mlp_hidden_size": 64}


@dataclass
class Injected:
    """A corruption with a fixed noise pattern and uniform logits over V = 8, so every CE is ln 8."""

    noised: torch.Tensor

    def corrupt(self, batch: SFTBatch, t: torch.Tensor, rand: RowRandom) -> torch.Tensor:
        return self.noised & batch.supervised

    def answer_logits(self, model: object, batch: SFTBatch, noised: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*batch.answer_ids.shape, 8)


def batch_of(supervised: list[list[bool]]) -> SFTBatch:
    sup = torch.tensor(supervised)
    rows, length = sup.shape
    return SFTBatch(torch.ones(rows, 1, dtype=torch.long), torch.ones(rows, 1, dtype=torch.bool),
                    torch.zeros(rows, length, dtype=torch.long), sup, sup.clone())


def stub_loss(batch: SFTBatch, noised: list[list[bool]], t: list[float], **settings: object) -> float:
    terms = loss_terms(None, batch, RowRandom.keyed([0] * len(batch)), LossSettings(**settings),
                       Injected(torch.tensor(noised)), t=torch.tensor(t)[:, None])
    return float(terms.numerator.detach()) / denominator(batch, LossSettings(**settings).normalization)


def test_each_normalisation_gives_the_hand_computed_value() -> None:
    # windows L = (4, 2), t = (0.5, 0.5), two noised positions per row; each noised CE/t = 2 ln 8
    batch = batch_of([[True] * 4, [True, True, False, False]])
    noised = [[True, True, False, False], [True, True, False, False]]
    # sequence: mean over rows of (2 · 2 ln 8) / L_i = mean(ln 8, 2 ln 8) = 1.5 ln 8 = 3.1192
    assert stub_loss(batch, noised, [0.5, 0.5], normalization="sequence") == pytest.approx(1.5 * LN8)
    assert round(1.5 * LN8, 4) == 3.1192
    # token: (4 ln 8 + 4 ln 8) / 6 supervised positions = (4/3) ln 8 = 2.7726
    assert stub_loss(batch, noised, [0.5, 0.5], normalization="token") == pytest.approx(4 / 3 * LN8)
    # batch: per-row sums over the 2 rows = 8 ln 8 / 2 = 4 ln 8
    assert stub_loss(batch, noised, [0.5, 0.5], normalization="batch") == pytest.approx(4 * LN8)
    # no weighting, token: 4 noised positions × ln 8 / 6 = (2/3) ln 8
    assert stub_loss(batch, noised, [0.5, 0.5], normalization="token", weighting="none") == pytest.approx(2 / 3 * LN8)


def test_equal_windows_make_sequence_and_token_agree() -> None:
    # L = (4, 4), noised counts (2, 1), t = (0.5, 0.25): row sums 2 ln8/0.5 = 4 ln 8 and ln8/0.25 = 4 ln 8
    batch = batch_of([[True] * 4, [True] * 4])
    noised = [[True, True, False, False], [False, False, True, False]]
    for normalization in ("sequence", "token"):  # both (8 ln 8) / 8 = ln 8 = 2.0794
        assert stub_loss(batch, noised, [0.5, 0.25], normalization=normalization) == pytest.approx(LN8)


def test_cart_weights_of_the_hand_example() -> None:
    # [q0, a0, a1, a2], p = 0.3. Only a1 noised: clean q0 (distance 2: 0.3·0.7), a0 and a2 (distance 1: 0.3)
    # → ½ (0.21 + 0.3 + 0.3) = 0.405. All of a0..a2 noised: only q0 is clean, at distances 1, 2, 3
    # → ½ (0.3, 0.21, 0.147) = (0.15, 0.105, 0.0735)
    batch = batch_of([[True] * 3])
    one = cart_weights(batch, torch.tensor([[False, True, False]]), 0.3)
    assert one.tolist()[0] == pytest.approx([0.0, 0.405, 0.0])
    every = cart_weights(batch, torch.tensor([[True, True, True]]), 0.3)
    assert every.tolist()[0] == pytest.approx([0.15, 0.105, 0.0735])
    # the loss, token-normalised over 3 positions: 0.405 · ln 8 / 3 = 0.2807
    loss = stub_loss(batch, [[False, True, False]], [0.5], weighting="cart", normalization="token")
    assert loss == pytest.approx(0.405 * LN8 / 3) and loss == pytest.approx(0.2807, abs=1e-4)


def test_cart_ignores_left_padding() -> None:
    batch = batch_of([[True] * 3])
    padded = SFTBatch(torch.zeros(1, 4, dtype=torch.long), torch.tensor([[False, False, False, True]]),
                      batch.answer_ids, batch.supervised, batch.answer_attention)
    noised = torch.tensor([[True, True, True]])
    assert torch.equal(cart_weights(padded, noised, 0.3), cart_weights(batch, noised, 0.3))


def rows_batch(model, prompts: list[list[int]], answers: list[list[int]], pads: int = 0) -> SFTBatch:
    """Left-padded prompts (plus ``pads`` extra pad columns) and full answer windows."""
    width = max(map(len, prompts)) + pads
    ids = torch.full((len(prompts), width), model.pad_token_id)
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt):] = torch.tensor(prompt)
        mask[i, width - len(prompt):] = True
    answer = torch.tensor(answers)
    return SFTBatch(ids, mask, answer, torch.ones_like(answer, dtype=torch.bool), seeds=list(range(len(prompts))))


class Recording:
    """Wraps a model and keeps the inputs of its last forward."""

    def __init__(self, model) -> None:
        self.model, self.seen = model, None

    def __call__(self, ids: torch.Tensor, **kwargs: object) -> torch.Tensor:
        self.seen = ids.clone()
        return self.model(ids, **kwargs)


def test_prompt_is_never_noised_even_at_t_one() -> None:
    model = tiny(SMALL, seed=0)
    batch = rows_batch(model, [[5, 6, 7], [8, 9]], [[10, 11, 12, 1], [13, 14, 1, 1]])
    recorder = Recording(model)
    terms = loss_terms(recorder, batch, RowRandom.keyed(batch.seeds), LossSettings(), family_corruption(model),
                       t=torch.ones(2, 1))
    plen = batch.prompt_ids.shape[1]
    assert torch.equal(recorder.seen[:, :plen], batch.prompt_ids)
    assert (recorder.seen[:, plen:] == model.mask_token_id).all()
    assert terms.noised == 8  # every answer position, and nothing else


def test_loss_does_not_change_with_left_padding() -> None:
    model = tiny(SMALL, seed=0)
    for weighting in ("elbo", "cart"):
        settings = LossSettings(weighting=weighting)
        plain = rows_batch(model, [[5, 6, 7]], [[10, 11, 12, 1]])
        padded = rows_batch(model, [[5, 6, 7]], [[10, 11, 12, 1]], pads=5)
        a = sft_loss(model, plain, RowRandom.keyed([9]), settings, family_corruption(model))
        b = sft_loss(model, padded, RowRandom.keyed([9]), settings, family_corruption(model))
        assert float(a) == pytest.approx(float(b), abs=1e-6)


def small_dream() -> Dream:
    config = DreamConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=40, mask_token_id=39, pad_token_id=38, eos_token_id=38)
    model = Dream(config)
    model.init_weights(1)
    return model


@dataclass(frozen=True)
class HandShifted(ProcessCorruption):
    """Raw Dream outputs (no adapter shift), moved one column right by hand ``shifts`` times."""

    shifts: int = 1

    def answer_logits(self, model, batch: SFTBatch, noised: torch.Tensor) -> torch.Tensor:
        plen, length = batch.prompt_ids.shape[1], batch.answer_ids.shape[1]
        noisy = self.process.corrupt(batch.answer_ids, noised)
        ids = torch.cat([batch.prompt_ids, noisy], 1)
        model.logit_shift = 0  # an instance attribute: the raw outputs, output i predicting token i + 1
        try:
            raw = model.logits(ids, attention_mask=torch.cat([batch.prompt_mask, batch.window_attention], 1))
        finally:
            del model.logit_shift
        return raw[:, plen - self.shifts : plen + length - self.shifts]


def test_dream_loss_reads_adapter_logits_without_shifting_again() -> None:
    model = small_dream()
    batch = rows_batch(model, [[5, 6, 7]], [[10, 11, 12, 13, 14, 15, 16, 38]])
    for weighting in ("cart", "elbo"):
        settings = LossSettings(weighting=weighting, normalization="token")
        adapter = sft_loss(model, batch, RowRandom.keyed([5]), settings, family_corruption(model))
        by_hand = sft_loss(model, batch, RowRandom.keyed([5]), settings, HandShifted(model.process))
        twice = sft_loss(model, batch, RowRandom.keyed([5]), settings, HandShifted(model.process, shifts=2))
        assert float(adapter) > 0 and float(adapter) == pytest.approx(float(by_hand), abs=1e-6)
        assert abs(float(twice) - float(adapter)) > 1e-3


@pytest.mark.parametrize("normalization", ["token", "sequence"])
def test_accumulation_layout_leaves_the_gradient_unchanged(normalization: str) -> None:
    model = tiny(SMALL, seed=0)
    full = rows_batch(model, [[5, 6, 7], [8, 9], [7], [6, 5, 4, 3]],
                      [[10, 11, 1, 1], [13, 1, 1, 1], [12, 12, 12, 1], [11, 1, 1, 1]])
    full.supervised[1, 3] = False  # unequal supervised lengths, so token and sequence differ
    settings = LossSettings(normalization=normalization)
    corruption = family_corruption(model)

    def gradient(parts: list[list[int]]) -> torch.Tensor:
        model.zero_grad()
        total = denominator(full, normalization)
        for part in parts:
            index = torch.tensor(part)
            sub = SFTBatch(full.prompt_ids[index], full.prompt_mask[index], full.answer_ids[index],
                           full.supervised[index], seeds=[full.seeds[i] for i in part])
            keep = sub.prompt_mask.any(0)  # each micro-batch pads only to its own longest prompt
            sub = SFTBatch(sub.prompt_ids[:, keep], sub.prompt_mask[:, keep], sub.answer_ids, sub.supervised, seeds=sub.seeds)
            (loss_terms(model, sub, RowRandom.keyed(sub.seeds), settings, corruption).numerator / total).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    one = gradient([[0, 1, 2, 3]])
    two = gradient([[0, 1], [2, 3]])
    assert torch.allclose(one, two, atol=1e-6)
    assert one.abs().sum() > 0


def test_block_family_scores_each_noisy_block_against_clean_earlier_blocks() -> None:
    # SDAR's process reads [x_t ; x_0]: a noisy answer token of block b sees noisy block b and the clean
    # blocks before it. By hand: one block-causal stream of the clean tokens before block b followed by
    # noisy block b gives the same logits. Blocks of 4 count from the row's first token (prompt included).
    model = tiny_sdar()
    batch = rows_batch(model, [[5, 6, 7]], [[10, 11, 12, 13, 14, 15, 16, 62]])
    noised = torch.tensor([[True, False, True, False, True, True, False, True]])
    got = family_corruption(model).answer_logits(model, batch, noised)
    clean = torch.cat([batch.prompt_ids, batch.answer_ids], 1)
    noisy = torch.cat([batch.prompt_ids, model.process.corrupt(batch.answer_ids, noised)], 1)
    for j in range(batch.answer_ids.shape[1]):
        column = 3 + j
        start = column // 4 * 4
        canvas = torch.cat([clean[:, :start], noisy[:, start : start + 4]], 1)
        assert torch.allclose(got[:, j], model.logits(canvas)[:, column], atol=1e-5)
    loss = sft_loss(model, batch, RowRandom.keyed([5]), LossSettings(normalization="token"), family_corruption(model))
    loss.backward()
    assert torch.isfinite(loss) and float(loss) > 0


class FixedDraw(ElboEstimator):
    """The RL ELBO estimator with given ratios and mask instead of its own draw."""

    def __init__(self, process: DiffusionProcess, t: torch.Tensor, noised: torch.Tensor) -> None:
        super().__init__(process)
        self.t, self.noised = t, noised

    def draw(self, traj: Trajectory, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.t, self.noised


@dataclass(frozen=True)
class GivenNoise(ProcessCorruption):
    """The family's forward on a given noise pattern."""

    noised: torch.Tensor | None = None

    def corrupt(self, batch: SFTBatch, t: torch.Tensor, rand: RowRandom) -> torch.Tensor:
        return self.noised


def test_loss_is_minus_the_rl_elbo_estimate_on_the_same_mask() -> None:
    model = tiny(SMALL, seed=0)
    batch = rows_batch(model, [[5, 6, 7], [8, 9]], [[10, 11, 12, 1], [13, 14, 1, 1]])
    t, noised = torch.tensor([[0.5], [0.25]]), torch.tensor([[True, False, True, True], [False, True, False, True]])
    terms = loss_terms(model, batch, RowRandom.keyed([0, 1]), LossSettings(normalization="batch"),
                       GivenNoise(model.process, noised=noised), t=t)
    traj = Trajectory(
        tokens=torch.cat([batch.prompt_ids, batch.answer_ids], 1),
        attention_mask=torch.cat([batch.prompt_mask, batch.supervised], 1), prompt_length=batch.prompt_ids.shape[1],
        answer_mask=batch.supervised, commit_step=torch.zeros(2, 4, dtype=torch.long),
        hint_mask=torch.zeros(2, 4, dtype=torch.bool), nfe=torch.ones(2),
    )
    elbo = sequence_elbo(FixedDraw(model.process, t[:, 0], noised).token_logprobs(model, traj, 0))
    # batch normalisation: Σ_i Σ_{M_i} CE/t_i over B rows; the estimator: Σ_{M_i} log p / t_i per row
    assert float(terms.numerator) / 2 == pytest.approx(-float(elbo.mean()), abs=1e-5)
    assert float(elbo.abs().min()) > 0
