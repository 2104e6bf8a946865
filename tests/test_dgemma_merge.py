"""A trained tiny DiffusionGemma adapter merged by every merge site (``unmask eval --adapter``'s loader,
``unmask export``) decodes like the unmerged peft policy, and the merged model holds no peft wrapper
(docs/diffusion-gemma.md, "LoRA")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from test_diffusion_gemma_model import CANVAS, PROMPT, trained_policy

from unmask.cli import main
from unmask.evaluation.loading import load_eval_model
from unmask.models.diffusion_gemma import DiffusionGemma, tiny_diffusion_gemma
from unmask.models.loading import load_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    """``(directory with base/ and adapter/, the unmerged policy's decoder logits)``."""
    out = tmp_path_factory.mktemp("dgemma")
    model, policy = trained_policy()
    tiny_diffusion_gemma(0).save_pretrained(out / "base")
    policy.save_pretrained(out / "adapter")
    with torch.no_grad():
        return out, model.decode(CANVAS, model.encode(PROMPT)[0])


def decoded(model: DiffusionGemma) -> torch.Tensor:
    with torch.no_grad():
        return model.decode(CANVAS, model.encode(PROMPT)[0])


def test_eval_loader_merges_a_trained_adapter_into_the_tied_stack(saved) -> None:
    out, adapted = saved
    merged = load_eval_model(str(out / "base"), str(out / "adapter"))
    assert not any(isinstance(m, BaseTunerLayer) for m in merged.modules(remove_duplicate=False))
    assert merged.state_dict().keys() == load_model(out / "base").state_dict().keys()
    torch.testing.assert_close(decoded(merged), adapted, atol=1e-5, rtol=0)
    assert (decoded(load_eval_model(str(out / "base"))) - adapted).abs().max() > 1e-3  # the adapter matters


def test_export_cli_writes_a_checkpoint_that_decodes_like_the_adapter(saved) -> None:
    out, adapted = saved
    assert main(["export", "--model", str(out / "base"), "--adapter", str(out / "adapter"),
                 "--out", str(out / "merged")]) == 0  # fmt: skip
    merged = load_model(out / "merged")
    torch.testing.assert_close(decoded(merged), adapted, atol=1e-5, rtol=0)
    encoder = dict(merged.model.encoder.language_model.named_parameters())
    assert all(p is merged.model.decoder.get_parameter(name) for name, p in encoder.items())  # still one stack
