"""A pool of Ray actors, each holding a policy replica, that turns prompts into trajectories.

The same code runs on one CPU machine (local Ray), on a GPU box and on a cluster
(``address=``). Rows are split across actors with their global row seeds, so a
pool gives the same tokens as in-process ``generate`` with the same seed.
``num_workers=0`` runs in-process, for debugging without Ray.

Nothing here assumes a filesystem shared with the trainer: adapters travel through
Ray's object store, and each actor builds its replica with the picklable factory
(a hub id or a path that exists on every node).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from unmask.errors import UserError
from unmask.models.base import DiffusionLM
from unmask.rollouts.generate import row_seeds
from unmask.rollouts.sampler_config import split_settings
from unmask.rollouts.samplers import sample
from unmask.rollouts.trajectory import Trajectory

ModelFactory = Callable[[], DiffusionLM]


def _checked(job: dict[str, Any]) -> dict[str, Any]:
    """A job whose sampler settings are a validated ``SamplerConfig``'s dict: a mistake is one line
    in the driver, not an error from every actor."""
    sampler, rest = split_settings(job)
    return {**rest, **sampler.generate_kwargs()}


def is_lora_tensor(name: str) -> bool:
    """Whether a parameter name belongs to a peft LoRA adapter."""
    return ".lora_" in name


def load_adapter(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Copy LoRA tensors into ``model``'s parameters of the same names."""
    params = dict(model.named_parameters())
    missing = sorted(set(state_dict) - set(params))
    if missing:
        raise UserError(
            f"adapter tensors {missing[:3]} are not parameters of the rollout model: "
            "the model factory must wrap the model with the same LoRA config as the trainer"
        )
    with torch.no_grad():
        for name, value in state_dict.items():
            params[name].copy_(value)


class _Replica:
    """One model replica; the body of each Ray actor, and the in-process worker."""

    def __init__(self, factory: ModelFactory, use_gpu: bool = False) -> None:
        self.model = factory().eval()
        if use_gpu:  # Ray has set CUDA_VISIBLE_DEVICES to this actor's GPU
            self.model.to("cuda")
        self.device = next(self.model.parameters()).device
        self.version: int | None = None

    def generate(self, kwargs: dict[str, Any]) -> Trajectory:
        moved = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        return sample(self.model, **moved)

    def load_adapter(self, state_dict: dict[str, torch.Tensor], version: int | None = None) -> None:
        load_adapter(self.model, state_dict)
        self.version = version

    def where(self) -> dict[str, Any]:
        """Where this replica runs and which adapter it holds (for checks and debugging)."""
        import ray

        context = ray.get_runtime_context()
        return {"pid": os.getpid(), "node_id": context.get_node_id(), "gcs_address": context.gcs_address,
                "version": self.version}


@dataclass
class PendingRollout:
    """A submitted rollout: its jobs, the refs still running, results so far, and the adapter version used."""

    jobs: list[dict[str, Any]]
    refs: dict[Any, tuple[int, Any]]
    results: list[Trajectory | None]
    version: int | None


class RolloutPool:
    """``num_workers`` Ray actors (or none: in-process) generating trajectories.

    ``model_factory`` builds one replica (already LoRA-wrapped as the trainer's
    policy); it must be picklable. Actors that die are restarted (with the latest
    adapter) and their rows re-run, up to ``max_restarts`` times per call.
    """

    def __init__(
        self,
        model_factory: ModelFactory,
        num_workers: int,
        *,
        address: str | None = None,
        num_cpus_per_worker: float = 1,
        num_gpus_per_worker: float = 0,
        max_restarts: int = 3,
    ) -> None:
        if num_workers < 0:
            raise UserError(f"num_workers must be >= 0, got {num_workers}")
        self.max_restarts = max_restarts
        #: actors replaced after dying, over the pool's life
        self.restarts = 0
        self.version: int | None = None
        self._adapter: dict[str, torch.Tensor] | None = None
        self._local = _Replica(model_factory) if num_workers == 0 else None
        self._actors: list[Any] = []
        if num_workers:
            import ray

            if not ray.is_initialized():
                if address is None:
                    ray.init(num_cpus=max(1, int(num_workers * num_cpus_per_worker)), include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=address, log_to_driver=False)
            self._actor_class = ray.remote(num_cpus=num_cpus_per_worker, num_gpus=num_gpus_per_worker)(_Replica)
            self._factory, self._use_gpu = model_factory, num_gpus_per_worker > 0
            self._actors = [self._actor_class.remote(model_factory, self._use_gpu) for _ in range(num_workers)]

    @property
    def num_workers(self) -> int:
        return len(self._actors)

    def generate(
        self,
        prompt_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        hints: torch.Tensor | None = None,
        seed: int | list[int] | None = None,
        **settings: Any,
    ) -> Trajectory:
        """``generate`` on one batch, its rows split evenly across the actors."""
        return self.collect(self.submit(prompt_ids, attention_mask=attention_mask, hints=hints, seed=seed, **settings))

    def submit(
        self,
        prompt_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        hints: torch.Tensor | None = None,
        seed: int | list[int] | None = None,
        **settings: Any,
    ) -> PendingRollout:
        """Start :meth:`generate` on the actors and return at once; :meth:`collect` waits for it.

        The actors run it with the adapter they hold now (later updates queue behind
        it), so a trainer can update while its next rollout is being generated.
        """
        seeds = row_seeds(seed, prompt_ids.shape[0])
        if self._local is not None:
            job = {"prompt_ids": prompt_ids, "attention_mask": attention_mask, "hints": hints, "seed": seeds, **settings}
            return PendingRollout([job], {}, [self._local.generate(job)], self.version)
        chunks = [rows for rows in torch.arange(prompt_ids.shape[0]).chunk(self.num_workers) if rows.numel()]
        jobs = [
            {
                "prompt_ids": prompt_ids[rows],
                "attention_mask": None if attention_mask is None else attention_mask[rows],
                "hints": None if hints is None else hints[rows],
                "seed": [seeds[r] for r in rows.tolist()],
                **settings,
            }
            for rows in chunks
        ]
        return self._start(jobs)

    def collect(self, pending: PendingRollout) -> Trajectory:
        """The trajectories of a :meth:`submit`, rows in the submitted order."""
        return Trajectory.cat(self._finish(pending))

    def map(self, jobs: list[dict[str, Any]]) -> list[Trajectory]:
        """Run each job (``generate`` keyword arguments) on an actor; results in job order."""
        if self._local is not None:
            return [self._local.generate(job) for job in jobs]
        return self._finish(self._start(jobs))

    def _start(self, jobs: list[dict[str, Any]]) -> PendingRollout:
        jobs = [_checked(job) for job in jobs]
        return PendingRollout(jobs, dict(self._submit(i, job) for i, job in enumerate(jobs)), [None] * len(jobs), self.version)

    def _finish(self, pending: PendingRollout) -> list[Trajectory]:
        """Wait for every job, re-running those whose actor died (on a replacement holding the latest adapter)."""
        if not pending.refs:
            return pending.results  # type: ignore[return-value]
        import ray

        restarts = 0
        while pending.refs:
            done, _ = ray.wait(list(pending.refs), num_returns=1)
            index, actor = pending.refs.pop(done[0])
            try:
                pending.results[index] = ray.get(done[0])
            except ray.exceptions.RayActorError:
                restarts += 1
                if restarts > self.max_restarts:
                    raise
                slot = index % self.num_workers
                if self._actors[slot] is actor:  # not yet replaced by another failed job
                    self._replace_actor(slot)
                ref, owner = self._submit(index, pending.jobs[index])
                pending.refs[ref] = owner
        return pending.results  # type: ignore[return-value]

    def update_adapter(self, state_dict: dict[str, torch.Tensor], version: int, *, wait: bool = True) -> None:
        """Push the LoRA tensors of ``state_dict`` (others are ignored) to every replica.

        ``wait=False`` returns at once: each actor loads the adapter after the
        rollouts already submitted to it and before any submitted later.
        """
        lora = {name: value.detach().cpu() for name, value in state_dict.items() if is_lora_tensor(name)}
        if not lora:
            raise UserError("update_adapter got no LoRA tensors (names containing '.lora_')")
        self._adapter, self.version = lora, version
        if self._local is not None:
            self._local.load_adapter(lora)
            return
        import ray

        shared = ray.put(lora)  # one copy in the object store, fetched by each actor's node
        loads = [actor.load_adapter.remote(shared, version) for actor in self._actors]
        if wait:
            ray.get(loads)

    def actors(self) -> list[dict[str, Any]]:
        """``where()`` of every actor: pid, Ray node, cluster address, adapter version."""
        import ray

        return ray.get([actor.where.remote() for actor in self._actors])

    def shutdown(self) -> None:
        """Stop the actors (the Ray session stays up for its owner)."""
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []

    def _submit(self, index: int, job: dict[str, Any]) -> tuple[Any, tuple[int, Any]]:
        """``(result ref, (job index, actor))`` for job ``index`` on its actor slot."""
        actor = self._actors[index % self.num_workers]
        return actor.generate.remote(job), (index, actor)

    def _replace_actor(self, slot: int) -> None:
        import ray

        actor = self._actor_class.remote(self._factory, self._use_gpu)
        if self._adapter is not None:
            ray.get(actor.load_adapter.remote(self._adapter, self.version))
        self._actors[slot] = actor
        self.restarts += 1
