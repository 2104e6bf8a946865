"""TRL front end: ``DiffusionGRPOTrainer``, a TRL ``GRPOTrainer`` for masked diffusion LMs.

TRL's ``GRPOTrainer`` generates left to right and scores tokens with an
autoregressive head; a dLLM needs neither. This subclass keeps everything a TRL
user relies on (datasets with a ``prompt`` column, TRL-signature reward
functions and weights, ``peft_config``, the repeat sampler and buffered
generation batches, logging, callbacks, ``report_to``, checkpoints) and replaces
the three diffusion-specific parts with unmask's own code, so there is one
implementation behind two front ends:

- rollouts: :class:`unmask.rl.rollout.Rollouts` over :func:`unmask.rollouts.generate`;
- advantages and batch preparation: the unmask objective's ``prepare``;
- micro-batches, log-probs and loss: :mod:`unmask.rl.update`, the update engine unmask's
  trainer calls too (the shuffle and cut of a generation batch, each micro-batch's loss
  scale, keys, θ_old and reference scores, the micro-batch loss), so both front ends give
  the same loss and gradient on the same batch.

``GRPOTrainer.__init__`` is bypassed on purpose: it builds an autoregressive
generation stack (``generate``/vLLM, a fused LM head patched into the model) that
a dLLM cannot use. The attributes its inherited methods read are set here.
TRL is imported by this module only.
"""

from __future__ import annotations

import atexit
import copy
import math
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object
from peft import PeftConfig, get_peft_model
from trl import GRPOConfig, GRPOTrainer
from trl.data_utils import apply_chat_template, is_conversational
from trl.trainer.utils import (
    identity,
    is_async_callable,
    shutdown_event_loop_in_daemon,
    start_event_loop_in_daemon,
)

from unmask.errors import UserError
from unmask.models import load_model
from unmask.models.base import DiffusionLM
from unmask.models.lora import target_regex
from unmask.recipe import ALGORITHMS, Recipe, validate_recipe
from unmask.rewards.runner import RewardBatch
from unmask.rl.critic import Critic
from unmask.rl.estimators import Scores
from unmask.rl.likelihoods import ESTIMATORS
from unmask.rl.objective import Objective, Rollout, TrainBatch, build_objective
from unmask.rl.rollout import Rollouts, decode_answers, encode_prompts, local_sampler
from unmask.rl.update import (
    FrozenScorer,
    MicroBatches,
    cut_batch,
    derive_seed,
    estimator_keys,
    frozen_passes,
    micro_batch_loss,
)
from unmask.rollouts.sampler_config import CHOICES, SamplerConfig


def _sampler_field(name: str, default: Any = None) -> Any:
    """A config field of the sampler setting ``name``: its default (unless given), help and choices are
    ``SamplerConfig``'s, and ``recipe()`` checks it with SamplerConfig's rules."""
    info = SamplerConfig.model_fields[name]
    help_text = info.description or ""
    if name in CHOICES:
        help_text += f" One of: {', '.join(CHOICES[name])}."
    return field(default=info.default if default is None else default, metadata={"help": help_text})


@dataclass
class DiffusionGRPOConfig(GRPOConfig):
    """``GRPOConfig`` plus the sampler and the objective of a masked diffusion LM.

    TRL's own fields keep their meaning where the concept is shared
    (``num_generations``, ``max_completion_length``, ``temperature``, ``beta``,
    ``epsilon``, ``epsilon_high``, ``num_iterations``, ``scale_rewards``);
    ``loss_type`` and the autoregressive sampling knobs (``top_p``, ``use_vllm``, …)
    do not apply: the loss is the chosen unmask objective's.
    """

    # the sampler's settings (help and choices are SamplerConfig's; TRL's temperature and
    # max_completion_length are its temperature and gen_length)
    steps: int = _sampler_field("steps", 16)
    block_length: int | None = field(
        default=None, metadata={"help": "Semi-autoregressive block size; None = one block (max_completion_length)."}
    )
    remasking: str = _sampler_field("remasking")
    threshold: float | None = _sampler_field("threshold")
    dynamic_threshold: float | None = _sampler_field("dynamic_threshold")
    schedule: str = _sampler_field("schedule")
    schedule_k: float = _sampler_field("schedule_k")
    confidence: str | None = _sampler_field("confidence")
    cfg_scale: float = _sampler_field("cfg_scale")
    cache: str = _sampler_field("cache")
    cache_refresh: int = _sampler_field("cache_refresh")
    partial_head: bool = _sampler_field("partial_head")
    early_exit: bool = _sampler_field("early_exit")
    algorithm: str = field(
        default="diffu_grpo",
        metadata={"help": f"unmask objective (a preset of parts): {', '.join(ALGORITHMS)}.", "choices": list(ALGORITHMS)},
    )
    estimator: str | None = field(
        default=None,
        metadata={"help": f"Likelihood estimator; None = the objective's own: {', '.join(ESTIMATORS)}.",
                  "choices": list(ESTIMATORS)},
    )
    p_mask: float = field(default=0.15, metadata={"help": "Prompt masking rate of the one-step estimator."})
    trajectory_steps: int | None = field(
        default=None, metadata={"help": "Trajectory estimator: commit steps scored per row (None = all)."}
    )
    correct_threshold: float = field(
        default=1.0, metadata={"help": "Total reward at which an answer counts as correct (accuracy, IGPO, MDPO)."}
    )
    algorithm_kwargs: dict[str, Any] | None = field(
        default=None, metadata={"help": "Further fields of the objective's recipe section, e.g. MDPO's sample_train_steps."}
    )

    def __post_init__(self) -> None:
        if self.bf16 is None and not torch.cuda.is_available():
            self.bf16 = False  # TRL defaults to bf16, which a CPU-only machine rejects
        super().__post_init__()

    def recipe(self) -> Recipe:
        """The rollout and algorithm sections as an unmask recipe (validated: one clear error)."""
        algorithm: dict[str, Any] = {
            "name": self.algorithm, "beta": self.beta, "epsilon": self.epsilon,
            "epsilon_high": self.epsilon_high, "num_iterations": self.num_iterations,
            "scale_rewards": self.scale_rewards, "correct_threshold": self.correct_threshold,
        }
        fields = ALGORITHMS[self.algorithm].model_fields if self.algorithm in ALGORITHMS else {}
        algorithm.update({name: getattr(self, name) for name in ("p_mask", "trajectory_steps") if name in fields})
        if self.estimator is not None:
            algorithm["estimator"] = self.estimator
        algorithm.update(self.algorithm_kwargs or {})
        rollout = {name: getattr(self, name) for name in SamplerConfig.model_fields if hasattr(self, name)}
        rollout.update(
            num_generations=self.num_generations, max_completion_length=self.max_completion_length,
            block_length=self.block_length or self.max_completion_length,
        )
        return validate_recipe({"rollout": rollout, "algorithm": algorithm, "seed": self.seed}, "DiffusionGRPOConfig")


class DiffusionGRPOTrainer(GRPOTrainer):
    """GRPO-family RL for masked diffusion LMs with TRL's trainer, datasets and reward functions.

    ``model`` is an unmask model (``DiffusionLM``) or anything ``unmask.models.load_model``
    takes (a checkpoint directory, ``builtin:tiny-countdown``, a hub id of LLaDA/Dream).
    With ``peft_config`` (a ``peft.LoraConfig``) only the adapter trains and the
    reference is the model with the adapter disabled; ``target_modules`` names are
    matched inside the transformer blocks (left unset: the family's defaults).
    """

    _tag_names = ["trl", "grpo", "unmask", "diffusion"]
    _name = "DiffusionGRPO"
    # compute_loss returns the micro-batch loss already scaled by its share of the optimizer step's items
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: DiffusionLM | str,
        reward_funcs: Any,
        args: DiffusionGRPOConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        callbacks: list[Any] | None = None,
        optimizers: tuple[Any, Any] = (None, None),
        peft_config: PeftConfig | None = None,
        critic: Critic | None = None,
    ) -> None:
        if args is None:
            args = DiffusionGRPOConfig("DiffusionGRPO")
        if not isinstance(args, DiffusionGRPOConfig):
            raise UserError("args: pass a DiffusionGRPOConfig (GRPOConfig plus the sampler and objective fields)")
        if args.use_vllm:
            raise UserError("use_vllm: vLLM serves no masked diffusion LM that unmask trains; set use_vllm=False")
        if train_dataset is None:
            raise UserError("train_dataset: a dataset with a 'prompt' column is required")
        if args.steps_per_generation % args.gradient_accumulation_steps:
            raise UserError(
                f"steps_per_generation ({args.steps_per_generation}) must be a multiple of gradient_accumulation_steps "
                f"({args.gradient_accumulation_steps}): an optimizer step may not span two generation batches"
            )
        recipe = args.recipe()
        torch.manual_seed(args.seed)
        base = load_model(model) if isinstance(model, str) else model
        if not isinstance(base, DiffusionLM):
            raise UserError(f"model: expected an unmask DiffusionLM or a checkpoint path, got {type(base).__name__}")
        tokenizer = processing_class if processing_class is not None else base.tokenizer
        if tokenizer is None:
            raise UserError("processing_class: the model has no tokenizer files; pass its tokenizer")
        policy = base if peft_config is None else get_peft_model(base, _scoped(peft_config, base))

        self.base_model = base
        self.objective: Objective = build_objective(
            recipe.algorithm, process=base.process, temperature=recipe.rollout.temperature,
            gen_length=recipe.rollout.max_completion_length,
        )
        self._init_rewards(reward_funcs, args)
        self._init_grpo_state(args)
        super(GRPOTrainer, self).__init__(
            model=policy, args=args, data_collator=identity, train_dataset=train_dataset,
            eval_dataset=eval_dataset, processing_class=tokenizer, callbacks=callbacks, optimizers=optimizers,
        )
        self._tokenizer = tokenizer
        if self.accelerator.is_main_process and self.log_completions:
            (Path(args.output_dir) / "completions").mkdir(parents=True, exist_ok=True)
        self.ref_model = None
        if self.objective.needs_reference and peft_config is None:
            self.ref_model = copy.deepcopy(base).eval().requires_grad_(False).to(self.accelerator.device)
        self.rollouts = Rollouts(
            local_sampler(policy), recipe.rollout, self._score_texts, tokenizer,
            process=base.process, eos_ids=base.eos_token_ids,
            correct_threshold=recipe.algorithm.correct_threshold, record=self.objective.record_steps,
            device=self.accelerator.device,
        )
        self._scorer = FrozenScorer(self.objective, self.model, self.ref_model, self.accelerator.unwrap_model)
        #: a value model the update engine asks for token advantages and a value loss (rl/critic.py)
        self.critic = critic
        self._batch: TrainBatch | None = None
        self._cut: MicroBatches | None = None
        self._frozen: dict[str, list[list[Scores | None]]] = {}
        self._keys: list[list[Any]] = []

    # -- set-up --------------------------------------------------------------
    def _init_rewards(self, reward_funcs: Any, args: DiffusionGRPOConfig) -> None:
        """TRL's reward attributes; reward functions are TRL-signature callables."""
        funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        if not funcs or not all(callable(f) and not isinstance(f, (str, torch.nn.Module)) for f in funcs):
            raise UserError(
                "reward_funcs: give one or more functions with TRL's signature "
                "f(prompts, completions, **columns) -> list[float]; reward models are not supported"
            )
        if args.reward_weights is not None and len(args.reward_weights) != len(funcs):
            raise UserError(f"reward_weights has {len(args.reward_weights)} entries for {len(funcs)} reward functions")
        self.reward_funcs = funcs
        self.reward_func_names = [getattr(f, "__name__", type(f).__name__) for f in funcs]
        self.reward_weights = torch.tensor(args.reward_weights or [1.0] * len(funcs), dtype=torch.float32)
        self.reward_processing_classes = [None] * len(funcs)
        self.environments = None
        self._has_async_funcs = any(is_async_callable(f) for f in funcs)
        if self._has_async_funcs:  # TRL runs async reward functions (e.g. LLM judges) on a daemon event loop
            self.async_loop_thread, self.async_loop, ready = start_event_loop_in_daemon(name="DiffusionGRPO-AsyncLoop")
            ready.wait()
            atexit.register(shutdown_event_loop_in_daemon, self.async_loop_thread, self.async_loop)
        self.chat_template_kwargs = args.chat_template_kwargs or {}

    def _init_grpo_state(self, args: DiffusionGRPOConfig) -> None:
        """The ``GRPOTrainer`` attributes its inherited sampler, buffering and logging read."""
        self.num_generations = args.num_generations
        self.num_generations_eval = args.num_generations_eval or args.num_generations
        self.num_iterations = args.num_iterations
        self.shuffle_dataset = args.shuffle_dataset
        self.use_adaptive_entropy = False
        self._step = 0
        self._buffered_inputs = None
        self._current_train_step_time = 0.0
        self._metrics: dict[str, defaultdict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.log_completions = args.log_completions
        self.log_unique_prompts = args.log_unique_prompts
        self.num_completions_to_print = args.num_completions_to_print
        size = args.generation_batch_size
        self._logs = {
            "images": deque(maxlen=size), "prompt": deque(maxlen=size), "completion": deque(maxlen=size),
            "rewards": defaultdict(lambda: deque(maxlen=size)), "advantages": deque(maxlen=size),
            "extra": defaultdict(lambda: deque(maxlen=size)),
        }
        self._pending_extra_logs: defaultdict[str, list[Any]] = defaultdict(list)
        self._pending_metrics: defaultdict[str, list[float]] = defaultdict(list)

    # -- rollouts and rewards --------------------------------------------------
    def _prompt_texts(self, prompts: list[Any]) -> list[str]:
        """Plain prompts as given; conversational ones through the tokenizer's chat template (TRL's rule)."""
        if is_conversational({"prompt": prompts[0]}):
            return [apply_chat_template({"prompt": p}, self._tokenizer, **self.chat_template_kwargs)["prompt"]
                    for p in prompts]
        return list(prompts)

    def _score_texts(
        self, prompts: list[Any], completions: list[str], columns: dict[str, list[Any]], completion_ids: list[list[int]]
    ) -> RewardBatch:
        """TRL's reward call (``_calculate_rewards``) in the shape unmask's ``Rollouts`` expects."""
        inputs = [{"prompt": p, **{k: v[i] for k, v in columns.items()}} for i, p in enumerate(prompts)]
        if is_conversational({"prompt": prompts[0]}):  # TRL hands conversational datasets message lists
            completions = [[{"role": "assistant", "content": text}] for text in completions]
        per_func = self._calculate_rewards(inputs, prompts, completions, completion_ids)
        start = self.accelerator.process_index * len(prompts)
        per_func = per_func[start : start + len(prompts)].cpu()  # TRL gathers over processes; keep this one's rows
        totals = (per_func * self.reward_weights[None]).nansum(1)
        per_reward = {n: per_func[:, i].tolist() for i, n in enumerate(self.reward_func_names)}
        self._last_rewards = per_reward  # for TRL's completions table (log_completions)
        metrics = {f"rewards/{n}/mean": float(torch.nanmean(per_func[:, i])) for i, n in enumerate(self.reward_func_names)}
        return RewardBatch(totals.tolist(), per_reward, metrics)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """Roll out with unmask's sampler, grade with TRL's reward functions, let the objective build its batch.

        Returns ``{"index": [N]}``: row numbers into the prepared ``TrainBatch`` kept on the trainer.
        """
        mode = "train" if self.model.training else "eval"
        prompts = [x["prompt"] for x in inputs]
        base = self.base_model
        prompt_ids, attention = encode_prompts(self._tokenizer, self._prompt_texts(prompts), base.pad_token_id)
        # seeds follow the optimizer step, so a run resumed from a checkpoint samples what it would have
        self.rollouts.seed = derive_seed(self.args.seed, self.state.global_step, mode == "eval", self.accelerator.process_index)
        traj = self.rollouts.generate(prompt_ids, attention)
        result = self.rollouts.score(traj, inputs)
        rollout = Rollout(traj, list(inputs), result.rewards, result.correct, self.num_generations,
                          seed=self.rollouts.seed)
        self._batch = self.objective.prepare(rollout, self.rollouts)

        metrics = self._metrics[mode]
        grouped = result.rewards.view(-1, self.num_generations)
        metrics["reward"].append(float(result.rewards.mean()))
        metrics["reward_std"].append(float(result.rewards.std()) if len(result.rewards) > 1 else 0.0)
        metrics["frac_reward_zero_std"].append(float((grouped.std(1) == 0).float().mean()))
        metrics["accuracy"].append(float(result.correct.float().mean()))
        metrics["completions/mean_length"].append(float(traj.answer_mask.sum(1).float().mean()))
        metrics["forward_passes"].append(float(traj.nfe.float().mean()))
        for key, value in {**result.metrics, **self._batch.metrics}.items():
            metrics[key].append(value)
        completions = decode_answers(self._tokenizer, traj.answer_ids, base.eos_token_ids)
        self._logs["prompt"].extend(gather_object(prompts))
        self._logs["completion"].extend(gather_object(completions))
        for name, values in self._last_rewards.items():
            self._logs["rewards"][name].extend(gather_object(values))
        per_row = len(self._batch) == len(prompts)  # MDPO's items are (row, step) pairs: no per-row advantage
        advantages = self._batch.advantages.tolist() if per_row else [math.nan] * len(prompts)
        self._logs["advantages"].extend(gather_object(advantages))
        return {"index": torch.arange(len(self._batch))}

    # -- scoring and loss ------------------------------------------------------
    def _prepare_inputs(self, generation_batch: Any) -> dict[str, Any]:
        """TRL's buffering (a generation batch feeds ``steps_per_generation × num_iterations`` micro-batch
        steps), with the generation batch cut by the update engine (``_plan_update``)."""
        if not self.model.training:
            return self._generate_and_score_completions(generation_batch)
        steps = self.args.steps_per_generation
        if self._buffered_inputs is None or self._step % (steps * self.num_iterations) == 0:
            self._generate_and_score_completions(generation_batch)
            self._plan_update()
        return self._buffered_inputs[self._step % steps]

    def _plan_update(self) -> None:
        """Cut ``self._batch`` as unmask's trainer cuts it, then θ_old and reference scores.

        ``unmask.rl.update`` decides: the shuffle and the ``steps_per_generation`` micro-batches
        (``per_device_train_batch_size`` items each when the objective kept one item per
        answer), each one's loss scale, the keys (this rank's own), which θ_old passes the
        off-policy steps need, and the reference passes.
        """
        assert self._batch is not None
        self._cut = cut_batch(
            len(self._batch), seed=self.args.seed, step=self.state.global_step,
            count=self.args.steps_per_generation, accumulate=self.args.gradient_accumulation_steps,
        )
        self._buffered_inputs = [{"index": rows} for rows in self._cut.indices]
        micro = self._cut.select(self._batch, self.accelerator.device)
        self._keys = estimator_keys(
            self.objective, micro, seed=self.args.seed, step=self.state.global_step,
            iterations=self.num_iterations, process_index=self.accelerator.process_index,
        )
        windows = self._cut.windows
        old, ref = frozen_passes(
            self.objective, micro, self._keys, self._scorer,
            optimizer_steps=self.num_iterations * len(windows), first_step=windows[0],
        )
        self._frozen = {name: scores for name, scores in (("old", old), ("ref", ref)) if scores is not None}

    def _micro(self, inputs: dict[str, Any]) -> TrainBatch:
        assert self._batch is not None
        return self._batch.select(inputs["index"].cpu()).to(self.accelerator.device)

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        if return_outputs:
            raise ValueError("DiffusionGRPOTrainer does not return outputs")
        mb = self._micro(inputs)
        if len(mb) == 0:  # an objective may keep no items (e.g. every group dropped): nothing to learn, no NaN
            return torch.zeros((), device=self.accelerator.device, requires_grad=True)
        mode = "train" if model.training else "eval"
        if mode == "train":
            i = (self._step // self.args.steps_per_generation) % self.num_iterations
            j = self._step % self.args.steps_per_generation
            key = self._keys[i][j]
            old = self._frozen["old"][i][j] if "old" in self._frozen else None
            ref = self._frozen["ref"][i][j] if "ref" in self._frozen else None
        else:
            key = self.objective.key(mb, derive_seed(self.args.seed, self.state.global_step, 1))
            old, ref = None, (self._scorer(mb, key, "ref") if self.objective.needs_reference else None)
        loss, metrics = micro_batch_loss(self.objective, model, mb, key, old, ref, self.critic)
        for name, value in metrics.items():
            if math.isfinite(value):
                self._metrics[mode][name].append(value)
        return self._cut.scaled(j, loss) if mode == "train" else loss


def _scoped(config: PeftConfig, model: DiffusionLM) -> PeftConfig:
    """A LoRA config whose module names are matched inside the blocks only (never the LM head)."""
    targets = getattr(config, "target_modules", None)
    if isinstance(targets, str):
        return config
    scoped = copy.copy(config)
    scoped.target_modules = target_regex(model, sorted(targets) if targets else None, lm_head=False)
    return scoped


__all__ = ["DiffusionGRPOConfig", "DiffusionGRPOTrainer"]
