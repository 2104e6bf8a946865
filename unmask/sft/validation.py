"""What an SFT run measures while it trains: a validation loss and held-out accuracy.

The validation loss scores the held-out rows at K fixed ratios ``t_k = (k − ½)/K``;
the noise of (row i, ratio k) comes from a generator seeded by (seed, i, k), so the
value is a function of the weights alone, whatever the evaluation batch size.
``val/elbo`` is the K-point estimate of the 1/t-weighted loss per supervised token
(the number comparable across families and weightings), ``val/ce@t`` the plain masked
cross-entropy at each ratio, and ``val/loss`` the training weighting when it is not
the ELBO's. Held-out accuracy runs the evaluator that ``unmask eval`` and the RL
trainer use, with greedy decoding of the answer window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from unmask.rl.trainer import derive_seed
from unmask.sft.data import Example
from unmask.sft.loss import RowRandom, denominator, loss_terms

if TYPE_CHECKING:
    from unmask.sft.trainer import SFTTrainer


def validation_loss(trainer: SFTTrainer, model: nn.Module, examples: list[Example]) -> dict[str, float]:
    """``val/elbo``, ``val/ce@t_k`` for each ratio and (for CART or no weighting) ``val/loss``."""
    from unmask.sft.trainer import VAL_NOISE

    points, size = trainer.recipe.eval.val_t_points, trainer.recipe.eval.batch_size
    settings, device = trainer.settings, trainer.accelerator.device
    out: dict[str, float] = {}
    elbo = loss = 0.0
    for k in range(points):
        ratio = (k + 0.5) / points
        elbo_sum = ce_sum = noised = tokens = numerator = total = 0.0
        for start in range(0, len(examples), size):
            rows = examples[start : start + size]
            seeds = [derive_seed(trainer.recipe.seed, VAL_NOISE, start + i, k) for i in range(len(rows))]
            batch = trainer.batch(rows, seeds).to(device)
            with torch.no_grad():
                terms = loss_terms(model, batch, RowRandom.keyed(seeds), settings, trainer.corruption,
                                   t=torch.full((len(rows), 1), ratio))
            elbo_sum, ce_sum, noised = elbo_sum + terms.elbo_sum, ce_sum + terms.ce_sum, noised + terms.noised
            tokens += float(batch.supervised.sum())
            numerator += float(terms.numerator)
            total += denominator(batch, settings.normalization)
        out[f"val/ce@{ratio:.3g}"] = ce_sum / max(noised, 1.0)
        elbo += elbo_sum / max(tokens, 1.0) / points
        loss += numerator / max(total, 1.0) / points
    out["val/elbo"] = elbo
    if settings.weighting != "elbo":
        out["val/loss"] = loss
    return out


def heldout_accuracy(trainer: SFTTrainer, model: nn.Module) -> dict[str, float]:
    """Greedy accuracy on the first ``eval.limit`` held-out problems of the fed RL recipe (its task,
    prompt and evaluation set; this recipe's without one), the mean answer length, the share that never
    ends inside the window, and the share the grader could parse."""
    from unmask.evaluation.runner import evaluate
    from unmask.run import eval_rows

    recipe, settings = trainer.recipe, trainer.eval_settings()
    source = trainer.fed or recipe
    rows = eval_rows(source)[: recipe.eval.limit]
    result = evaluate(model, rows, source.data.task, settings, batch_size=recipe.eval.batch_size,
                      seed=recipe.seed, chat_template=source.data.chat_template)
    records = result.records
    return {
        "accuracy": result.accuracy(),
        "answer_tokens": sum(r["answer_tokens"] for r in records) / len(records),
        "no_eos": sum(r["answer_tokens"] >= settings.gen_length for r in records) / len(records),
        "parsed": sum(r["extracted"] is not None for r in records) / len(records),
    }
