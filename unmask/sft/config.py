"""The SFT recipe: the RL recipe's model, lora, data, optim, eval, logging and checkpoint sections plus ``sft:``.

Every field is documented once here; docs/sft.md lists them with the per-family
defaults and where those come from. ``auto`` fields take the family's default once
the model is loaded (``FAMILY_DEFAULTS``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, StrictBool, model_validator

from unmask.errors import RecipeError
from unmask.recipe import (
    CheckpointConfig,
    DataConfig,
    EvalConfig,
    LoggingConfig,
    LoraConfig,
    ModelConfig,
    NonNegInt,
    OptimConfig,
    PositiveInt,
    Probability,
    Recipe,
    Section,
    load_recipe,
)

#: the family's loss when ``sft.weighting`` / ``sft.normalization`` are ``auto`` (docs/sft.md says why)
FAMILY_DEFAULTS: dict[str, tuple[str, str]] = {
    "tiny": ("elbo", "sequence"),
    "llada": ("elbo", "sequence"),
    "dream": ("cart", "token"),
    "sdar": ("elbo", "token"),
    # the published flat CE: no 1/t weight, mean over the step's supervised slots (unmask/sft/uniform_loss.py)
    "diffusion_gemma": ("none", "token"),
    "tiny-dgemma": ("none", "token"),
}


class SFTDataConfig(DataConfig):
    """Where rows come from and how they become (prompt, completion) pairs."""

    #: rename columns before reading them: ``{prompt: question, completion: answer}`` (new name: column)
    columns: dict[str, str] = Field(default_factory=dict)
    #: ``s1k``: s1K's question / thinking_trajectories / attempt columns, answered in the d1 layout
    format: Literal["auto", "s1k"] = "auto"
    #: the completion text when rows have no ``completion`` column: a named layout (``d1``) or a
    #: ``str.format`` string over the row's columns, e.g. ``"<answer>{solution}</answer>"``
    completion_template: str | None = None
    #: ``package.module:function`` mapping a raw record to ``{"prompt": ..., "completion": ...}`` (TRL's
    #: formatting_func returns one string; returning the split keeps completion-only training possible)
    formatting_func: str | None = None
    #: share of generated Countdown demonstrations replaced by the careless answer (the numbers added
    #: up, target ignored): a habit for RL to remove, as in the shipped tiny models (docs/default-run.md)
    careless_fraction: Probability = 0.0

    @model_validator(mode="after")
    def _careless_needs_generated_countdown(self) -> SFTDataConfig:
        if self.careless_fraction and (self.task != "countdown" or self.path is not None or self.hub_id is not None):
            raise ValueError("careless_fraction: only generated Countdown rows (task: countdown, no path or "
                             "hub_id) have careless answers; set it to 0")
        return self


class SFTOptimConfig(OptimConfig):
    #: None: ``num_train_epochs`` decides the step count
    max_steps: PositiveInt | None = None  # type: ignore[assignment]
    #: passes over the training rows (used when ``max_steps`` is None; default 1)
    num_train_epochs: Annotated[float, Field(gt=0.0)] | None = None
    #: warm-up as a share of the run (added to ``warmup_steps``)
    warmup_ratio: Probability = 0.0

    @model_validator(mode="after")
    def _one_length(self) -> SFTOptimConfig:
        if self.max_steps is not None and self.num_train_epochs is not None:
            raise ValueError("set either max_steps or num_train_epochs, not both")
        if self.optimizer_steps_per_rollout is not None:
            raise ValueError("optimizer_steps_per_rollout is an RL setting; SFT steps every gradient_accumulation_steps")
        return self


class SFTEvalConfig(EvalConfig):
    #: rows held out from the training data (after a seeded shuffle) for the validation loss
    val_size: NonNegInt = 0
    #: K fixed ratios t_k = (k - 1/2)/K of the validation loss
    val_t_points: PositiveInt = 8
    #: also measure held-out accuracy with the evaluator (greedy, the answer window)
    accuracy: bool = True


class SFTSection(Section):
    """The loss and the answer window (docs/sft.md)."""

    #: ``elbo`` (1/t), ``cart`` (Dream's neighbour weighting) or ``none``; ``auto`` = the family's default
    weighting: Literal["auto", "elbo", "cart", "none"] = "auto"
    #: ``token`` (÷ supervised positions of the step), ``sequence`` (each row ÷ its length, rows averaged),
    #: ``batch`` (÷ rows); ``auto`` = the family's default
    normalization: Literal["auto", "token", "sequence", "batch"] = "auto"
    #: floor of the masking ratio: t = ε + (1 - ε)·U
    epsilon: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-3
    #: CART's geometric parameter
    geo_p: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3
    #: answer window L (answer + end-of-turn + EOS fill); None = ``feeds``' rollout.max_completion_length
    answer_length: PositiveInt | None = None
    #: EOS fill up to: ``window`` (L), ``batch_longest`` (the batch's longest answer, at most L),
    #: ``max_length`` (prompt + answer = max_length, d1)
    eos_fill: Literal["window", "batch_longest", "max_length"] = "window"
    #: answers longer than their window: ``drop`` (counted and printed), ``cut`` (kept, truncated), ``error``
    overflow: Literal["drop", "cut", "error"] = "drop"
    #: prompt + window (TRL's meaning); needed by ``eos_fill: max_length``
    max_length: PositiveInt | None = None
    #: rows whose prompt is longer are dropped (counted and printed)
    max_prompt_length: PositiveInt | None = None
    #: True: only the completion is noised and scored; False: the prompt too (``text`` data needs False);
    #: None: False for ``text`` data, True otherwise
    completion_only_loss: StrictBool | None = None
    #: render the assistant turn through the chat template too (TRL style) and require the rendered
    #: prompt's tokens to be a prefix of the conversation's; False tokenizes the answer on its own
    assistant_through_template: StrictBool = False
    #: several rows per sequence: refused until a family brings a per-document segment mask
    packing: StrictBool = False
    #: an RL recipe this run prepares: its task, prompt style, answer window and evaluation settings
    feeds: str | None = None

    @model_validator(mode="after")
    def _checks(self) -> SFTSection:
        if self.packing:
            raise ValueError(
                "packing: true is not supported: no family here has a per-document segment mask, so packed "
                "rows would attend to each other; set packing: false"
            )
        if self.eos_fill == "max_length" and self.max_length is None:
            raise ValueError("eos_fill: max_length needs sft.max_length (prompt + answer tokens)")
        return self


class SFTRecipe(Section):
    description: str = ""
    seed: NonNegInt = 0
    output_dir: str = "runs/sft"
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: SFTDataConfig = Field(default_factory=SFTDataConfig)
    optim: SFTOptimConfig = Field(default_factory=SFTOptimConfig)
    eval: SFTEvalConfig = Field(default_factory=SFTEvalConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    sft: SFTSection = Field(default_factory=SFTSection)

    to_yaml = Recipe.to_yaml


#: shipped SFT recipes are named ``sft_*.yaml`` (the RL recipes beside them validate against ``Recipe``)
SFT_PREFIX = "sft_"


def is_sft_recipe(path: str | Path) -> bool:
    return Path(path).stem.startswith(SFT_PREFIX)


def load_sft_recipe(path: str | Path, overrides: list[str] | None = None) -> SFTRecipe:
    """Read, override and validate an SFT recipe (one ``RecipeError`` line per mistake)."""
    return load_recipe(path, overrides, schema=SFTRecipe)


def fed_recipe(recipe: SFTRecipe) -> Recipe | None:
    """The RL recipe named by ``sft.feeds`` (a path or a shipped name such as ``tiny/countdown_mdpo``)."""
    if recipe.sft.feeds is None:
        return None
    from unmask.cli import resolve_recipe_path

    return load_recipe(resolve_recipe_path(recipe.sft.feeds))


def rl_after_sft(recipe: SFTRecipe) -> Recipe:
    """The fed RL recipe with the SFT output as its model (``output_dir/final`` in, ``output_dir/rl`` out)
    and the SFT run's seed, so one seed names the whole pipeline."""
    if recipe.sft.feeds is None:
        raise RecipeError("sft.feeds: name the RL recipe to run on the SFT model (e.g. tiny/countdown_mdpo)")
    from unmask.cli import resolve_recipe_path

    out = Path(recipe.output_dir)
    return load_recipe(resolve_recipe_path(recipe.sft.feeds),
                       [f"model.name_or_path={out / 'final'}", f"output_dir={out / 'rl'}", f"seed={recipe.seed}"])


def loss_choice(recipe: SFTRecipe, family: str) -> tuple[str, str]:
    """``(weighting, normalization)`` with ``auto`` resolved for ``family``."""
    weighting, normalization = FAMILY_DEFAULTS.get(family, FAMILY_DEFAULTS["llada"])
    s = recipe.sft
    return (weighting if s.weighting == "auto" else s.weighting,
            normalization if s.normalization == "auto" else s.normalization)


def answer_length(recipe: SFTRecipe, fed: Recipe | None) -> int:
    """The window L: ``sft.answer_length``, else the fed RL recipe's answer length."""
    if recipe.sft.answer_length is not None:
        return recipe.sft.answer_length
    if fed is None:
        raise RecipeError("sft.answer_length: set the answer window (or sft.feeds: an RL recipe whose "
                          "rollout.max_completion_length it takes)")
    return fed.rollout.max_completion_length

