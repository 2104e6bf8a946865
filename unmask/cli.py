"""The ``unmask`` command line: train, eval, sample, pretrain, export, recipes.

User mistakes (``UserError``) print one line and exit with code 2; ``--debug``
shows the traceback instead. Heavy imports happen inside each subcommand so that
``unmask recipes`` and error messages are instant. An ``ImportError`` that reaches
``main`` means a broken install, never a missing feature: it names the import that
failed and the command that repairs it (exit code 3).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from unmask.errors import UserError

EXIT_USER_ERROR = 2
EXIT_BROKEN_INSTALL = 3
REPAIR_COMMAND = "make install  (in a checkout; elsewhere: pip install --force-reinstall unmask)"
#: ``unmask pretrain`` is ``unmask sft`` on this recipe: the build of ``builtin:tiny-countdown``
PRETRAIN_RECIPE = "tiny/sft_countdown_scratch"


def recipes_dir() -> Path:
    """The shipped recipes: ``recipes/`` next to the package (source checkout) or in the cwd."""
    for candidate in (Path(__file__).resolve().parents[1] / "recipes", Path.cwd() / "recipes"):
        if candidate.is_dir():
            return candidate
    raise UserError("no recipes/ directory found; run from the unmask repository or pass a recipe path")


def resolve_recipe_path(name: str) -> Path:
    """A recipe path as given, or a shipped one by short name (``tiny/countdown_mdpo``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = recipes_dir() / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    return shipped if shipped.is_file() else path


def cmd_recipes(args: argparse.Namespace) -> int:
    import yaml

    root = recipes_dir()
    for path in sorted(root.rglob("*.yaml")):
        if "accelerate" in path.parts:
            continue
        try:
            description = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        except yaml.YAMLError:
            description = "(invalid YAML)"
        print(f"{path.relative_to(root).with_suffix('')!s:32} {description}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from unmask.recipe import load_recipe
    from unmask.run import run_recipe
    from unmask.sft.config import is_sft_recipe

    path = resolve_recipe_path(args.recipe)
    if is_sft_recipe(path):
        raise UserError(f"{path} is an SFT recipe; run it with `unmask sft {args.recipe}`")
    run_recipe(load_recipe(path, args.overrides))
    return 0


def cmd_sft(args: argparse.Namespace) -> int:
    from unmask.sft.config import load_sft_recipe, rl_after_sft
    from unmask.sft.trainer import train_sft

    recipe = load_sft_recipe(resolve_recipe_path(args.recipe), args.overrides)
    if args.then_train:
        rl_after_sft(recipe)  # a bad fed recipe stops the run before SFT, not after it
    train_sft(recipe, end=not args.then_train)  # the RL stage then ends the processes
    if args.then_train:
        from unmask.run import run_recipe

        run_recipe(rl_after_sft(recipe))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from unmask.evaluation.cli import run_eval

    return run_eval(args)


def cmd_sample(args: argparse.Namespace) -> int:
    from unmask.rollouts.cli import run_sample

    return run_sample(args)


def cmd_export(args: argparse.Namespace) -> int:
    from unmask.models import load_model
    from unmask.models.export import merge_and_save
    from unmask.models.lora import load_adapter

    out = merge_and_save(load_adapter(load_model(args.model), args.adapter), args.out)
    print(f"wrote merged checkpoint to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from unmask.engines import ENGINES  # torch-free (unmask.evaluation imports torch)
    from unmask.rollouts.sampler_flags import GRID_SETTINGS, add_sampler_flags  # torch-free

    parser = argparse.ArgumentParser(prog="unmask", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="run an RL recipe")
    p.add_argument("recipe", help="recipe file or shipped name, e.g. tiny/countdown_mdpo")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. optim.max_steps=5")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sft", help="masked-diffusion SFT; its output_dir/final is an RL recipe's model")
    p.add_argument("recipe", help="SFT recipe file or shipped name, e.g. tiny/sft_countdown")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. optim.max_steps=5")
    p.add_argument("--then-train", action="store_true",
                   help="then run sft.feeds (the RL recipe) on output_dir/final, writing output_dir/rl")
    p.set_defaults(func=cmd_sft)

    p = sub.add_parser("recipes", help="list the shipped recipes")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("eval", help="evaluate a checkpoint on benchmarks")
    p.add_argument("--model", help="checkpoint dir, hub id or builtin:NAME")
    p.add_argument("--adapter", help="LoRA adapter directory")
    p.add_argument("--bench", default="countdown", help="comma list: gsm8k,math500,countdown,amc,sudoku")
    p.add_argument("--data-dir", help="directory with local benchmark files")
    p.add_argument("--gen-length", default=None, help="comma list of generation lengths")
    p.add_argument("--steps", default=None, help="comma list of step counts (default gen_length/2)")
    p.add_argument("--cache", default="none", help="comma list of KV caches: none,prefix,dual")
    p.add_argument("--threshold", default=None, help="comma list of confidence thresholds (parallel decoding)")
    add_sampler_flags(p, skip=GRID_SETTINGS)  # those four are the comma lists above
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output directory (resumes if it exists)")
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="compare two eval runs")
    p.add_argument("--engine", choices=ENGINES, default=ENGINES[0],
                   help="generation engine (vLLM for DiffusionGemma is not built yet: docs/diffusion-gemma.md)")
    p.add_argument("--regrade", nargs="+", metavar="FILE", type=Path,
                   help="re-score generation files (d1 JSON, unmask samples.jsonl, completion JSONL) without a model")
    p.add_argument("--task", help="with --regrade: grader for files whose task cannot be inferred (math, gsm8k, ...)")
    p.add_argument("--show-disagreements", action="store_true",
                   help="with --regrade: list items whose stored verdict differs from unmask's")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("sample", help="show a model denoising one answer, step by step")
    p.add_argument("--model", default="builtin:tiny-countdown")
    p.add_argument("--prompt", help="your own prompt (default: a held-out problem of the model's task)")
    p.add_argument("--problem", type=int, help="index of the held-out problem to pose (default: the first solved of 16)")
    p.add_argument("--task", help="benchmark of the held-out problem (default: the model's generation_config.json)")
    p.add_argument("--save", metavar="FILE.html", help="write the denoising as an HTML page, one line per step")
    add_sampler_flags(p)  # a flag left out: the model's generation_config.json, else the sampler's default
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-chat-template", action="store_true")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("pretrain", help=f"unmask sft {PRETRAIN_RECIPE}: build the tiny start model from scratch")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. seed=1 output_dir=runs/tiny")
    p.set_defaults(func=cmd_sft, recipe=PRETRAIN_RECIPE, then_train=False)

    p = sub.add_parser("export", help="merge a LoRA adapter into its base and write a checkpoint")
    p.add_argument("--model", required=True)
    p.add_argument("--adapter", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)
    return parser


def broken_install_message(exc: ImportError) -> str:
    """Which import failed, where, and the command that repairs the install."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = next((f for f in reversed(frames) if f.line and "import" in f.line), frames[-1] if frames else None)
    at = f"\n  at {where.filename}:{where.lineno}: {where.line}" if where else ""
    return f"error: broken install: {exc}{at}\n  repair it with: {REPAIR_COMMAND}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ImportError as exc:
        if args.debug:
            raise
        print(broken_install_message(exc), file=sys.stderr)
        return EXIT_BROKEN_INSTALL
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
