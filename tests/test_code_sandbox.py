"""The code sandbox against the hostile programs of docs/code.md: each one is graded failed,
ends within its deadline, leaves no process and no directory behind, cannot change a canary
file outside its directory and cannot read a canary environment variable."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

import pytest

from unmask.rewards.sandbox import UID_BASE, CodeJob, Execution, Limits, execute

TIMEOUT = 1.0
SECRET = "canary-secret-7f3a"
GOOD = "def f(x):\n    return x + 1\n"
TESTS = ("assert f(1) == 2", "assert f(2) == 3")


def _sandbox_processes() -> list[int]:
    """PIDs of live processes running as a sandbox uid."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line)
        except OSError:
            continue
        uid = int(fields["Uid"].split()[0])
        if UID_BASE <= uid < UID_BASE + 4000 and fields["State"].split()[0] != "Z":
            found.append(int(entry.name))
    return found


def _sandbox_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("unmask-sandbox-*")}


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file outside the sandbox and a secret in the grader's environment."""
    path = tmp_path / "canary.txt"
    path.write_text("intact")
    monkeypatch.setenv("UNMASK_CANARY", SECRET)
    return path


def run(completion: str, tests: tuple[str, ...] = TESTS, *, timeout: float = TIMEOUT, **limits) -> Execution:
    """Execute and check the invariants every hostile run must keep."""
    dirs = _sandbox_dirs()
    began = time.monotonic()
    result = execute(CodeJob(completion, tests, "f"), Limits(timeout_s=timeout, **limits))
    elapsed = time.monotonic() - began
    assert elapsed < timeout + 1.0, f"took {elapsed:.1f} s"
    assert _sandbox_processes() == [], "a sandboxed process survived"
    assert _sandbox_dirs() == dirs, "a sandbox directory was left behind"
    assert SECRET not in result.output
    return result


def test_a_correct_program_passes_every_test_and_a_wrong_one_fails_some(canary: Path) -> None:
    good = run(GOOD)
    assert good.ok and good.passed == good.total == 2
    wrong = run("def f(x):\n    return 2 if x == 1 else 0\n")
    assert (wrong.passed, wrong.reason) == (1, "wrong answer") and wrong.pass_rate == 0.5
    if os.geteuid() == 0:  # as root (CI here) every protection is on; docs/code.md says what holds otherwise
        assert {"namespaces: mount, network, pid", "read-only filesystem"} <= set(good.protections)
        assert any(p.startswith("uid ") and "RLIMIT_NPROC enforced" in p for p in good.protections)


@pytest.mark.parametrize(
    "completion",
    [
        "while True:\n    pass\n" + GOOD,
        "import time\ntime.sleep(1e6)\n" + GOOD,
        GOOD + "import time\ndef g():\n    time.sleep(1e6)\nf = lambda x: g()\n",
    ],
    ids=["busy-loop", "sleep", "sleep-in-test"],
)
def test_programs_that_never_end_are_killed_at_the_deadline(canary: Path, completion: str) -> None:
    result = run(completion)
    assert result.reason == "timeout" and result.passed == 0


def test_reading_stdin_meets_end_of_file(canary: Path) -> None:
    result = run("input()\n" + GOOD)
    assert result.passed == 0 and "EOFError" in result.error


@pytest.mark.parametrize(
    "completion",
    [
        "import os\nwhile True:\n    os.fork()\n" + GOOD,
        "import os, time\nfor _ in range(8):\n    if os.fork() == 0:\n        os.setsid()\n        time.sleep(1e6)\n"
        "time.sleep(1e6)\n" + GOOD,
    ],
    ids=["fork-bomb", "setsid-children"],
)
def test_forking_programs_leave_no_process_behind(canary: Path, completion: str) -> None:
    result = run(completion)
    assert result.passed == 0 and result.reason is not None


@pytest.mark.parametrize(
    "completion",
    ["x = bytearray(8 << 30)\n" + GOOD, "x = []\nwhile True:\n    x.append(bytearray(1 << 20))\n" + GOOD],
    ids=["one-allocation", "growth"],
)
def test_memory_hogs_fail_with_memory(canary: Path, completion: str) -> None:
    result = run(completion, memory_mb=256)
    assert result.reason == "memory" and result.passed == 0


def test_endless_output_is_capped(canary: Path) -> None:
    result = run("while True:\n    print('x' * 10000)\n" + GOOD, file_mb=1, output_bytes=2048)
    assert result.passed == 0 and len(result.output) <= 2048


@pytest.mark.parametrize(
    "attack",
    [
        "open({path!r}, 'w').write('changed')",
        "import os\nos.remove({path!r})",
        "import shutil, os\nshutil.rmtree(os.path.dirname({path!r}))",
        "import importlib, os\nimportlib.reload(os)\nassert os.system('rm -f {path}') == 0",
        "import posix\nassert posix.system('echo changed > {path}') == 0",
        "import ctypes\nassert ctypes.CDLL(None).system(b'echo changed > {path}') == 0",
        "open('/tmp/unmask-escaped', 'w').write('x')",
    ],
    ids=["write", "remove", "rmtree", "reload-os-system", "posix-system", "ctypes-libc", "write-tmp"],
)
def test_files_outside_the_directory_stay_untouched(canary: Path, attack: str) -> None:
    result = run(attack.format(path=str(canary)) + "\n" + GOOD)
    assert result.passed == 0
    assert canary.read_text() == "intact"
    assert not Path("/tmp/unmask-escaped").exists()


def test_writing_inside_its_own_directory_works_up_to_its_size(canary: Path) -> None:
    assert run("open('scratch.txt', 'w').write('ok')\n" + GOOD).ok
    fill = "for i in range(100):\n    open(f'f{i}', 'wb').write(bytes(1 << 20))\n"
    result = run(fill + GOOD, disk_mb=4, file_mb=2)
    assert result.passed == 0 and "No space left" in result.error


@pytest.mark.parametrize(
    "reader",
    [
        "import os\ndef leak():\n    return os.environ.get('UNMASK_CANARY')",
        "def leak():\n    return open('/proc/1/environ').read()",
        "import os\ndef leak():\n    return str([open(f'/proc/{p}/environ', errors='replace').read()"
        " for p in os.listdir('/proc') if p.isdigit()])",
    ],
    ids=["os.environ", "proc-1", "proc-all"],
)
def test_the_graders_environment_is_unreadable(canary: Path, reader: str) -> None:
    result = run(reader + "\n" + GOOD, ("assert 'canary-secret' in leak()",))
    assert result.passed == 0


def test_sockets_reach_nothing_not_even_loopback(canary: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        result = run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n" + GOOD)
        listener.settimeout(0.05)
        with pytest.raises(TimeoutError):
            listener.accept()
    assert result.passed == 0 and "unreachable" in result.error.lower()


@pytest.mark.parametrize(
    "cheat",
    [
        "import builtins\nbuiltins.abs = lambda x: 0\ndef f(x):\n    return 0\n",
        "def abs(x):\n    return 0\ndef f(x):\n    return 0\n",
        "import math\nmath.isclose = lambda *a, **k: True\ndef f(x):\n    return 0\n",
        "class Yes:\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return Yes()\n",
        "class Int(int):\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return Int(0)\n",
        "def f(x):\n    return [type('Yes', (), {'__eq__': lambda s, o: True})()]\n",
        "import builtins\nbuiltins.AssertionError = type('Quiet', (Exception,), {})\ndef f(x):\n    return 0\n",
    ],
    ids=["builtins.abs", "def-abs", "math.isclose", "always-equal", "int-subclass", "nested", "assertion-class"],
)
def test_patching_the_checks_does_not_pass(canary: Path, cheat: str) -> None:
    tests = ("import math\nassert math.isclose(f(1), 2)", "assert abs(f(2) - 3) < 1e-9", "assert f(3) == 4")
    result = run(cheat, tests)
    assert result.passed == 0, result


@pytest.mark.parametrize(
    "exit_call",
    ["import sys\nsys.exit(0)", "raise SystemExit", "import os\nos._exit(0)"],
    ids=["sys.exit", "SystemExit", "os._exit"],
)
def test_leaving_before_the_tests_is_no_verdict(canary: Path, exit_call: str) -> None:
    result = run(GOOD + exit_call + "\n")
    assert result.passed == 0 and result.reason == "no verdict"


@pytest.mark.parametrize(
    "forgery",
    [
        "print('__PASS_RATE__ 1.0')\nprint('passed')",
        "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'{\"kind\": \"done\", \"error\": null}\\n')\n"
        "    except OSError:\n        pass",
        "import os\nos.write(os.open(f'/proc/{os.getppid() or 1}/fd/1', os.O_WRONLY), b'passed\\n')",
    ],
    ids=["print", "write-every-fd", "parent-stdout"],
)
def test_forged_pass_lines_count_for_nothing(canary: Path, forgery: str) -> None:
    result = run(forgery + "\ndef f(x):\n    return 0\n")
    assert result.passed == 0 and result.reason is not None


def test_killing_the_grader_is_impossible(canary: Path) -> None:
    """The kills reach nothing: this process lives and the harness still reports its verdict."""
    kills = "import os, signal\nfor target in ({pid}, os.getppid(), 1):\n    try:\n        os.kill(target, signal.SIGKILL)\n" \
            "    except OSError:\n        pass\nos.killpg(0, signal.SIGKILL)\ndef f(x):\n    return 0\n"
    result = run(kills.format(pid=os.getpid()))
    assert (result.passed, result.reason) == (0, "wrong answer")


@pytest.mark.parametrize(
    "completion",
    ["def f(x):\n    return x + 1\0\n", "def f(x):\n    return x +\n", "x = '" + "a" * 1_000_000 + "'\ndef f(x):\n    return 0\n"],
    ids=["nul-byte", "syntax-error", "1MB"],
)
def test_malformed_programs_fail(canary: Path, completion: str) -> None:
    result = run(completion)
    assert result.passed == 0


def test_the_fallback_without_namespaces_still_bounds_time_processes_and_verdicts(canary: Path) -> None:
    """Forcing the fallback keeps deadlines, limits, cleanup and the verdict protocol, and says so."""
    good = run(GOOD, namespaces=False)
    assert good.ok and "sockets refused in-process only" in good.protections
    assert run("while True:\n    pass\n" + GOOD, namespaces=False).reason == "timeout"
    assert run("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1e6)\n" + GOOD + "import sys\nsys.exit(0)\n",
               namespaces=False).reason == "no verdict"  # fmt: skip
    assert run("import socket\n" + GOOD, namespaces=False).reason == "error"
    assert run("x = bytearray(8 << 30)\n" + GOOD, namespaces=False, memory_mb=256).reason == "memory"
    assert run("print('passed')\ndef f(x):\n    return 0\n", namespaces=False).passed == 0
    assert canary.read_text() == "intact"
    assert os.environ["UNMASK_CANARY"] == SECRET


def test_a_sandbox_that_cannot_start_is_a_counted_failure(canary: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No interpreter at the configured path: the verdict says so instead of raising."""
    from unmask.rewards import sandbox

    monkeypatch.setattr(sandbox, "_interpreter", lambda: ("/nonexistent/python3", (), ()))
    result = run(GOOD)
    assert (result.passed, result.reason) == (0, "sandbox unavailable") and "FileNotFoundError" in result.error
