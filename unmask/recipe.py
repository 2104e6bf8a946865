"""Recipes: one validated tree that drives a run.

A recipe is a YAML file (see ``recipes/``). Field names reuse TRL's ``GRPOConfig``
names where the concept is the same, so users coming from TRL read recipes at
sight. Every mistake — unknown key, wrong type, out-of-range value, YAML syntax —
becomes one ``RecipeError`` line naming the file, the key path and what is
allowed; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from unmask.errors import RecipeError
from unmask.rollouts.options import CACHE_MODES, CONFIDENCE_NAMES, DEFAULT_CONFIDENCE
from unmask.rollouts.sampler_config import SAMPLER_ERROR, SamplerConfig

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Section(BaseModel):
    """Strict base: unknown keys and type coercions are errors, not surprises."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ModelConfig(Section):
    #: checkpoint directory, hub id, ``builtin:<name>`` for a model shipped with unmask, or
    #: ``new:<family>`` for a fresh model built from ``config`` (unmask/models/fresh.py)
    name_or_path: str = "builtin:tiny-countdown"
    #: the architecture of a ``new:<family>`` model (its config fields; token ids come from its tokenizer)
    config: dict[str, Any] | None = None
    #: the model family (``unmask.models.loading.FAMILIES``); None: read from config.json's model_type
    family: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"
    gradient_checkpointing: bool = False

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str | None) -> str | None:
        from unmask.models.loading import FAMILIES  # imports torch: only validation needs it

        if family is not None and family not in FAMILIES:
            raise ValueError(f"unknown model family {family!r}; use one of {', '.join(FAMILIES)}")
        return family

    @model_validator(mode="after")
    def _fresh_model(self) -> ModelConfig:
        from unmask.models.fresh import check_new, is_new

        if is_new(self.name_or_path):
            check_new(self.name_or_path, self.config)
        elif self.config is not None:
            raise ValueError("config: only a fresh model takes an architecture (name_or_path: new:<family>)")
        return self


class LoraConfig(Section):
    enabled: bool = True
    r: PositiveInt = 16
    alpha: PositiveInt = 32
    dropout: Probability = 0.0
    #: None = the family's own linear-layer names (all seven for LLaDA)
    target_modules: list[str] | None = None


class CountdownGeneratorConfig(Section):
    num_numbers: Annotated[int, Field(ge=2, le=6)] = 3
    min_number: PositiveInt = 1
    max_number: PositiveInt = 10
    min_target: NonNegInt = 1
    max_target: PositiveInt = 100
    size: PositiveInt = 20000

    @model_validator(mode="after")
    def _ranges(self) -> CountdownGeneratorConfig:
        if self.min_number > self.max_number:
            raise ValueError("min_number must be <= max_number")
        if self.min_target > self.max_target:
            raise ValueError("min_target must be <= max_target")
        return self


class DataConfig(Section):
    task: Literal["countdown", "gsm8k", "math500", "amc", "math", "sudoku",
                  "humaneval", "mbpp", "humaneval_plus", "mbpp_plus", "tinycode"] = "countdown"  # fmt: skip
    #: local .jsonl/.json/.csv file; overrides the hub id
    path: str | None = None
    hub_id: str | None = None
    split: str = "train"
    #: prompt template with ``{question}``-style fields; None = the task's default
    prompt_template: str | None = None
    #: wrap prompts in the model's chat template
    chat_template: bool = True
    limit: PositiveInt | None = None
    #: synthetic Countdown problems (used when task == countdown and no path is given)
    generator: CountdownGeneratorConfig = Field(default_factory=CountdownGeneratorConfig)


class RolloutConfig(Section, SamplerConfig):
    """The rollout sampler plus what RL adds; the sampler's fields, defaults and checks are
    ``SamplerConfig``'s (docs/sampling.md §8). ``max_completion_length`` is TRL's name for its
    ``gen_length``; mistakes name the recipe keys (``rollout.steps``)."""

    model_config = ConfigDict(serialize_by_alias=True)

    num_generations: Annotated[int, Field(ge=2)] = 8
    #: prompts per rollout batch (each gets ``num_generations`` answers)
    prompts_per_step: PositiveInt = 8
    gen_length: int = Field(32, alias="max_completion_length")
    steps: int = 32
    block_length: int = 32
    temperature: float = 0.7
    #: confidence function used by RCR unless ``confidence`` is given (rollouts/confidence.py); by default
    #: the probability of the sampled token under the sampling distribution softmax(logits / τ) (docs/sampling.md §3)
    rcr_confidence: Literal[CONFIDENCE_NAMES] = DEFAULT_CONFIDENCE["rcr"]
    #: Ray actors roll out step k+1 with step k's adapter while the trainer updates on step k
    #: (one step off-policy; θ_old is the rollout policy, so the importance ratio corrects it)
    overlap: bool = False

    @property
    def max_completion_length(self) -> int:
        return self.gen_length

    @classmethod
    def own_label(cls, field: str) -> str:
        return "rollout." + super().own_label(field)

    def sampler(self) -> SamplerConfig:
        """The settings the rollouts are sampled with (``rcr_confidence`` resolved)."""
        settings = {name: getattr(self, name) for name in SamplerConfig.model_fields}
        if self.remasking == "rcr" and self.confidence is None and self.rcr_confidence != DEFAULT_CONFIDENCE["rcr"]:
            settings["confidence"] = self.rcr_confidence
        return SamplerConfig.model_validate(settings)

    def generate_kwargs(self) -> dict[str, Any]:
        return self.sampler().generate_kwargs()


def _from_bool(value: Any, true: str, false: str) -> Any:
    """Older recipes gave some choices as booleans; map them to the names they meant."""
    return (true if value else false) if isinstance(value, bool) else value


#: every algorithm section by its ``name``; filled by ``@algorithm`` below, read by the recipe's
#: algorithm union, its error messages and the TRL front end (the list is written once)
ALGORITHMS: dict[str, type[BaseModel]] = {}


def algorithm(cls: type[BaseModel]) -> type[BaseModel]:
    """Class decorator: make an algorithm section (a preset of parts) available under its ``name``."""
    ALGORITHMS[cls.model_fields["name"].default] = cls
    return cls


class _ObjectiveBase(Section):
    """Options every objective shares, and its parts: each preset's defaults are its paper's choices,
    and a recipe may name other registered parts (docs/objectives.md lists them and the invalid pairs)."""

    beta: NonNegFloat = 0.04
    epsilon: NonNegFloat = 0.2
    epsilon_high: NonNegFloat | None = None
    num_iterations: PositiveInt = 1
    #: divide group advantages by their std: "group", "batch" or "none" (TRL's values)
    scale_rewards: Literal["group", "batch", "none"] = "none"
    #: an answer counts as correct (accuracy, all-wrong groups, IGPO, MDPO filter) at this total reward
    correct_threshold: float = 1.0
    #: token-level ratio losses: GSPO's length-normalised sequence ratio instead of per-token ratios
    sequence_level_ratio: bool = False
    #: token-level ratio losses: clamp ``ℓ − ℓ_old`` to ± this before ``exp`` (None: no clamp)
    log_ratio_clamp: Annotated[float, Field(gt=0.0)] | None = None
    #: what the KL (``beta``) penalises θ against: the reference policy, or θ_old (TraceRL)
    kl_target: Literal["reference", "old"] = "reference"
    #: which prompts' groups train (``none``, or ``correct_fraction``: only groups whose share of
    #: correct answers lies in [correct_fraction_min, correct_fraction_max]; the rest are dropped)
    group_filter: str = "none"
    correct_fraction_min: Probability = 0.2
    correct_fraction_max: Probability = 0.8
    #: answers of at least ``max_completion_length`` − this many tokens count as wrong (cut off; None: off)
    truncated_wrong_margin: NonNegInt | None = None
    batch: str = "rows"
    advantage: str = "group"
    estimator: str = "one_step"
    policy_loss: str = "clip"
    kl: str = "k3"
    loss_mask: str = "answer"
    token_weight: str = "estimator"
    aggregation: str = "token_mean"

    _bool_scale = field_validator("scale_rewards", mode="before")(lambda v: _from_bool(v, "group", "none"))

    @model_validator(mode="after")
    def _parts(self) -> Any:
        # imported here: the part registries import torch, which only validation needs
        from unmask.rl.objective import check_parts

        check_parts(self)
        return self

    @model_validator(mode="after")
    def _fraction_band(self) -> Any:
        if self.correct_fraction_min > self.correct_fraction_max:
            raise ValueError("correct_fraction_min must be <= correct_fraction_max")
        return self

    def check_rollout(self, rollout: RolloutConfig) -> None:
        """Refuse rollout settings this objective cannot train on (none by default)."""


@algorithm
class DiffuGRPOConfig(_ObjectiveBase):
    name: Literal["diffu_grpo"] = "diffu_grpo"
    epsilon: NonNegFloat = 0.5
    p_mask: Probability = 0.15
    #: one_step (d1), elbo (coupled ELBO) or trajectory (exact replay), or any registered estimator
    estimator: str = "one_step"
    #: trajectory estimator: commit steps scored per row (None: all, exact; k: k/T of the cost)
    trajectory_steps: PositiveInt | None = None


@algorithm
class MDPOConfig(_ObjectiveBase):
    name: Literal["mdpo"] = "mdpo"
    beta: NonNegFloat = 0.02
    batch: str = "steps"
    advantage: str = "mdpo"
    estimator: str = "step"
    kl: str = "k2"
    loss_mask: str = "scored"
    token_weight: str = "mdpo"
    aggregation: str = "sequence_mean"
    #: steps per rollout trained (largest Σ|A_t| first)
    sample_train_steps: PositiveInt = 8
    confidence_weight: bool = True
    elbo_weight: bool = True
    #: train only on over-denoised prompts (an intermediate prediction right, the final answer
    #: wrong): "greedy" finds them once before training with a greedy pre-pass over the training
    #: set, as the paper does; "rollout" (or true) keeps the groups where a rollout showed it
    over_denoising_filter: Literal["off", "rollout", "greedy"] = "off"
    #: what scores intermediate predictions: "correctness" (1 if the recipe's reward reaches
    #: correct_threshold, else 0, as published) or "reward" (the recipe's full weighted reward)
    step_reward: Literal["correctness", "reward"] = "correctness"

    _bool_filter = field_validator("over_denoising_filter", mode="before")(lambda v: _from_bool(v, "rollout", "off"))


@algorithm
class IGPOConfig(_ObjectiveBase):
    name: Literal["igpo"] = "igpo"
    beta: NonNegFloat = 0.01
    batch: str = "hinted"
    loss_mask: str = "hint_filtered"
    p_mask: Probability = 0.15
    hint_ratio_min: Probability = 0.2
    hint_ratio_max: Probability = 0.6
    chunk_min: PositiveInt = 5
    chunk_max: PositiveInt = 10
    free_tail: NonNegInt = 30
    replace_fraction: Probability = 0.5
    entropy_clip_ratio: Probability = 0.2
    #: dataset column holding the reference reasoning trace
    reasoning_column: str = "reasoning"

    @model_validator(mode="after")
    def _ranges(self) -> IGPOConfig:
        if self.hint_ratio_min > self.hint_ratio_max:
            raise ValueError("hint_ratio_min must be <= hint_ratio_max")
        if self.chunk_min > self.chunk_max:
            raise ValueError("chunk_min must be <= chunk_max")
        return self


@algorithm
class WD1Config(_ObjectiveBase):
    name: Literal["wd1"] = "wd1"
    beta: NonNegFloat = 0.0
    advantage: str = "wd1"
    policy_loss: str = "likelihood"
    aggregation: str = "sequence_mean"
    psi: Annotated[float, Field(gt=0.0)] = 1.0
    p_mask: Probability = 0.15


class _NoKL:
    """Mixin validator: objectives whose papers use no KL term refuse a non-zero ``beta``."""

    @model_validator(mode="after")
    def _no_kl(self) -> Any:
        if self.beta != 0:
            hint = "; the EUBO's β is eubo_beta" if self.name == "spg" else ""
            raise ValueError(f"beta must be 0: {self.name} has no KL term and no reference policy{hint}")
        return self


@algorithm
class SPGConfig(_NoKL, _ObjectiveBase):
    """SPG: ELBO for positive advantages, EUBO (or a mix) for negative ones; no ratio, no old policy."""

    name: Literal["spg"] = "spg"
    beta: NonNegFloat = 0.0
    estimator: str = "block"
    policy_loss: str = "sandwich"
    loss_mask: str = "scored"
    aggregation: str = "answer_tokens"
    #: block-wise samples per answer and inner iteration (``num_t``); with 1 the EUBO has the ELBO's gradient
    mc_samples: Annotated[int, Field(ge=2)] = 2
    #: Rényi order of the upper bound (the paper's β): 1.5 GSM8K/MATH, 2.0 Countdown, 1.0 Sudoku
    eubo_beta: Annotated[float, Field(gt=0.0)] = 1.5
    #: weight of the EUBO in the negative-advantage bound: 1 = "SPG w/ EUBO", 0 = "w/ ELBO", 0.5 = mixture
    omega: Probability = 0.5
    #: block size of the block-wise masks
    mask_block_length: PositiveInt = 32
    #: masking rate of the prompt and of the blocks before the cut
    p_mask: Probability = 0.15


@algorithm
class ESPOConfig(_ObjectiveBase):
    """ESPO: one clipped ratio per sequence from ELBO differences over the length, sequence k2 KL."""

    name: Literal["espo"] = "espo"
    beta: NonNegFloat = 1e-3
    epsilon: NonNegFloat = 0.2
    advantage: str = "leave_one_out"
    estimator: str = "exact_count"
    policy_loss: str = "elbo_clip"
    kl: str = "k2_sequence"
    loss_mask: str = "scored"
    aggregation: str = "sequence_mean"
    #: coupled exact-count MC samples per answer (two forward passes each)
    mc_samples: PositiveInt = 2


@algorithm
class BGPOConfig(_NoKL, _ObjectiveBase):
    """BGPO: per-sample lower bound of the ELBO ratio (tangent for A ≥ 0, Jensen for A < 0)."""

    name: Literal["bgpo"] = "bgpo"
    beta: NonNegFloat = 0.0
    batch: str = "samples"
    estimator: str = "elbo_sample"
    policy_loss: str = "bound"
    loss_mask: str = "scored"
    aggregation: str = "sequence_mean"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    #: single-sample ELBO items per answer (``n_t``): 16 math/Countdown, 32 Sudoku
    mc_samples: PositiveInt = 16
    #: divide ``d_j`` by the generation length (the VeRL port's scaling) so ``e^d`` stays tame off-policy
    length_normalized: bool = False


@algorithm
class CoupledGRPOConfig(_ObjectiveBase):
    """coupled-GRPO (DiffuCoder): the three-pass score ``½ℓ^F + w^c ℓ`` inside a clipped ratio."""

    name: Literal["coupled_grpo"] = "coupled_grpo"
    beta: NonNegFloat = 0.01
    epsilon: NonNegFloat = 0.5
    advantage: str = "leave_one_out"
    estimator: str = "coupled"


@algorithm
class CJGRPOConfig(_ObjectiveBase):
    """CJ-GRPO as DARE trains it: trajectory replay, every denoising step weighted alike, dual clip."""

    name: Literal["cj_grpo"] = "cj_grpo"
    beta: NonNegFloat = 0.0
    epsilon: NonNegFloat = 0.2
    scale_rewards: Literal["group", "batch", "none"] = "group"
    estimator: str = "trajectory"
    #: trajectory estimator: commit steps scored per row (None: all, as published)
    trajectory_steps: PositiveInt | None = None
    policy_loss: str = "dual_clip"
    #: negative-advantage terms never fall below ``dual_clip · A`` (DARE: 3)
    dual_clip: Annotated[float, Field(gt=1.0)] = 3.0
    loss_mask: str = "scored"
    token_weight: str = "per_step"


@algorithm
class GDSDConfig(_ObjectiveBase):
    """GDSD: the clamped sequence log-ratio of the unweighted denoiser likelihood regressed onto ``ψA``."""

    name: Literal["gdsd"] = "gdsd"
    beta: NonNegFloat = 1e-3
    #: the clamp band ``[ln(1−ε), ln(1+ε)]`` of ``D_θ − D_old`` (nats over the whole answer)
    epsilon: Annotated[float, Field(gt=0.0, lt=1.0)] = 4e-4
    #: the regression target's scale: ``Δ/L`` is pulled towards ``ψA``
    psi: Annotated[float, Field(gt=0.0)] = 10.0
    #: separate exact-count draws per answer (``m``), one item each
    mc_samples: PositiveInt = 2
    batch: str = "samples"
    advantage: str = "leave_one_out"
    estimator: str = "exact_count_pair"
    policy_loss: str = "regression"
    kl: str = "k2_sequence"
    loss_mask: str = "scored"
    aggregation: str = "sequence_mean"


@algorithm
class JustGRPOConfig(_NoKL, _ObjectiveBase):
    """JustGRPO: plain GRPO on left-to-right rollouts, scored exactly by replaying the AR prefixes."""

    name: Literal["justgrpo"] = "justgrpo"
    beta: NonNegFloat = 0.0
    epsilon: NonNegFloat = 0.2
    scale_rewards: Literal["group", "batch", "none"] = "group"
    #: each answer's replay is cut into items of this many positions (memory: one item's canvases
    #: and graph at a time); the items' sum is the exact likelihood
    replay_chunk: PositiveInt = 32
    batch: str = "chunks"
    estimator: str = "trajectory_chunk"
    #: with ``estimator: trajectory`` (whole answers as items, ``batch: rows``): positions replayed
    #: per answer (None: all L, as published; k: an unbiased subsample, label such runs)
    trajectory_steps: PositiveInt | None = None
    #: every position counts, the tokens sampled after the first EOS included
    loss_mask: str = "scored"
    aggregation: str = "valid_answers"

    def check_rollout(self, rollout: RolloutConfig) -> None:
        if rollout.block_length != 1 or rollout.steps != rollout.max_completion_length:
            raise ValueError(
                f"algorithm justgrpo samples left to right: set rollout.block_length: 1 and rollout.steps: "
                f"{rollout.max_completion_length} (got {rollout.block_length} and {rollout.steps}); "
                "evaluation decodes in parallel with eval.block_length"
            )


@algorithm
class TraceRLConfig(_ObjectiveBase):
    """TraceRL (TraDo): every committed token of a block-diffusion rollout scored on the canvas of its
    step (``block_replay``: step k of all blocks in one two-stream pass), clipped, Σ/(B·L) per answer,
    k3 KL against θ_old, groups with a correct share outside [0.2, 0.8] dropped."""

    name: Literal["tracerl"] = "tracerl"
    beta: NonNegFloat = 0.01
    #: the k3 KL is against θ_old, not a reference model (no reference pass)
    kl_target: Literal["reference", "old"] = "old"
    epsilon: NonNegFloat = 0.2
    log_ratio_clamp: Annotated[float, Field(gt=0.0)] | None = 10.0
    #: group z-scores with the population std (0 for an all-equal group)
    advantage: str = "zscore"
    group_filter: str = "correct_fraction"
    truncated_wrong_margin: NonNegInt | None = 5
    estimator: str = "block_replay"
    loss_mask: str = "scored"
    aggregation: str = "constant"


AlgorithmConfig = Annotated[Union[tuple(ALGORITHMS.values())], Field(discriminator="name")]  # noqa: UP007


class RewardItem(Section):
    #: registry name (``countdown``, ``gsm8k``, ``math``, …) or ``package.module:function``
    name: str
    weight: float = 1.0
    kwargs: dict[str, Any] = Field(default_factory=dict)


class RewardsConfig(Section):
    functions: list[RewardItem] = Field(default_factory=lambda: [RewardItem(name="countdown")])
    num_workers: NonNegInt = 2
    timeout: Annotated[float, Field(gt=0.0)] = 5.0
    on_error: float = 0.0


class OptimConfig(Section):
    learning_rate: Annotated[float, Field(gt=0.0)] = 1e-4
    weight_decay: NonNegFloat = 0.0
    adam_beta1: Probability = 0.9
    adam_beta2: Probability = 0.99
    max_grad_norm: NonNegFloat = 1.0
    lr_scheduler_type: Literal["constant", "linear", "cosine", "warmup_stable_decay"] = "constant"
    #: the schedule's own arguments (transformers' name); warmup_stable_decay needs
    #: ``num_decay_steps`` and takes ``decay_type`` (linear, cosine, 1-sqrt)
    lr_scheduler_kwargs: dict[str, Any] = Field(default_factory=dict)
    warmup_steps: NonNegInt = 0
    max_steps: PositiveInt = 20
    per_device_train_batch_size: PositiveInt = 8
    gradient_accumulation_steps: PositiveInt = 1
    #: optimizer steps per pass over a rollout batch, however many micro-batches it
    #: has (1: the published MDPO trainer's one step per rollout); replaces
    #: gradient_accumulation_steps, so set only one of the two
    optimizer_steps_per_rollout: PositiveInt | None = None

    @model_validator(mode="after")
    def _schedule_arguments(self) -> OptimConfig:
        if self.lr_scheduler_type == "warmup_stable_decay" and "num_decay_steps" not in self.lr_scheduler_kwargs:
            raise ValueError("lr_scheduler_type warmup_stable_decay: set lr_scheduler_kwargs.num_decay_steps "
                             "(the steps of the final decay)")
        return self

    @model_validator(mode="after")
    def _one_step_rule(self) -> OptimConfig:
        if self.optimizer_steps_per_rollout is not None and self.gradient_accumulation_steps != 1:
            raise ValueError(
                "set either gradient_accumulation_steps or optimizer_steps_per_rollout, not both "
                "(optimizer_steps_per_rollout decides how many micro-batches each step accumulates)"
            )
        return self


class EvalConfig(Section):
    #: evaluate every N RL steps (0 = only before and after training)
    every: NonNegInt = 0
    #: block length of the greedy evaluation decodings (None: the rollout's); JustGRPO trains at
    #: block 1 (left to right) and is evaluated at normal parallel decoding
    block_length: PositiveInt | None = None
    limit: PositiveInt | None = 256
    path: str | None = None
    split: str = "test"
    before: bool = True
    after: bool = True
    #: extra decoding settings evaluated beside the training one, e.g. two tokens per step
    steps_per_token: list[PositiveInt] = Field(default_factory=lambda: [1])
    temperature: NonNegFloat = 0.0
    batch_size: PositiveInt = 64
    #: KV cache of the evaluation decoding; exact only for models whose prompt is blind to the answer
    cache: Literal[CACHE_MODES] = "none"


class LoggingConfig(Section):
    report_to: list[Literal["jsonl", "tensorboard", "wandb", "none"]] = Field(
        default_factory=lambda: ["jsonl"]
    )
    logging_steps: PositiveInt = 1
    progress: bool = True
    plot: bool = True


class CheckpointConfig(Section):
    save_steps: NonNegInt = 0
    save_final: bool = True
    resume_from: str | None = None


class RayConfig(Section):
    #: None = no Ray, roll out in-process; "local" = start local Ray; else a cluster address
    address: str | None = None
    num_workers: NonNegInt = 0
    num_cpus_per_worker: NonNegFloat = 1.0
    num_gpus_per_worker: NonNegFloat = 0.0


class Recipe(Section):
    description: str = ""
    seed: NonNegInt = 0
    output_dir: str = "runs/default"
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = Field(default_factory=MDPOConfig)
    rewards: RewardsConfig = Field(default_factory=RewardsConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _rollout_fits_algorithm(self) -> Recipe:
        self.algorithm.check_rollout(self.rollout)
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# -- loading -----------------------------------------------------------------


def _known_keys(model: type[BaseModel], path: tuple[str | int, ...]) -> list[str]:
    """Field names valid at ``path`` (for "did you mean" hints)."""
    fields = model.model_fields
    for part in path:
        if not isinstance(part, str) or part not in fields:
            return []
        annotation = fields[part].annotation
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        sub = next((c for c in candidates if issubclass(c, BaseModel)), None)
        if sub is None:
            return []
        fields = sub.model_fields
    return [field.alias or name for name, field in fields.items()]


def _format_error(source: str, exc: ValidationError, raw: dict[str, Any], schema: type[BaseModel] = Recipe) -> str:
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in ALGORITHMS))
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == SAMPLER_ERROR:  # the sampler's own sentence names the recipe keys
        return f"{source}: {err['msg']}"
    if err["type"] == "extra_forbidden":
        parent = loc[:-1]
        if parent and parent[0] == "algorithm":
            name = raw.get("algorithm", {}).get("name", "mdpo") if isinstance(raw.get("algorithm"), dict) else "mdpo"
            options = list(ALGORITHMS.get(name, MDPOConfig).model_fields)
        else:
            options = _known_keys(schema, parent)
        close = difflib.get_close_matches(str(loc[-1]), options, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; allowed keys: {', '.join(options)}"
        return f"{source}: unknown key '{key}'{hint}"
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{source}: {key}: {err['msg']} (got {shown})"


def validate_recipe(raw: Any, source: str, schema: type[Section] = Recipe) -> Any:
    """Validate a parsed mapping against ``schema`` (an RL ``Recipe``, or e.g. an SFT recipe); ``source`` names it in errors."""
    if raw is None:
        raise RecipeError(f"{source}: the recipe is empty; start from one in recipes/ (see `unmask recipes`)")
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    algo = raw.get("algorithm")
    if isinstance(algo, dict) and "name" in algo and algo["name"] not in ALGORITHMS:
        raise RecipeError(
            f"{source}: algorithm.name: unknown algorithm {algo['name']!r}; "
            f"choose one of {', '.join(ALGORITHMS)}"
        )
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(_format_error(source, exc, raw, schema)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a", "b", "c"], value parsed as YAML)."""
    if "=" not in text:
        raise RecipeError(f"override {text!r}: expected key.path=value, e.g. rollout.steps=16")
    key, _, value = text.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise RecipeError(f"override {text!r}: empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return path, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"override {text!r}: '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return raw


def load_recipe(path: str | Path, overrides: list[str] | None = None, schema: type[Section] = Recipe) -> Any:
    """Read, override and validate a recipe file (against ``schema``, the RL ``Recipe`` by default)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found; `unmask recipes` lists the shipped ones")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise RecipeError(f"{path}: YAML syntax error{where}: {problem}") from None
    if overrides:
        if raw is None:
            raw = {}
        if isinstance(raw, dict):
            raw = apply_overrides(raw, overrides)
            source = f"{path} (with overrides {' '.join(overrides)})"
            return validate_recipe(raw, source, schema)
    return validate_recipe(raw, str(path), schema)


def save_recipe(recipe: Recipe, directory: str | Path) -> Path:
    """Write the resolved recipe next to a run's outputs."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / "recipe.yaml"
    out.write_text(recipe.to_yaml())
    return out
