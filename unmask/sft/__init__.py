"""The SFT stage: ``unmask sft RECIPE.yaml`` (docs/sft.md)."""
