"""The shipped accelerate configs parse with accelerate and name real unmask classes."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig

import unmask.models as models
import unmask.models.qwen  # noqa: F401  (models.qwen)
from unmask.cli import recipes_dir
from unmask.models.sdar import tiny_sdar

CONFIGS = sorted((recipes_dir() / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads(path: Path) -> None:
    config = ClusterConfig.from_yaml_file(path)
    assert config.num_processes >= 1
    assert config.mixed_precision == "bf16"


def test_fsdp_wraps_existing_block_classes() -> None:
    config = ClusterConfig.from_yaml_file(recipes_dir() / "accelerate" / "fsdp.yaml")
    names = config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")
    block_classes = {cls.__name__ for module in (models.llada, models.dream, models.qwen)
                     for cls in vars(module).values() if isinstance(cls, type)}
    assert set(names) <= block_classes
    assert type(tiny_sdar().blocks[0]).__name__ in names  # Dream and SDAR share the Qwen layer
