"""Parameter counts of real model configs and the trainable share of each GPU recipe, on the meta device.

    python bench/model_sizes.py [--models-dir ../shared/models] [--recipes recipes/llada recipes/dream]

Needs only ``config.json`` files (no weights, no memory): every number comes from
the native family the config loads into, wrapped the way the trainer wraps it.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from unmask.models.loading import meta_model, read_config
from unmask.models.native import CheckpointError
from unmask.recipe import load_recipe
from unmask.rl.trainer import lora_replica


def parameter_groups(folder: Path) -> Counter[str]:
    """Parameters per group: embedding + LM head, attention, MLP, norms (and biases)."""
    groups: Counter[str] = Counter()
    for name, p in meta_model(folder).named_parameters():
        leaf = name.rsplit(".", 2)[-2]
        if p.ndim == 1:
            groups["norms and biases"] += p.numel()
        elif leaf in ("wte", "embed_tokens", "lm_head") or name.endswith("transformer.ff_out.weight"):
            groups["embedding + LM head"] += p.numel()
        elif leaf in ("q_proj", "k_proj", "v_proj", "o_proj", "attn_out"):
            groups["attention"] += p.numel()
        else:
            groups["MLP"] += p.numel()
    return groups


def recipe_trainable(recipe_file: Path, folders: dict[str, Path]) -> tuple[str, int, int]:
    recipe = load_recipe(recipe_file)
    folder = folders[recipe.model.family]
    lora = recipe.lora
    if not lora.enabled:
        total = sum(p.numel() for p in meta_model(folder).parameters())
        return "full fine-tune", total, total
    policy = lora_replica(lambda: meta_model(folder), r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
                          target_modules=lora.target_modules)  # fmt: skip
    trainable, total = policy.get_nb_trainable_parameters()
    return f"LoRA r {lora.r}", trainable, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = Path(__file__).resolve().parents[1]
    parser.add_argument("--models-dir", type=Path, default=here.parent / "shared" / "models")
    parser.add_argument("--recipes", type=Path, nargs="+", default=[here / "recipes/llada", here / "recipes/dream"])
    args = parser.parse_args()
    folders = {}
    for folder in sorted(p.parent for p in args.models_dir.glob("*/config.json")):
        try:
            groups = parameter_groups(folder)
        except CheckpointError as exc:  # a family unmask does not build (yet): say so, go on
            print(f"{folder.name}: skipped ({exc})")
            continue
        total = sum(groups.values())
        family = meta_model(folder).family
        folders[family] = folder
        layers = read_config(folder).get("n_layers") or read_config(folder)["num_hidden_layers"]
        print(f"{folder.name} ({family}, {layers} blocks): {total:,} parameters = {total / 1e9:.2f} B, "
              f"{2 * total:,} bytes in bf16")  # fmt: skip
        for group, count in groups.most_common():
            print(f"  {group:20s} {count:>15,}")
    print(f"\n{'recipe':38s} {'training':16s} {'trainable':>15s} {'of':>15s} {'share':>7s}")
    for recipe_file in sorted(f for d in args.recipes for f in d.glob("*.yaml")):
        kind, trainable, total = recipe_trainable(recipe_file, folders)
        name = f"{recipe_file.parent.name}/{recipe_file.name}"
        print(f"{name:38s} {kind:16s} {trainable:>15,} {total:>15,} {trainable / total:>7.2%}")


if __name__ == "__main__":
    main()
