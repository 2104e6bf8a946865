"""Rollout strategies and speed-ups against the reference sampler: tokens/s, FLOPs per answer, agreement.

    python bench/rollout.py [--model builtin:tiny-countdown] [--limit 1000] [--tiny-blocks 16,4]
                            [--llada-shape 256,4,4,768] [--threads 1] [--repeats 1]

One run, three models. (a) The shipped tiny model on the default run's held-out
Countdown set at its default greedy evaluation (``recipes/tiny/countdown_mdpo.yaml``:
16 tokens, 16 steps, one 16-token block), plus smaller blocks where a KV cache has
more to reuse; the task accuracy of each setting is graded. (b) A random model with
LLaDA's architecture and full 126k vocabulary, scaled down to this machine, on random
prompts: its numbers measure cost; its answers carry no meaning (a random model is
never confident, so threshold decoding and early exit change nothing there). (c) A
random SDAR-shaped block-diffusion model: the exact block cache against the uncached
block sampler (``--skip tiny --skip llada`` runs it alone).

Every setting is the reference sampler (docs/sampling.md §1: no cache, LM head on every
column) plus the named accelerations; ratios are against the reference of the same
model and block. Tokens/s counts ``gen_length`` tokens per answer and only the time
spent in ``generate`` (not grading); it is wall time with ``--threads`` CPU threads,
so on a shared machine repeat (``--repeats``) and read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from unmask.evaluation import EvalSettings, evaluate
from unmask.models import LLaDA
from unmask.models.base import DiffusionLM
from unmask.models.llada import LLaDAConfig
from unmask.models.sdar import SDAR, SDARConfig
from unmask.rollouts.generate import generate
from unmask.rollouts.trajectory import Trajectory

#: generate() options of each setting; the reference turns off the (exact) partial head too.
#: Settings named "exact ..." start from the model's fastest exact options (``exact_fast``).
VARIANTS: dict[str, dict[str, Any]] = {
    "reference": {"partial_head": False},
    "exact (fast)": {},
    "prefix cache": {"cache": "prefix", "partial_head": False},
    "dual cache": {"cache": "dual", "partial_head": False},
    "threshold 0.9": {"threshold": 0.9, "partial_head": False},
    "early exit": {"early_exit": True, "partial_head": False},
    "dual + threshold 0.9": {"cache": "dual", "threshold": 0.9, "partial_head": False},
    "dual + threshold 0.9 + partial head + early exit": {"cache": "dual", "threshold": 0.9, "early_exit": True},
    # approximate combinations on top of the exact fast path (issue 22: >= 10x at <= 1 point)
    "exact fast + threshold 0.9 + early exit": {"threshold": 0.9, "early_exit": True},
    "exact fast + threshold 0.8 + early exit": {"threshold": 0.8, "early_exit": True},
    "exact fast + threshold 0.75 + early exit": {"threshold": 0.75, "early_exit": True},
    "exact fast + threshold 0.7 + early exit": {"threshold": 0.7, "early_exit": True},
    "exact fast + threshold 0.6 + early exit": {"threshold": 0.6, "early_exit": True},
    "exact fast + threshold 0.5 + early exit": {"threshold": 0.5, "early_exit": True},
    "exact fast + margin threshold 0.7 + early exit": {"remasking": "margin", "threshold": 0.7, "early_exit": True},
    "exact fast + margin threshold 0.5 + early exit": {"remasking": "margin", "threshold": 0.5, "early_exit": True},
    "delayed cache + threshold 0.9 + early exit": {"cache": "delayed", "threshold": 0.9, "early_exit": True},
    "delayed cache + threshold 0.8 + early exit": {"cache": "delayed", "threshold": 0.8, "early_exit": True},
    "exact fast + threshold 0.3 + early exit": {"threshold": 0.3, "early_exit": True},
    # the other decoding strategies, same cost model as the reference (issue 4's table)
    "random remasking": {"remasking": "random", "partial_head": False},
    "margin": {"remasking": "margin", "partial_head": False},
    "entropy": {"remasking": "entropy", "partial_head": False},
    "rcr": {"remasking": "rcr", "partial_head": False},
    "cfg 1.0": {"cfg_scale": 1.0, "partial_head": False},
}


def exact_fast(model: DiffusionLM) -> dict[str, Any]:
    """The fastest token-identical options: partial head (the default), plus the prompt's
    cached keys/values when the model's prompt is blind to the answer."""
    return {} if getattr(model.config, "prompt_attends_answer", True) else {"cache": "prompt"}


def variants(model: DiffusionLM, names: list[str] | None) -> dict[str, dict[str, Any]]:
    """The settings to run (the reference and ``names``, or all), "exact ..." ones resolved for ``model``."""
    chosen = ["reference", *(n for n in names if n != "reference")] if names else list(VARIANTS)
    unknown = [name for name in chosen if name not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown setting(s) {unknown}; choose from {list(VARIANTS)}")
    fast = exact_fast(model)
    return {name: {**fast, **VARIANTS[name]} if name.startswith("exact") else VARIANTS[name] for name in chosen}


@dataclass
class Timed:
    """A ``generate`` with fixed extra options that keeps its trajectories and time."""

    options: dict[str, Any]
    seconds: float = 0.0
    trajectories: list[Trajectory] = field(default_factory=list)

    def __call__(self, model: DiffusionLM, prompt_ids: torch.Tensor, **kwargs: Any) -> Trajectory:
        started = time.perf_counter()
        traj = generate(model, prompt_ids, **{**kwargs, **self.options})
        self.seconds += time.perf_counter() - started
        self.trajectories.append(traj)
        return traj


@dataclass
class Measured:
    """One setting's totals over all answers."""

    seconds: float
    answers: torch.Tensor  # [N, L]
    answer_mask: torch.Tensor  # [N, L]: up to and including the first EOS
    flops: torch.Tensor  # [N]
    nfe: torch.Tensor  # [N]
    accuracy: float | None = None

    @classmethod
    def of(cls, runs: list[Timed], accuracy: float | None = None) -> Measured:
        """The fastest of repeated runs (same answers each time: the sampler is seeded)."""
        best = min(runs, key=lambda run: run.seconds)
        trajs = best.trajectories
        return cls(
            best.seconds,
            torch.cat([t.answer_ids for t in trajs]),
            torch.cat([t.answer_mask for t in trajs]),
            torch.cat([t.flops for t in trajs]).double(),
            torch.cat([t.nfe for t in trajs]).double(),
            accuracy,
        )

    def token_match(self, reference: Measured) -> float:
        """Equal tokens where either answer is still live (what rewards read), over all answers."""
        live = self.answer_mask | reference.answer_mask
        return (self.answers == reference.answers)[live].double().mean().item()


def measure_tiny(model: DiffusionLM, rows: list[dict[str, Any]], setting: EvalSettings, args: argparse.Namespace) -> dict[str, Measured]:
    """Every variant on the held-out rows under ``setting``, graded like the default run's eval."""
    results = {}
    for name, options in variants(model, args.only).items():
        runs = [Timed(options) for _ in range(args.repeats)]
        for run in runs:
            result = evaluate(
                model, rows, "countdown", setting, batch_size=args.batch_size, seed=args.seed,
                chat_template=False, generate_fn=run,
            )  # fmt: skip
        results[name] = Measured.of(runs, 100 * result.accuracy())
    return results


def measure_random(
    model: DiffusionLM, prompts: torch.Tensor, settings: dict[str, int], args: argparse.Namespace
) -> dict[str, Measured]:
    results = {}
    for name, options in variants(model, args.only).items():
        runs = [Timed(options) for _ in range(args.repeats)]
        for run in runs:
            run(model, prompts, seed=0, **settings)
        results[name] = Measured.of(runs)
    return results


def markdown(title: str, gen_length: int, results: dict[str, Measured]) -> str:
    """The docs/measurements.md table: speed and cost as ratios to the reference, agreement with it."""
    ref = results["reference"]
    graded = ref.accuracy is not None
    header = ["setting", "tokens/s", "× ref", "GFLOPs/answer", "FLOPs ÷ ref", "NFE/answer", "token match %"]
    header += ["accuracy %", "Δ acc (pts)"] if graded else []
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ref_speed = len(ref.answers) * gen_length / ref.seconds
    for name, m in results.items():
        speed = len(m.answers) * gen_length / m.seconds
        cells = [
            name, f"{speed:,.0f}", f"{speed / ref_speed:.2f}", f"{m.flops.mean() / 1e9:.3f}",
            f"{ref.flops.mean() / m.flops.mean():.2f}", f"{m.nfe.mean():.1f}", f"{100 * m.token_match(ref):.1f}",
        ]  # fmt: skip
        if graded:
            cells += [f"{m.accuracy:.1f}", f"{m.accuracy - ref.accuracy:+.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tiny_part(args: argparse.Namespace) -> None:
    from unmask.cli import resolve_recipe_path
    from unmask.recipe import load_recipe
    from unmask.run import SAMPLED, eval_rows, eval_settings, model_factory

    recipe = load_recipe(resolve_recipe_path("tiny/countdown_mdpo"))
    recipe.eval.limit = args.limit
    rows = eval_rows(recipe)
    if args.model != recipe.model.name_or_path:
        recipe.model.name_or_path = args.model
    model = model_factory(recipe.model)().eval()
    default = next(s for name, s in eval_settings(recipe).items() if name != SAMPLED)  # greedy, 1 token/step
    evaluate(model, rows[: args.batch_size], "countdown", default, chat_template=False)  # warm-up
    for block in args.tiny_blocks:
        setting = EvalSettings(default.gen_length, default.steps, block, default.temperature, default.remasking)
        results = measure_tiny(model, rows, setting, args)
        title = (
            f"{args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters), "
            f"{len(rows)} held-out Countdown problems, {setting.label}"
            f"{' (the default)' if block == default.block_length else ''}"
        )
        print(markdown(title, setting.gen_length, results), end="\n\n", flush=True)


def llada_part(args: argparse.Namespace) -> None:
    width, layers, heads, mlp, *vocab = args.llada_shape
    ids = {}
    if vocab:  # a smaller vocabulary: the special ids move to its end
        ids = {"vocab_size": vocab[0], "embedding_size": vocab[0], "mask_token_id": vocab[0] - 1}
        ids |= {"eos_token_id": vocab[0] - 2, "pad_token_id": vocab[0] - 2}
    config = LLaDAConfig(d_model=width, n_layers=layers, n_heads=heads, n_kv_heads=heads, mlp_hidden_size=mlp, **ids)
    model = LLaDA(config).eval()
    model.init_weights(0)
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, config.vocab_size - 2, (args.llada_batch, args.llada_prompt), generator=gen)
    settings = {"gen_length": 32, "steps": 32, "block_length": 8}
    generate(model, prompts, gen_length=16, steps=2, block_length=16)  # warm-up
    results = measure_random(model, prompts, settings, args)
    title = (
        f"random LLaDA-shaped model: d_model {width}, {layers} layers, {heads} heads, MLP {mlp}, "
        f"vocab {config.vocab_size} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters); "
        f"{args.llada_batch} random prompts of {args.llada_prompt} tokens, "
        f"len{settings['gen_length']}-steps{settings['steps']}-block{settings['block_length']}"
    )
    print(markdown(title, settings["gen_length"], results), end="\n\n", flush=True)


#: block-diffusion settings, against the uncached block sampler with the LM head on every column
BLOCK_VARIANTS: dict[str, dict[str, Any]] = {
    "reference": {"partial_head": False},
    "exact (fast)": {},
    "block cache": {"cache": "block"},
    "block cache + dynamic 0.9": {"cache": "block", "dynamic_threshold": 0.9},
    "block cache + threshold 0.9": {"cache": "block", "threshold": 0.9},
}


def sdar_part(args: argparse.Namespace) -> None:
    """(c) A random SDAR-shaped block model (Qwen3 layout, block 4) on random prompts: the block cache's cost."""
    width, layers, heads, kv_heads, head_dim, mlp, vocab = args.sdar_shape
    config = SDARConfig(
        hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=head_dim, intermediate_size=mlp, vocab_size=vocab, block_size=4, mask_token_id=vocab - 1,
        bos_token_id=vocab - 2, eos_token_id=vocab - 2,
    )  # fmt: skip
    model = SDAR(config).eval()
    model.init_weights(0)
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, vocab - 2, (args.llada_batch, args.llada_prompt), generator=gen)
    settings = {"gen_length": 64, "steps": 64, "block_length": 4, "temperature": 1.0}
    generate(model, prompts, gen_length=8, steps=2, block_length=4)  # warm-up
    results = {}
    for name, options in BLOCK_VARIANTS.items():
        runs = [Timed(options) for _ in range(args.repeats)]
        for run in runs:
            run(model, prompts, seed=0, **settings)
        results[name] = Measured.of(runs)
    title = (
        f"random SDAR-shaped block model: width {width}, {layers} layers, {heads}/{kv_heads} heads of {head_dim}, "
        f"MLP {mlp}, vocab {vocab} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters); "
        f"{args.llada_batch} random prompts of {args.llada_prompt} tokens, len64-steps64-block4, temperature 1"
    )
    print(markdown(title, settings["gen_length"], results), end="\n\n", flush=True)


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:tiny-countdown", help="tiny checkpoint (builtin:NAME or dir)")
    parser.add_argument("--limit", type=int, default=1000, help="held-out problems")
    parser.add_argument("--tiny-blocks", type=int_list, default=[16, 4], help="block lengths for the tiny model")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="time each setting this often, keep the fastest")
    parser.add_argument("--llada-shape", type=int_list, default=[256, 4, 4, 768], help="d_model,layers,heads,mlp[,vocab]")
    parser.add_argument("--llada-batch", type=int, default=2)
    parser.add_argument("--llada-prompt", type=int, default=32)
    parser.add_argument("--sdar-shape", type=int_list, default=[256, 4, 4, 2, 64, 768, 32000],
                        help="width,layers,heads,kv_heads,head_dim,mlp,vocab of the random block model")
    parser.add_argument("--skip", choices=["tiny", "llada", "sdar"], action="append", default=[],
                        help="leave out a part (repeatable)")
    parser.add_argument("--only", type=lambda text: text.split(";"), default=None,
                        help="';'-separated setting names to run beside the reference (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (oversubscription is slow)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, part in (("tiny", tiny_part), ("llada", llada_part), ("sdar", sdar_part)):
        if name not in args.skip:
            part(args)


if __name__ == "__main__":
    main()
