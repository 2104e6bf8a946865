"""A plain transcription of docs/sampling.md §1, the parity oracle for the rollout engine.

Deliberately unoptimised and independent of ``unmask.rollouts``: one full-canvas
forward per step, softmax of the raw logits for the confidence, ``torch.topk``
per row. One addition to §1: the mask token is excluded from the predictions.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def reference_generate(
    model, prompt: torch.Tensor, *, gen_length: int, steps: int, block_length: int, cfg_scale: float = 0.0
) -> torch.Tensor:
    """Greedy (τ = 0) low-confidence decoding of equal-length prompts ``[B, P]``."""
    mask_id = model.mask_token_id
    batch, plen = prompt.shape
    x = torch.full((batch, plen + gen_length), mask_id, dtype=torch.long)
    x[:, :plen] = prompt
    prompt_index = x != mask_id
    num_blocks = gen_length // block_length
    block_steps = max(1, steps // num_blocks)
    for block in range(num_blocks):
        start, end = plen + block * block_length, plen + (block + 1) * block_length
        m = (x[:, start:end] == mask_id).sum(1)
        counts = torch.zeros(batch, block_steps, dtype=torch.long)
        for row in range(batch):
            for i in range(block_steps):
                counts[row, i] = m[row] // block_steps + (1 if i < m[row] % block_steps else 0)
        for i in range(block_steps):
            mask_index = x == mask_id
            if cfg_scale > 0:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                cond, un = model.logits(x), model.logits(un_x)
                logits = un + (cfg_scale + 1) * (cond - un)
            else:
                logits = model.logits(x)
            logits[..., mask_id] = float("-inf")  # the engine never predicts [MASK]
            x0 = logits.argmax(-1)
            p = torch.softmax(logits.double(), dim=-1)
            x0_p = torch.gather(p, -1, x0.unsqueeze(-1)).squeeze(-1)
            x0_p[:, end:] = float("-inf")
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, torch.tensor(float("-inf"), dtype=torch.float64))
            transfer = torch.zeros_like(x0, dtype=torch.bool)
            for row in range(batch):
                k = int(counts[row, i])
                if k > 0:
                    transfer[row, torch.topk(confidence[row], k=k).indices] = True
            x[transfer] = x0[transfer]
    return x


def random_tiny(seed: int = 0, scale: float = 0.5):
    """A small tiny-family model with large random weights, so its predictions vary.

    A freshly initialised tiny model predicts nearly the same token everywhere;
    redrawing its weights gives position-dependent, non-degenerate confidences
    (fewer ties), which is what parity and strategy tests need.
    """
    from unmask.models.tiny import tiny

    model = tiny({"d_model": 32, "n_heads": 2, "n_layers": 2, "mlp_hidden_size": 64}, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return model
