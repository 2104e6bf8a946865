"""The FLOP counter agrees with torch's own count of the matrix products actually run."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from unmask.models import Dream, DreamConfig, tiny
from unmask.rollouts.flops import forward_flops


def measured(call) -> int:
    # the math SDPA backend runs attention as matmuls, which the counter sees
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        call()
    return counter.get_total_flops()


@pytest.mark.parametrize("family", ["tiny", "dream"])
def test_full_and_partial_forwards_match_torch_count(family) -> None:
    if family == "tiny":
        model = tiny({"d_model": 32, "n_heads": 2, "n_layers": 2, "mlp_hidden_size": 64})
    else:  # grouped-query heads: k/v projections are narrower
        config = DreamConfig(
            hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=40, mask_token_id=39, eos_token_id=38,
        )  # fmt: skip
        model = Dream(config).eval()
    ids = torch.randint(0, 30, (1, 12))
    cache = model.new_cache()
    with torch.no_grad():
        full = measured(lambda: model.logits(ids, cache=cache))
        block = torch.arange(8 - model.logit_shift, 12)  # Dream reads column 8's logits at 7
        partial = measured(
            lambda: model.logits(ids, columns=block, cache=cache, logits_at=torch.arange(8, 11))
        )
    assert forward_flops(model.dims, 12, 12, 12) == full
    # the last block outputs only the read columns
    assert forward_flops(model.dims, len(block), 12, 3, outputs=3) == partial
    assert partial < full / 2
