"""``unmask pretrain``: ``unmask sft`` on the recipe that builds the shipped tiny model, reproducibly."""

from __future__ import annotations

from pathlib import Path

import pytest

from unmask.assets import builtin_path
from unmask.assets.ship import HASH_FILE, WEIGHTS, sha256_file
from unmask.cli import PRETRAIN_RECIPE, main, resolve_recipe_path
from unmask.errors import UserError
from unmask.models.generation import GENERATION_CONFIG
from unmask.sft.config import load_sft_recipe

SHIPPED = builtin_path("builtin:tiny-countdown")
#: two optimizer steps on a few hundred generated problems: the build's path, in seconds
QUICK = ["optim.max_steps=2", "optim.lr_scheduler_kwargs.num_decay_steps=1", "optim.warmup_steps=1",
         "optim.per_device_train_batch_size=8", "data.generator.size=400", "eval.after=false"]  # fmt: skip


def _pretrain(out: Path, *overrides: str) -> Path:
    assert main(["pretrain", *QUICK, f"output_dir={out}", *overrides]) == 0
    return out / "final"


def test_pretrain_is_sft_on_the_build_recipe_with_identical_bytes_per_seed(tmp_path: Path) -> None:
    a, b, c = _pretrain(tmp_path / "a"), _pretrain(tmp_path / "b"), _pretrain(tmp_path / "c", "seed=1")
    weights = {name: (path / "model.safetensors").read_bytes() for name, path in zip("abc", (a, b, c), strict=True)}
    assert weights["a"] == weights["b"] and weights["a"] != weights["c"]
    # the shipped model's architecture and decoding defaults are what the build writes
    for name in ("config.json", GENERATION_CONFIG):
        assert (a / name).read_bytes() == (SHIPPED / name).read_bytes(), name


def test_the_build_recipe_trains_from_scratch_on_careless_demonstrations() -> None:
    recipe = load_sft_recipe(resolve_recipe_path(PRETRAIN_RECIPE))
    assert recipe.model.name_or_path == "new:tiny" and not recipe.lora.enabled
    assert recipe.data.careless_fraction == 0.3  # the habit the default run's RL removes (docs/default-run.md)


def test_builtin_path_names_the_shipped_checkpoints() -> None:
    with pytest.raises(UserError, match="no such built-in checkpoint"):
        builtin_path("builtin:nope")


def test_shipped_weights_match_their_sha256() -> None:
    assert (SHIPPED / HASH_FILE).read_text().split()[0] == sha256_file(SHIPPED / WEIGHTS)
