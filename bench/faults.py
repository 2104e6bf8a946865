"""Fault injection: each fault injected into short tiny-model runs, survived and counted.

    python bench/faults.py --repeats 3 --seed 0

Faults: SIGKILL of ``unmask train`` at a random point of a step (then resume from
the latest checkpoint), SIGKILL in the middle of a checkpoint write, SIGTERM (the
run must save and exit 0), a rollout actor killed mid-batch, a reward worker
killed and one that hangs, a NaN loss at one step, a corrupt and a truncated
checkpoint (refused with one line). The table says, per fault, how often it was
injected, how often the run survived it, and whether the end result equals an
uninterrupted run (for faults whose very point is to lose one item or step, it
says what was lost and where that is counted instead). Exit code 1 if any fault
was not survived. ``tests/test_faults.py`` runs each fault once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

RECIPE = "tiny/countdown_diffu_grpo"
STEPS = 4
#: a 4-step run of the shipped tiny model, a checkpoint after every step
OVERRIDES = [
    f"optim.max_steps={STEPS}", "rollout.prompts_per_step=2", "rollout.num_generations=4",
    "optim.per_device_train_batch_size=4", "checkpoint.save_steps=1", "eval.before=false", "eval.limit=4",
    "logging.progress=false", "logging.plot=false", "rewards.num_workers=0",
]
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Outcome:
    survived: bool
    identical: bool | None  # None: the fault loses an item or a step by design
    note: str = ""


# -- unmask train in a child process -----------------------------------------------------
def train_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "unmask.cli", "train", RECIPE, f"output_dir={out}", *OVERRIDES, *extra]


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_train(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(train_command(out, *extra), env=child_env(), capture_output=True, text=True, timeout=600)


def training_records(out: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's training lines without wall-clock fields (those differ between any two runs)."""
    path = out / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "tokens_per_second"}
            for r in records if "phase" not in r]


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def fingerprint(out: Path) -> tuple[list[dict[str, Any]], str]:
    """What must match an uninterrupted run: every step's metrics and the final adapter's bytes."""
    adapter = out / f"checkpoint-{STEPS}" / "adapter_model.safetensors"
    digest = hashlib.sha256(adapter.read_bytes()).hexdigest() if adapter.is_file() else "missing"
    return training_records(out), digest


def resume_and_compare(out: Path, reference: Path) -> Outcome:
    """Resume from the latest checkpoint (or start again without one); compare with ``reference``."""
    checkpoint = latest_checkpoint(out)
    extra = [f"checkpoint.resume_from={checkpoint}"] if checkpoint else []
    done = run_train(out, *extra)
    if done.returncode != 0:
        return Outcome(False, False, f"resume failed: {done.stderr.strip().splitlines()[-1:]}")
    stale = list(out.glob(".checkpoint-*"))
    same = fingerprint(out) == fingerprint(reference)
    return Outcome(not stale, same, f"resumed from {checkpoint.name if checkpoint else 'scratch'}")


def wait_for_steps(out: Path, process: subprocess.Popen, steps: int, timeout: float = 300) -> bool:
    """Wait until ``steps`` training lines are logged; False if the run ended first."""
    deadline = time.monotonic() + timeout
    while len(training_records(out)) < steps:
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def sigkill_at_random_point(work: Path, reference: Path, rng: random.Random) -> Outcome:
    """SIGKILL somewhere inside a random step (after 1..STEPS-1 logged steps, plus a random delay)."""
    out = work / "sigkill"
    process = subprocess.Popen(train_command(out), env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = rng.randint(1, STEPS - 1)
    wait_for_steps(out, process, after)
    time.sleep(rng.uniform(0.0, 1.0))
    process.kill()
    process.wait()
    outcome = resume_and_compare(out, reference)
    outcome.note = f"killed after step {after}+; {outcome.note}"
    return outcome


def sigkill_mid_checkpoint(work: Path, reference: Path, rng: random.Random) -> Outcome:
    """The run kills itself halfway through writing ``optim.pt`` of a random checkpoint."""
    out = work / "mid-checkpoint"
    nth = rng.randint(1, STEPS - 1)
    command = [sys.executable, str(Path(__file__).resolve()), "--die-in-checkpoint", str(nth), "--",
               *train_command(out)[3:]]
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=600)
    if done.returncode != -signal.SIGKILL:
        return Outcome(False, False, f"the injected kill did not happen (exit {done.returncode})")
    half_written = [p.name for p in out.glob(".checkpoint-*")]
    outcome = resume_and_compare(out, reference)
    outcome.note = f"killed writing checkpoint-{nth} (left {half_written}); {outcome.note}"
    return outcome


def sigterm(work: Path, reference: Path, rng: random.Random) -> Outcome:
    """SIGTERM mid-run: exit code 0 with a checkpoint of the step it finished, then resume."""
    out = work / "sigterm"
    process = subprocess.Popen(train_command(out, "checkpoint.save_steps=0"), env=child_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_steps(out, process, rng.randint(1, STEPS - 1))
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    checkpoint = latest_checkpoint(out)
    if process.returncode != 0 or checkpoint is None or "SIGTERM: saved" not in output:
        return Outcome(False, False, f"exit {process.returncode}, checkpoint {checkpoint}: {output[-300:]}")
    outcome = resume_and_compare(out, reference)
    outcome.note = f"exit 0 with {checkpoint.name}; {outcome.note}"
    return outcome


def damaged_checkpoint(work: Path, reference: Path, rng: random.Random, damage: str) -> Outcome:
    """Resume from a copy of a checkpoint with a flipped byte / a truncated file: one clear line, exit 2."""
    source = reference / f"checkpoint-{rng.randint(1, STEPS - 1)}"
    copy = work / f"{damage}-{source.name}"
    shutil.copytree(source, copy)
    name = rng.choice(["adapter_model.safetensors", "optim.pt"])
    data = bytearray((copy / name).read_bytes())
    if damage == "corrupt":
        data[rng.randrange(len(data) // 2, len(data))] ^= 0xFF
    else:
        data = data[: rng.randrange(1, len(data))]
    (copy / name).write_bytes(bytes(data))
    done = run_train(work / f"{damage}-run", f"checkpoint.resume_from={copy}")
    lines = done.stderr.strip().splitlines()
    refused = done.returncode == 2 and len(lines) == 1 and "truncated or corrupt" in lines[0]
    return Outcome(refused, None, f"{name}: {lines[-1][:90] if lines else 'no message'}")


# -- in-process faults -------------------------------------------------------------------
def actor_killed_mid_batch(work: Path, reference: Path, rng: random.Random) -> Outcome:
    """Kill one of two rollout actors while it generates; the pool must replace it and rerun its rows."""
    import ray

    from unmask.models.lora import apply_lora
    from unmask.recipe import load_recipe
    from unmask.rollouts.generate import generate
    from unmask.rollouts.pool import RolloutPool
    from unmask.run import model_factory

    factory = model_factory(load_recipe(ROOT / "recipes" / f"{RECIPE}.yaml").model)
    settings = {"gen_length": 32, "steps": 32, "block_length": 32, "temperature": 0.7, "seed": rng.randrange(1 << 30)}
    prompts = torch.randint(5, 20, (8, 24), generator=torch.Generator().manual_seed(settings["seed"]))
    expected = generate(apply_lora(factory(), r=4).eval(), prompts, **settings).tokens
    owns = not ray.is_initialized()
    if owns:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    pool = RolloutPool(_LoraReplica(factory), 2)
    try:
        pool.generate(prompts[:2], **{**settings, "gen_length": 4, "steps": 4, "block_length": 4})  # actors ready
        victim = pool._actors[1]
        timer = threading.Timer(rng.uniform(0.05, 0.3), ray.kill, args=(victim,))
        timer.start()
        started = time.perf_counter()
        got = pool.generate(prompts, **settings).tokens
        timer.join()
        return Outcome(pool.restarts >= 1, torch.equal(got, expected),
                       f"{pool.restarts} actor restart(s), batch took {time.perf_counter() - started:.1f} s")
    finally:
        pool.shutdown()
        if owns:
            ray.shutdown()


class _LoraReplica:
    """Picklable factory of a LoRA-wrapped replica of the recipe's model."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory

    def __call__(self) -> Any:
        from unmask.models.lora import apply_lora

        torch.set_num_threads(1)
        return apply_lora(self.factory(), r=4)


def fault_reward(prompts: list[str], completions: list[str], marker: str = "", **columns: Any) -> list[float]:
    """Countdown's reward, except that the one call that claims the ``marker`` file crashes or hangs its worker."""
    from unmask.rewards.functions import countdown_reward

    try:
        kind = Path(marker).read_text()
        os.remove(marker)
    except (FileNotFoundError, IsADirectoryError):
        kind = ""
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":
        time.sleep(3600)
    return countdown_reward(prompts, completions, **columns)


def reward_worker_fault(work: Path, reference: Path, rng: random.Random, kind: str) -> Outcome:
    """A 2-step in-process run grading in 2 worker processes; one grading call kills or hangs its worker."""
    from unmask.recipe import load_recipe
    from unmask.rl.trainer import Trainer
    from unmask.run import model_factory

    marker = work / f"{kind}.marker"
    marker.write_text(kind)
    overrides = [o for o in OVERRIDES if not o.startswith(("rewards.", "optim.max_steps"))]
    recipe = load_recipe(ROOT / "recipes" / f"{RECIPE}.yaml", [
        *overrides, "optim.max_steps=2", f"output_dir={work / kind}", "rewards.num_workers=2", "rewards.timeout=2",
        f"rewards.functions=[{{name: {Path(__file__).stem}:fault_reward, kwargs: {{marker: {marker}}}}}]",
    ])
    trainer = Trainer(recipe, model_factory=model_factory(recipe.model))
    metrics = list(trainer.steps())
    counted = {k: trainer.runner.counters[k] for k in ("errors", "timeouts", "worker_restarts")}
    hit = not marker.exists()
    expected = counted["errors"] >= 1 if kind == "kill" else counted["timeouts"] >= 1
    return Outcome(hit and expected and len(metrics) == 2, None, f"one answer scored on_error; counted {counted}")


def nan_loss_at_one_step(work: Path, reference: Path, rng: random.Random) -> Outcome:
    """The objective's loss is NaN at one step: the step is skipped, weights untouched, training goes on."""
    from unmask.recipe import load_recipe
    from unmask.rl.checkpoint import trainable_state
    from unmask.rl.trainer import Trainer
    from unmask.run import model_factory

    recipe = load_recipe(ROOT / "recipes" / f"{RECIPE}.yaml", [*OVERRIDES, f"output_dir={work / 'nan'}"])
    trainer = Trainer(recipe, model_factory=model_factory(recipe.model))
    bad_step = rng.randint(1, STEPS - 1)  # 0-based step index that gets the NaN
    loss = trainer.objective.loss

    def poisoned(*args: Any) -> tuple[torch.Tensor, dict[str, float]]:
        value, metrics = loss(*args)
        return (value * float("nan"), metrics) if trainer.step == bad_step else (value, metrics)

    trainer.objective.loss = poisoned  # type: ignore[method-assign]
    snapshots, metrics = [], []
    for m in trainer.steps():
        metrics.append(m)
        snapshots.append(trainable_state(trainer.unwrapped))
    untouched = all(torch.equal(snapshots[bad_step][k], snapshots[bad_step - 1][k]) for k in snapshots[0])
    skipped = [m["skipped"] for m in metrics]
    ok = len(metrics) == STEPS and untouched and skipped == [float(i == bad_step) for i in range(STEPS)]
    return Outcome(ok, None, f"step {bad_step + 1} skipped, weights untouched; skipped={skipped}")


def _die_in_checkpoint(nth: int, argv: list[str]) -> int:
    """Run ``unmask`` with ``torch.save`` of the ``nth`` checkpoint's optim.pt cut off by SIGKILL."""
    import unmask.rl.checkpoint as checkpoint
    from unmask.cli import main

    calls = 0
    save = torch.save

    def dying_save(obj: Any, path: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls < nth:
            return save(obj, path, *args, **kwargs)
        save(obj, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])  # what the disk holds when the kill lands
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.torch.save = dying_save  # type: ignore[attr-defined]
    return main(argv)


FAULTS: dict[str, Callable[[Path, Path, random.Random], Outcome]] = {
    "SIGKILL trainer at a random point": sigkill_at_random_point,
    "SIGKILL mid-checkpoint write": sigkill_mid_checkpoint,
    "SIGTERM (scheduler preemption)": sigterm,
    "rollout actor killed mid-batch": actor_killed_mid_batch,
    "reward worker killed": lambda w, r, g: reward_worker_fault(w, r, g, "kill"),
    "reward worker hangs": lambda w, r, g: reward_worker_fault(w, r, g, "hang"),
    "NaN loss at one step": nan_loss_at_one_step,
    "corrupt checkpoint": lambda w, r, g: damaged_checkpoint(w, r, g, "corrupt"),
    "truncated checkpoint": lambda w, r, g: damaged_checkpoint(w, r, g, "truncated"),
}


def reference_run(work: Path) -> Path:
    """The uninterrupted run every kill/resume is compared with."""
    out = work / "reference"
    done = run_train(out)
    if done.returncode != 0:
        raise SystemExit(f"the uninterrupted reference run failed:\n{done.stderr[-3000:]}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="injections per fault")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="substrings of the fault names to run")
    parser.add_argument("--die-in-checkpoint", type=int, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.die_in_checkpoint:
        return _die_in_checkpoint(args.die_in_checkpoint, [a for a in rest if a != "--"])
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # reward workers import fault_reward from here
    from rich.console import Console
    from rich.table import Table

    rng = random.Random(args.seed)
    table = Table(title=f"faults: {args.repeats} injection(s) each into {STEPS}-step runs of {RECIPE}")
    for column in ("fault", "injected", "survived", "identical to uninterrupted", "last note"):
        table.add_column(column)
    failed = False
    with tempfile.TemporaryDirectory(prefix="unmask-faults-") as tmp:
        reference = reference_run(Path(tmp))
        for number, (name, inject) in enumerate(FAULTS.items()):
            if args.only and not any(part in name for part in args.only):
                continue
            outcomes = []
            for i in range(args.repeats):
                work = Path(tmp) / f"fault{number}-{i}"
                work.mkdir(parents=True)
                outcomes.append(inject(work, reference, rng))
            survived = sum(o.survived for o in outcomes)
            same = [o.identical for o in outcomes]
            identical = "n/a (by design)" if all(s is None for s in same) else f"{sum(bool(s) for s in same)}/{len(same)}"
            failed |= survived < len(outcomes) or any(s is False for s in same)
            table.add_row(name, str(len(outcomes)), f"{survived}/{len(outcomes)}", identical, outcomes[-1].note)
    Console(width=200).print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
