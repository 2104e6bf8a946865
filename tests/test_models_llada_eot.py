"""LLaDA-Instruct ends answers at end-of-turn as well as EOS; small random vocabularies do not."""

from __future__ import annotations

import torch

from unmask.models import LLaDA, LLaDAConfig


def _model(vocab: int) -> LLaDA:
    config = LLaDAConfig(d_model=8, n_heads=2, n_kv_heads=2, n_layers=1, mlp_hidden_size=16,
                         vocab_size=vocab, embedding_size=vocab, mask_token_id=vocab - 1,
                         eos_token_id=1, pad_token_id=1)
    with torch.device("meta"):
        return LLaDA(config)


def test_official_vocabulary_has_end_of_turn() -> None:
    assert _model(126464).eos_token_ids == (1, 126348)


def test_small_vocabulary_keeps_config_eos() -> None:
    assert _model(64).eos_token_ids == (1,)
