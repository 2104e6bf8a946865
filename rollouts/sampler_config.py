"""The sampler's settings as one validated object (docs/sampling.md §8).

``generate()``, recipes (``rollout:``), ``unmask eval``, ``unmask sample``, the TRL front
end, Ray rollout jobs and ``generation_config.json`` all read these fields, so a
setting is declared, defaulted and checked once. Torch-free: recipes and the CLI
validate without importing the sampler.

Every mistake is one sentence that names the setting the way the user wrote it: a
front end passes ``label`` (``--gen-length`` on the command line); a subclass that
keeps an older key as a field alias (a recipe's ``max_completion_length``) is named
by that alias.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from unmask.errors import UserError
from unmask.rollouts.options import CACHE_MODES, CONFIDENCE_NAMES, REMASKING, SCHEDULES

#: how a front end names a setting in its messages (field name → what the user typed)
Label = Callable[[str], str]

#: the error type of this module's own sentences (they already name the setting)
SAMPLER_ERROR = "sampler_setting"
#: the named choices of the settings that take one (rollouts/options.py)
CHOICES = {"remasking": REMASKING, "schedule": SCHEDULES, "cache": CACHE_MODES, "confidence": CONFIDENCE_NAMES}


def cli_label(field: str) -> str:
    """A setting's command-line flag: ``gen_length`` → ``--gen-length``."""
    return "--" + field.replace("_", "-")


class SamplerConfig(BaseModel):
    """Everything ``generate()`` needs besides the model, the prompts, hints and seeds."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), validate_by_name=True,
                              use_attribute_docstrings=True)

    gen_length: int
    """Answer tokens after each prompt; a multiple of ``block_length``."""
    steps: int
    """Denoising steps over all blocks (at least one per block); unused with ``threshold``."""
    block_length: int
    """Tokens decoded block by block, left to right (docs/sampling.md §1)."""
    temperature: float = 0.0
    """Softmax temperature of the sampled tokens (0: greedy)."""
    remasking: Literal[REMASKING] = "low_confidence"
    """Which positions a step commits or re-masks (docs/sampling.md §2–§3)."""
    cfg_scale: float = 0.0
    """Classifier-free guidance against a prompt-masked pass (0: off)."""
    threshold: float | None = None
    """Fast-dLLM parallel decoding: commit every position above this confidence (§4)."""
    dynamic_threshold: float | None = None
    """SDAR's dynamic low-confidence rule: commit every position above it, at least the schedule's count."""
    schedule: Literal[SCHEDULES] = "linear"
    """Tokens committed per step of a block."""
    schedule_k: float = 2
    """The exponent of the ``pow_k`` schedule."""
    confidence: Literal[CONFIDENCE_NAMES] | Callable[..., Any] | None = None
    """Confidence by name (rollouts/confidence.py), a callable from Python, or None: the strategy's own."""
    cache: Literal[CACHE_MODES] = "none"
    """KV cache of a step's forward (approximate unless "none" or "block"), docs/sampling.md §5."""
    cache_refresh: int = 0
    """With a cache, every ``cache_refresh``-th step of a block runs the full canvas (0: only the first)."""
    partial_head: bool = True
    """The LM head only where a token is read (exact; off only to measure it)."""
    early_exit: bool = False
    """End a row once its first EOS has no masked position before it (docs/speed.md)."""

    @classmethod
    def checked(cls, label: Label | None = None, /, **settings: Any) -> SamplerConfig:
        """Validate ``settings``; a mistake becomes one ``UserError`` line naming the setting by ``label``."""
        try:
            return cls.model_validate(settings, context={"label": label})
        except ValidationError as exc:
            raise UserError(one_line(exc, cls._namer(label))) from None

    def generate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments ``generate()`` takes for these settings."""
        return {name: getattr(self, name) for name in SamplerConfig.model_fields}

    @classmethod
    def own_label(cls, field: str) -> str:
        """How this class's users spell ``field`` when no front end says: its alias, else its name."""
        return (cls.model_fields[field].alias if field in cls.model_fields else None) or field

    @classmethod
    def _namer(cls, label: Label | None) -> Label:
        return cls.own_label if label is None else label

    @classmethod
    def _name(cls, info: ValidationInfo, field: str) -> str:
        return cls._namer((info.context or {}).get("label"))(field)

    @field_validator("remasking", "schedule", "cache", "confidence", mode="wrap")
    @classmethod
    def _known_choice(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        if info.field_name == "confidence" and (value is None or callable(value)):
            return value
        try:
            return handler(value)
        except ValidationError:
            choices = ", ".join(CHOICES[info.field_name])
            raise PydanticCustomError(SAMPLER_ERROR, f"unknown {cls._name(info, info.field_name)} {value!r}: choose from {choices}") from None

    @field_validator("gen_length", "steps", "block_length", "schedule_k")
    @classmethod
    def _positive(cls, value: float, info: ValidationInfo) -> float:
        if value <= 0:
            raise PydanticCustomError(SAMPLER_ERROR, f"{cls._name(info, info.field_name)} must be positive, got {value}")
        return value

    @field_validator("temperature", "cfg_scale", "cache_refresh")
    @classmethod
    def _non_negative(cls, value: float, info: ValidationInfo) -> float:
        if value < 0:
            raise PydanticCustomError(SAMPLER_ERROR, f"{cls._name(info, info.field_name)} must be >= 0, got {value}")
        return value

    @field_validator("threshold", "dynamic_threshold")
    @classmethod
    def _probability(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and not 0 < value <= 1:
            raise PydanticCustomError(SAMPLER_ERROR, f"{cls._name(info, info.field_name)} must be in (0, 1], got {value}")
        return value

    @model_validator(mode="after")
    def _compatible(self, info: ValidationInfo) -> SamplerConfig:
        """The rules that join two settings (each names both, as the user wrote them)."""
        name = type(self)._namer((info.context or {}).get("label"))
        rcr = self.remasking == "rcr"
        if self.gen_length % self.block_length:
            problem = (
                f"{name('gen_length')} ({self.gen_length}) must be a positive multiple of "
                f"{name('block_length')} ({self.block_length})"
            )
        elif self.threshold is not None and rcr:
            problem = f"{name('threshold')} and {name('remasking')} rcr exclude each other: drop one of them"
        elif self.dynamic_threshold is not None and (self.threshold is not None or rcr):
            problem = (
                f"{name('dynamic_threshold')} tops up the step's schedule: it excludes "
                f"{name('threshold')} and {name('remasking')} rcr"
            )
        elif self.early_exit and rcr:
            problem = (
                f"{name('early_exit')} needs committed tokens to stay: it cannot be used with {name('remasking')} rcr"
            )
        else:
            return self
        raise PydanticCustomError(SAMPLER_ERROR, problem)


def one_line(exc: ValidationError, label: Label) -> str:
    """The first mistake of ``exc`` as one line; pydantic's own (a wrong type, an unknown key) gain the setting's name."""
    err = exc.errors()[0]
    if err["type"] == SAMPLER_ERROR:
        return err["msg"]
    field = ".".join(str(part) for part in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown sampler setting {label(field)}"
    return f"{label(field)}: {err['msg']} (got {err.get('input')!r})"


def split_settings(kwargs: dict[str, Any]) -> tuple[SamplerConfig, dict[str, Any]]:
    """``generate()`` keyword arguments as (the validated sampler settings, everything else: prompts, seeds, ...)."""
    fields = SamplerConfig.model_fields
    config = SamplerConfig.checked(**{k: v for k, v in kwargs.items() if k in fields})
    return config, {k: v for k, v in kwargs.items() if k not in fields}


def declared_settings(settings: dict[str, Any], label: Label | None = None) -> dict[str, Any]:
    """Validate some of the fields (what a ``generation_config.json`` declares): each by its own
    rules, and the rules joining two wherever both are declared; returns them converted."""
    length = settings.get("gen_length") or settings.get("block_length") or 1
    complete = {"gen_length": length, "block_length": settings.get("block_length") or length, "steps": 1, **settings}
    config = SamplerConfig.checked(label, **complete)
    return {name: getattr(config, name) for name in settings}
