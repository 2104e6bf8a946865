"""`unmask export`: base + saved peft adapter → merged checkpoint with the same logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unmask.cli import main
from unmask.models import load_model, tiny
from unmask.models.lora import apply_lora


def test_export_merges_adapter(tmp_path: Path) -> None:
    base = tiny(seed=0)
    base.save_pretrained(tmp_path / "base")
    policy = apply_lora(tiny(seed=0), r=4, alpha=8)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    policy.save_pretrained(tmp_path / "adapter")
    ids = torch.randint(0, 100, (2, 12))
    expected = policy(ids)

    code = main(["export", "--model", str(tmp_path / "base"), "--adapter", str(tmp_path / "adapter"),
                 "--out", str(tmp_path / "merged")])
    assert code == 0
    merged = load_model(tmp_path / "merged")
    assert torch.allclose(merged.logits(ids), expected, atol=1e-5)
    assert not torch.allclose(base.logits(ids), expected, atol=1e-3)


def test_export_rejects_non_adapter_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny(seed=0).save_pretrained(tmp_path / "base")
    (tmp_path / "empty").mkdir()
    code = main(["export", "--model", str(tmp_path / "base"), "--adapter", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "m")])
    assert code == 2
    assert "adapter_config.json" in capsys.readouterr().err
