"""Run one untrusted Python program against its tests: ``execute(CodeJob, Limits) -> Execution``.

Every execution is a fresh interpreter (``python -I -S -B``) in its own session and temporary
directory, with a cleaned environment, started from ``sandbox_boot.py``: it enters new mount,
network and PID namespaces where the kernel allows (as root here), makes everything but its
directory read-only, drops to an unprivileged uid so that RLIMIT_NPROC applies, and sets
CPU, address-space, process, file-size and open-file limits. The verdict comes from records
the trusted harness writes to a pipe with a per-run nonce, never from the program's output,
which goes to a size-capped file of which only the first ``output_bytes`` are kept.
What this does and does not protect against: docs/code.md.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import selectors
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

BOOT = (Path(__file__).with_name("sandbox_boot.py")).read_text()
#: seconds the sandbox may take to start and clean up, beyond the program's wall-clock limit
STARTUP_S = 5.0
#: first uid of the range sandboxes run as (as root); one uid per grading process
UID_BASE = 61_000


@dataclass(frozen=True)
class Limits:
    """What one execution may use. ``namespaces=False`` forces the fallback without them."""

    timeout_s: float = 3.0
    #: address space per process; a program may hold up to ``processes`` x this much
    memory_mb: int = 1024
    #: processes and threads of the sandbox uid, the program itself included
    processes: int = 4
    file_mb: int = 16
    #: size of the program's directory (a tmpfs where namespaces are available)
    disk_mb: int = 64
    open_files: int = 64
    output_bytes: int = 4096
    namespaces: bool = True
    #: put the interpreter's site-packages on the program's path (HumanEval+ tests use numpy)
    site_packages: bool = True

    def __post_init__(self) -> None:
        for name in ("timeout_s", "memory_mb", "processes", "file_mb", "disk_mb", "open_files"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sandbox limit {name} must be positive, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class CodeJob:
    """A program (``prefix`` + ``completion`` + ``setup``) and test snippets that call ``entry_point``."""

    completion: str
    tests: tuple[str, ...]
    entry_point: str
    prefix: str = ""
    setup: str = ""


@dataclass(frozen=True)
class Execution:
    """The harness's verdict: tests passed of total, and why not all passed (None = all did)."""

    passed: int
    total: int
    reason: str | None
    error: str | None = None
    output: str = ""
    protections: tuple[str, ...] = field(default_factory=tuple)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0


def _hidden_ancestor(path: str) -> str | None:
    """The first directory above ``path`` that other users cannot traverse, if any."""
    current = Path("/")
    for part in Path(path).parts[1:-1]:
        current /= part
        if not current.stat().st_mode & stat.S_IXOTH:
            return str(current)
    return None


@cache
def _interpreter() -> tuple[str, tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
    """The interpreter binary, its site-packages, and (hidden dir, paths to show through it)."""
    binary = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    packages = tuple(p for p in site.getsitepackages() if os.path.isdir(p))
    hidden: dict[str, list[str]] = {}
    for path in (prefix, *packages):
        ancestor = _hidden_ancestor(path)
        if ancestor is not None:
            hidden.setdefault(ancestor, []).append(path)
    return binary, packages, tuple((k, tuple(v)) for k, v in hidden.items())


def _environment(work: str) -> dict[str, str]:
    """The whole environment the program sees: nothing of the grader's (no tokens, no keys)."""
    threads = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")
    return {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8", **threads}


def _records(raw: bytes, nonce: str) -> list[dict]:
    out = []
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("nonce") == nonce:
            out.append(record)
    return out


def _kind(error: str | None) -> str:
    """A failure reason from the harness's ``Type: message`` text."""
    name = (error or "").partition(":")[0]
    if name in ("SyntaxError", "IndentationError", "TabError"):
        return "syntax"
    if name == "MemoryError":
        return "memory"
    if name == "SystemExit":
        return "no verdict"
    if name == "TypeError" and "only plain data" in (error or ""):
        return "bad return type"
    if name == "NameError" and "defines no function" in (error or ""):
        return "no function"
    return "error"


def _verdict(tests: int, verdicts: list[dict], supervisor: list[dict]) -> tuple[int, str | None, str | None]:
    passed = len({r["index"] for r in verdicts if r.get("kind") == "test" and r.get("ok")})
    failed = [r for r in verdicts if r.get("kind") == "test" and not r.get("ok")]
    done = next((r for r in verdicts if r.get("kind") == "done"), None)
    first_error = failed[0].get("error") if failed else (done or {}).get("error")
    if not supervisor:
        return passed, "sandbox unavailable", first_error
    status = supervisor[0]["status"]
    if supervisor[0]["timed_out"]:
        return passed, "timeout", first_error
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return passed, "timeout" if sig == signal.SIGXCPU else f"killed by signal {sig}", first_error
    if done is None:
        return passed, "no verdict", first_error
    if done.get("error"):
        return passed, _kind(done["error"]), done["error"]
    if passed < tests:
        kind = _kind(first_error)
        return passed, "wrong answer" if kind == "error" and "AssertionError" in (first_error or "") else kind, first_error
    return passed, None, None


def _collect(proc: subprocess.Popen, pipes: dict[int, bytearray], deadline: float) -> bool:
    """Read both pipes until they close or ``deadline``; False if the deadline came first."""
    with selectors.DefaultSelector() as sel:
        for fd in pipes:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for key, _ in sel.select(remaining):
                chunk = os.read(key.fd, 65536)
                if chunk and len(pipes[key.fd]) < 1 << 20:
                    pipes[key.fd] += chunk
                elif not chunk:
                    sel.unregister(key.fd)
    try:
        proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


def execute(job: CodeJob, limits: Limits | None = None) -> Execution:
    """Run ``job`` once in a fresh sandbox; never raises for anything the program does."""
    limits = limits or Limits()
    began = time.monotonic()
    binary, packages, expose = _interpreter()
    uid = UID_BASE + os.getpid() % 4000 if os.geteuid() == 0 else None
    work = tempfile.mkdtemp(prefix="unmask-sandbox-")
    fds: list[int] = []
    proc = None
    try:
        if uid is not None:
            os.chown(work, uid, uid)
        output = os.open(os.path.join(work, ".output"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        verdict_r, verdict_w = os.pipe()
        supervisor_r, supervisor_w = os.pipe()
        fds += [output, verdict_r, verdict_w, supervisor_r, supervisor_w]
        nonce = secrets.token_hex(16)
        payload = {
            "parent": os.getpid(), "nonce": nonce, "dir": work, "uid": uid, "namespaces": limits.namespaces,
            "expose": expose, "path": list(packages) if limits.site_packages else [],
            "timeout_s": limits.timeout_s, "verdict_fd": verdict_w, "supervisor_fd": supervisor_w,
            "limits": {"cpu_s": math.ceil(limits.timeout_s), "memory_mb": limits.memory_mb,
                       "processes": limits.processes, "file_mb": limits.file_mb, "disk_mb": limits.disk_mb,
                       "open_files": limits.open_files},
            "completion": job.completion, "tests": list(job.tests), "entry_point": job.entry_point,
            "prefix": job.prefix, "setup": job.setup,
        }  # fmt: skip
        try:
            proc = subprocess.Popen(
                [binary, "-I", "-S", "-B", "-c", BOOT], stdin=subprocess.PIPE, stdout=output, stderr=output,
                pass_fds=(verdict_w, supervisor_w), cwd=work, env=_environment(work), start_new_session=True,
            )  # fmt: skip
        except OSError as exc:  # no interpreter, no processes left: nothing ran
            return Execution(0, len(job.tests), "sandbox unavailable", f"{type(exc).__name__}: {exc}")
        for fd in (verdict_w, supervisor_w):
            os.close(fd)
            fds.remove(fd)
        try:
            proc.stdin.write(json.dumps(payload).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        pipes = {verdict_r: bytearray(), supervisor_r: bytearray()}
        finished = _collect(proc, pipes, began + limits.timeout_s + STARTUP_S)
        supervisor = _records(bytes(pipes[supervisor_r]), nonce)
        passed, reason, error = _verdict(len(job.tests), _records(bytes(pipes[verdict_r]), nonce), supervisor)
        if not finished:
            reason = "timeout"
        text = os.pread(output, limits.output_bytes, 0).decode("utf-8", "replace")
        protections = tuple(supervisor[0]["protections"]) if supervisor else ()
        return Execution(passed, len(job.tests), reason, error, text, protections, time.monotonic() - began)
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the supervisor's death takes the namespace with it
            proc.wait()
        for fd in fds:
            os.close(fd)
        shutil.rmtree(work, ignore_errors=True)
