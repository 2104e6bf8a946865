"""The program that runs inside the code sandbox (see ``sandbox.py`` and docs/code.md).

``sandbox.py`` starts it as ``python -I -S -B -c <this file>`` with a cleaned environment,
in a new session, and writes one JSON job to its stdin. Standard library only: it must
not import unmask. Two processes:

- the *supervisor* (this process, never runs untrusted code): reads the job, enters new
  mount, network and PID namespaces where it can, makes every mount read-only and puts a
  size-capped tmpfs on the job's directory, forks the runner, kills it at the wall-clock deadline, and writes one
  record (exit status, timeout, active protections) to a pipe the runner does not hold;
- the *runner* (PID 1 of the new PID namespace, so its death takes every descendant with
  it): mounts a fresh ``/proc``, sets the resource limits, drops to an unprivileged uid,
  then runs the program and the tests and writes one nonce-tagged record per test to the
  verdict pipe. What the program prints goes to a capped file and is never read as a verdict.
"""

import ast
import collections
import contextlib
import ctypes
import json
import os
import resource
import select
import signal
import sys
import types

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
_MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}
_LIBC = ctypes.CDLL(None, use_errno=True)


def _sys(call, *args):
    if call(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _mount(source, target, fstype, flags, data=None):
    enc = [None if a is None else a.encode() for a in (source, target, fstype, data)]
    _sys(_LIBC.mount, enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3])


def _mounts():
    """(mount point, per-mount flags) of every mount, in mount order."""
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            flags = sum(_MOUNT_FLAGS.get(opt, 0) for opt in fields[5].split(","))
            yield point, flags


def isolate(job):
    """New namespaces; the job dir is the only writable place; hidden interpreter paths exposed.

    Returns the list of active protections, or raises OSError where namespaces are refused.
    """
    _sys(_LIBC.unshare, CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates to the host
    for hidden, paths in job["expose"]:
        # an ancestor such as /root (mode 0700) hides the interpreter from the sandbox uid:
        # cover it with an empty tmpfs and bind back only the paths the interpreter needs
        handles = {p: os.open(p, os.O_PATH) for p in paths}
        _mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=64k")
        for path, fd in handles.items():
            os.makedirs(path, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            os.close(fd)
    # the program's directory: a size-capped tmpfs over the host one, gone with the namespace
    owner = job["uid"] if job["uid"] is not None else os.geteuid()
    _mount("tmpfs", job["dir"], "tmpfs", MS_NOSUID | MS_NODEV, f"size={job['limits']['disk_mb']}m,mode=700,uid={owner},gid={owner}")
    for point, flags in list(_mounts()):
        if point != job["dir"] and not point.startswith("/proc"):
            with contextlib.suppress(OSError):  # reported below if "/" itself stayed writable
                _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
    writable = os.statvfs("/").f_flag & os.ST_RDONLY == 0
    return ["namespaces: mount, network, pid", f"directory: tmpfs of {job['limits']['disk_mb']} MiB"] + (
        [] if writable else ["read-only filesystem"]
    )


def limit(job):
    """Resource limits, then (as root) the unprivileged uid that makes RLIMIT_NPROC count."""
    lim = job["limits"]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversize write fails instead of killing
    settings = {
        resource.RLIMIT_CPU: (lim["cpu_s"], lim["cpu_s"] + 1),
        resource.RLIMIT_AS: (lim["memory_mb"] << 20,) * 2,
        resource.RLIMIT_FSIZE: (lim["file_mb"] << 20,) * 2,
        resource.RLIMIT_NOFILE: (lim["open_files"],) * 2,
        resource.RLIMIT_NPROC: (lim["processes"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, value in settings.items():
        resource.setrlimit(which, value)
    if os.geteuid() == 0 and job["uid"] is not None:
        os.setgroups([])
        os.setgid(job["uid"])
        os.setuid(job["uid"])


def _describe(exc):
    return f"{type(exc).__name__}: {exc}"[:300]


def _names(sources):
    """Names read by the test code, and the modules it imports."""
    read, imported = set(), set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Name):
                read.add(node.id)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                module = node.module if isinstance(node, ast.ImportFrom) else None
                tops = [module] if module else [a.name for a in node.names]
                imported.update(t.split(".")[0] for t in tops if t)
    return read, imported


def run_tests(job, verdict_fd, nonce):
    """Program in namespace A, tests in namespace B built from values captured beforehand.

    B holds a copy of the builtins, copies of the modules the tests use (taken before the
    program could patch them), the prompt's own helpers, and from A only the names the tests
    read (a name shadowing a builtin only if it is the entry point), the entry point wrapped
    so that a return value of a type outside plain data (an always-equal object, a subclass
    of int) fails the test.
    """
    me, write, dumps, exit_now = os.getpid(), os.write, json.dumps, os._exit
    plain = frozenset({int, float, complex, bool, str, bytes, type(None), list, tuple, dict, set,
                       frozenset, range, collections.Counter, collections.OrderedDict,
                       collections.defaultdict, collections.deque})  # fmt: skip
    mappings = (dict, collections.Counter, collections.OrderedDict, collections.defaultdict)
    containers = frozenset((list, tuple, set, frozenset, collections.deque, *mappings))
    pristine = dict(vars(__builtins__) if isinstance(__builtins__, types.ModuleType) else __builtins__)

    def emit(record):
        if os.getpid() != me:  # a process the program forked never reports
            exit_now(0)
        write(verdict_fd, (dumps({**record, "nonce": nonce}) + "\n").encode())

    def finish(suppress=contextlib.suppress):
        for stream in (sys.stdout, sys.stderr):
            with suppress(Exception):  # the program may have closed or replaced it
                stream.flush()
        exit_now(0)

    tests = [compile(t, f"<test {i}>", "exec") for i, t in enumerate(job["tests"])]
    read, imported = _names(job["tests"] + [job["setup"]])
    snapshots = {}
    for name in (read & set(sys.stdlib_module_names)) | imported:
        try:
            module = __import__(name)
        except ImportError:
            continue
        copy = types.ModuleType(name)
        copy.__dict__.update(vars(module))
        snapshots[name] = copy

    def frozen(value, isinstance=isinstance, getattr=getattr):
        if isinstance(value, types.ModuleType):
            return snapshots.get(getattr(value, "__name__", ""), value)
        return value

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0, real=__import__):
        top = name.split(".")[0]
        if level == 0 and top in snapshots and (fromlist or "." not in name):
            return snapshots[top] if not fromlist or name == top else real(name, globals, locals, fromlist, level)
        return real(name, globals, locals, fromlist, level)

    def check_plain(value, type=type, id=id, len=len):
        stack, seen = [value], set()
        while stack:
            item = stack.pop()
            kind = type(item)
            if kind not in plain:
                raise TypeError(f"returned a value of type {kind.__name__}: only plain data is accepted")
            if kind in containers and id(item) not in seen:
                seen.add(id(item))
                stack.extend(item)
                if kind in mappings:
                    stack.extend(item.values())
            if len(seen) > 1_000_000:
                raise TypeError("returned a value too large to check")

    def checked(fn):
        def call(*args, **kwargs):
            value = fn(*args, **kwargs)
            check_plain(value)
            return value

        return call

    helpers = {"__name__": "solution"}
    with contextlib.suppress(Exception):  # the task's own stub (trusted); a bare signature does not run alone
        exec(compile(job["prefix"], "<prompt>", "exec"), helpers)
    helpers = {k: frozen(v) for k, v in helpers.items() if k not in ("__builtins__", "__name__")}
    program = {"__name__": "solution"}
    try:
        source = "\n".join(part for part in (job["prefix"], job["completion"], job["setup"]) if part)
        exec(compile(source, "solution.py", "exec"), program)
    except BaseException as exc:  # noqa: BLE001 - SystemExit before the tests is a failure too
        emit({"kind": "done", "error": _describe(exc), "stage": "program"})
        finish()
    entry = job["entry_point"]
    if not callable(program.get(entry)):
        emit({"kind": "done", "error": f"NameError: the program defines no function {entry!r}", "stage": "program"})
        finish()
    scope = dict(helpers)
    for name in read:
        if name in program and name not in helpers and (name == entry or name not in pristine):
            scope[name] = frozen(program[name])
    scope[entry] = checked(program[entry])
    scope["__builtins__"] = {**pristine, "__import__": guarded_import}
    scope["__name__"] = "tests"
    for index, test in enumerate(tests):
        try:
            exec(test, scope)
        except BaseException as exc:  # noqa: BLE001 - a test ending in any way is a failed test
            emit({"kind": "test", "index": index, "ok": False, "error": _describe(exc)})
        else:
            emit({"kind": "test", "index": index, "ok": True})
    emit({"kind": "done", "error": None, "stage": "tests"})
    finish()


def refuse_sockets():
    """Fallback without a network namespace: the socket modules cannot be imported (weak)."""
    for name in ("socket", "_socket", "ssl", "_ssl"):
        sys.modules[name] = None


def supervise(pid, timeout_s):
    """Wait for the runner until the deadline, else kill it; its wait status and whether it timed out."""
    fd = os.pidfd_open(pid)
    ready, _, _ = select.select([fd], [], [], timeout_s)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)  # in a PID namespace: returns once every descendant is gone
    os.close(fd)
    return status, not ready


def sweep(job, runner):
    """Without a PID namespace: kill the runner's group, and as root every process of the sandbox uid."""
    with contextlib.suppress(OSError):
        os.killpg(runner, signal.SIGKILL)
    if os.geteuid() == 0 and job["uid"] is not None:
        killer = os.fork()
        if killer == 0:
            os.setuid(job["uid"])
            try:
                os.kill(-1, signal.SIGKILL)  # every process this uid may signal: its own
            finally:
                os._exit(0)
        os.waitpid(killer, 0)


def main():
    job = json.loads(sys.stdin.buffer.read())
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the grading worker dies: so do we
    if os.getppid() != job["parent"]:
        os._exit(3)
    protections = []
    if job["namespaces"]:
        try:
            protections = isolate(job)
        except OSError as exc:
            protections = [f"no namespaces ({exc.strerror})"]
    isolated = bool(protections) and protections[0].startswith("namespaces")
    runner = os.fork()
    if runner == 0:
        os.close(job["supervisor_fd"])
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if isolated:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        else:
            os.setpgid(0, 0)
            refuse_sockets()
        os.chdir(job["dir"])
        sys.path.extend(job["path"])
        limit(job)
        run_tests(job, job["verdict_fd"], job["nonce"])
    os.close(job["verdict_fd"])
    status, timed_out = supervise(runner, job["timeout_s"])
    if not isolated:
        sweep(job, runner)
    if os.geteuid() == 0 and job["uid"] is not None:
        protections.append(f"uid {job['uid']} (RLIMIT_NPROC enforced)")
    elif os.geteuid() == 0:
        protections.append("root (RLIMIT_NPROC not enforced)")
    if not isolated:
        protections.append("sockets refused in-process only")
    record = {"status": status, "timed_out": timed_out, "protections": protections, "nonce": job["nonce"]}
    os.write(job["supervisor_fd"], (json.dumps(record) + "\n").encode())
    os._exit(0)


main()
