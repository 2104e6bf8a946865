"""A real Ray cluster: ``ray start --head`` on loopback with token auth, a trainer joining it.

The head runs in its own process group (stopped by its own pid, even when a test
fails), on free ports and its own temp dir, so other Ray sessions on the machine
are untouched. The trainer runs as a separate driver process, as it would on a
cluster, and its rollouts are compared with an in-process run of the same recipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import distributed_run as run
import pytest
import torch
from safetensors.torch import load_file

from unmask.rl.checkpoint import trainable_state
from unmask.rl.trainer import Trainer

pytest.importorskip("ray")
TESTS = Path(__file__).resolve().parent
STEPS = 3


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports: all held open at once, so the OS cannot hand one out twice."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def cluster_env(token: str) -> dict[str, str]:
    """What every process of the cluster and its drivers need: token auth, loopback addresses."""
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}


@pytest.fixture(scope="module")
def head() -> Iterator[tuple[str, dict[str, str]]]:
    """``ray start --head`` on 127.0.0.1 (every port chosen free); yields (address, driver env)."""
    env = cluster_env(secrets.token_hex(16))
    flags = ("dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "runtime-env-agent-port", "metrics-export-port", "node-manager-port", "object-manager-port")
    port, *chosen = free_ports(len(flags) + 1)
    ports = dict(zip(flags, chosen, strict=True))
    temp = tempfile.mkdtemp(prefix="unmask-ray-")  # short: Ray's socket paths must fit in 107 bytes
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--node-ip-address=127.0.0.1",
               f"--port={port}", "--num-cpus=2", f"--temp-dir={temp}", "--include-dashboard=false",
               "--disable-usage-stats", "--block", *(f"--{flag}={value}" for flag, value in ports.items())]
    log = Path(temp) / "head.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"ray start --head exited: {log.read_text()[-2000:]}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the head's GCS did not listen within 60 s"
                time.sleep(0.5)
        yield f"127.0.0.1:{port}", env
    finally:  # the head and everything it started share its process group
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def drive(out: Path, env: dict[str, str], ray: dict | None = None) -> subprocess.CompletedProcess:
    spec = {"output_dir": str(out), "max_steps": STEPS, "prompts_per_step": 2, "gradient_accumulation_steps": 4,
            "ray": ray or {}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec))
    return subprocess.run([sys.executable, str(TESTS / "distributed_run.py"), str(out / "spec.json")],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cluster_run(head, tmp_path_factory) -> tuple[str, Path]:
    address, env = head
    out = tmp_path_factory.mktemp("cluster") / "run"
    done = drive(out, env, {"address": address, "num_workers": 2})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return address, out


SLOW = pytest.mark.slow  # the trainer driver with two actors: ~70 s on a busy 2-core machine


@SLOW
def test_actors_run_in_the_cluster_and_receive_every_adapter(cluster_run):
    address, out = cluster_run
    (record,) = json.loads((out / "ranks.json").read_text())
    assert len(record["actors"]) == STEPS + 1  # before the first step, then after each
    for version, actors in enumerate(record["actors"]):
        assert len(actors) == 2
        assert {a["version"] for a in actors} == {version}  # the step's adapter reached every actor
        for actor in actors:
            assert actor["gcs_address"] == address  # joined the started cluster, not a fresh local Ray
            assert actor["pid"] not in (record["pid"], os.getpid())  # not in the trainer's process
    assert len({a["pid"] for a in record["actors"][-1]}) == 2


@SLOW
def test_cluster_rollouts_and_weights_equal_an_in_process_run(cluster_run, tmp_path):
    _, out = cluster_run
    (record,) = json.loads((out / "ranks.json").read_text())
    spec = {"output_dir": str(tmp_path / "local"), "max_steps": STEPS, "prompts_per_step": 2,
            "gradient_accumulation_steps": 4}
    trainer = Trainer(run.build_recipe(spec), model_factory=run.make_model, rows=run.ROWS)
    answers, generate = [], trainer.rollouts.generate
    trainer.rollouts.generate = lambda *a, **k: answers.append(generate(*a, **k)) or answers[-1]
    list(trainer.steps())
    assert record["answers"] == [traj.answer_ids.tolist() for traj in answers]
    cluster = load_file(str(out / "final.safetensors"))
    for name, value in trainable_state(trainer.unwrapped).items():
        torch.testing.assert_close(cluster[name], value, rtol=1e-5, atol=1e-7, msg=name)


def test_a_driver_without_the_token_is_refused(head, tmp_path):
    address, env = head
    env = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
    done = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='{address}')"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "token" in done.stderr.lower()


def test_a_run_started_in_the_repository_root_joins_the_head(head, tmp_path):
    """``unmask train ... ray.address=HOST:PORT`` from the root, as a user starts it: the
    actors get the driver's working directory on their path and import transformers."""
    from test_user_paths import ONE_TINY_STEP, run_from_root

    address, env = head
    done = run_from_root("-m", "unmask.cli", "train", "tiny/countdown_diffu_grpo_trajectory",
                         f"output_dir={tmp_path}", f"ray.address={address}", "ray.num_workers=1",
                         *ONE_TINY_STEP, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert (tmp_path / "metrics.jsonl").read_text().count('"loss"') == 1
