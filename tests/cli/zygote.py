"""A fork server for the CLI tests: `python -m mlwarden ARGS` without paying the interpreter start-up and the
imports (torch, scipy, scikit-learn, the threat catalogue: about 7 s of CPU on this 2-core machine) on every call.

Run as a script, this file is the server: it imports what every CLI command imports, then, for each request line
read from stdin, forks a monitor that forks the command itself. The command process starts from that warm
interpreter; then, as `python -m mlwarden` would, it changes to the request's folder, takes the request's
environment, puts its folder first on sys.path, points fds 0-2 at /dev/null and two files, and runs the
`mlwarden` package as `__main__`; at the end it runs the atexit handlers and leaves with the exit code (a signal
kills it as it would kill a fresh process). The monitor waits for it and writes its exit status to a file the
test polls. Each command is its own process, so a crash, an exit code, a leaked global or a payload that
runs are what a fresh process would show; what differs is only that modules are already imported.

A server serves one start-up environment: everything but mlwarden's own MLWARDEN_* keys, which a command reads
when it runs (PYTHONPATH, the thread counts or MPLCONFIGDIR act at start-up or import). A request in another
environment gets a server of its own (the two most recently used are kept), so a test process whose environment
changed for good (importing ray sets RAY_CLIENT_MODE) moves to a new server once.
Set MLWARDEN_TEST_FRESH=1 to run every command in a fresh interpreter (subprocess).
"""
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# keys mlwarden reads when a command runs (a request may set them); any other difference from the server's
# environment (PYTHONPATH, thread counts, MPLCONFIGDIR, HOME, ...) may act at start-up or import: run fresh
RUNTIME_KEYS = ("MLWARDEN_", "PYTEST_")
# not transformers or huggingface_hub: they read their offline switches from the environment when imported
PRELOAD = ("mlwarden.audit.runner", "mlwarden.cli.main", "mlwarden.harden", "mlwarden.io.datasets", "mlwarden.plots",
           "mlwarden.io.models")
MAX_SERVERS = 2   # the environment of a test process changes for good (importing ray sets RAY_CLIENT_MODE, flwr
                  # GRPC_VERBOSITY): a server per start-up environment, the least recently used one closed


def _startup_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if not k.startswith(RUNTIME_KEYS)}


# ---- the server side (this file run as a script) ----

def _command(req: dict) -> None:
    """In the command process: become `python -m mlwarden ARGS` and leave with its exit code."""
    code = 1
    try:
        os.setpgid(0, 0)   # its own group, so a timeout kills what it started too
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(Path(req["dir"]) / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)
        sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)
        sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", closefd=False, buffering=1)
        sys.argv = ["mlwarden", *req["argv"]]
        sys.path[0] = os.getcwd()
        import runpy
        try:
            runpy.run_module("mlwarden", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:   # what the interpreter does with an uncaught exception
            import traceback
            traceback.print_exc()
            code = 1
        try:
            threading._shutdown()   # as at interpreter exit: wait for non-daemon threads
            atexit._run_exitfuncs()
        except BaseException:
            pass
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except BaseException:
                pass
    finally:
        os._exit(code if 0 <= code < 256 else 1)


def _monitor(req: dict) -> None:
    """In the monitor: fork the command, write its pid, wait, write its exit status (as subprocess reports it)."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        pid = os.fork()
        if pid == 0:
            _command(req)
        d = Path(req["dir"])
        (d / "pid.tmp").write_text(str(pid))
        os.replace(d / "pid.tmp", d / "pid")
        _, status = os.waitpid(pid, 0)
        (d / "status.tmp").write_text(str(os.waitstatus_to_exitcode(status)))
        os.replace(d / "status.tmp", d / "status")
    finally:
        os._exit(0)


def serve() -> None:
    # what the commands import, loaded once (importing does not start torch's thread pools, so forking stays safe)
    import importlib
    from importlib.metadata import entry_points
    for name in PRELOAD:
        importlib.import_module(name)
    for group in ("mlwarden.threats", "mlwarden.defenses"):   # mlwarden's own catalogue (plug-ins load per run)
        for ep in entry_points(group=group):
            if ep.value.startswith("mlwarden."):
                importlib.import_module(ep.module)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # monitors are reaped by the kernel
    print("ready", flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if os.fork() == 0:
            _monitor(req)


# ---- the test side ----

class _Server:
    def __init__(self, env: dict):
        self.env = dict(env)
        self.root = Path(tempfile.mkdtemp(prefix="mlwarden-cli-"))
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=self.env, cwd=os.getcwd())
        self.ok = self.proc.stdout.readline().strip() == "ready"
        self.lock = threading.Lock()
        atexit.register(self.close)

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def usable_for(self, env: dict) -> bool:
        return self.ok and self.proc.poll() is None and _startup_env(env) == _startup_env(self.env)

    def start(self, argv: list[str], cwd: str, env: dict) -> "Process":
        d = Path(tempfile.mkdtemp(dir=self.root))
        with self.lock:
            self.proc.stdin.write(json.dumps({"argv": argv, "cwd": cwd, "env": env, "dir": str(d)}) + "\n")
            self.proc.stdin.flush()
        return Process(argv, d)


class Process:
    """A command started by the server, with the part of subprocess.Popen's interface the tests use: pid,
    poll, wait, terminate, kill, returncode, and stdout / stderr as text streams read while it runs."""

    def __init__(self, argv: list[str], d: Path):
        self.args, self.dir, self.returncode = ["mlwarden", *argv], d, None
        _until(lambda: (d / "pid").exists(), 60, self.args)
        self.pid = int((d / "pid").read_text())
        self.stdout, self.stderr = _Follow(d / "stdout", self), _Follow(d / "stderr", self)

    def poll(self) -> int | None:
        if self.returncode is None and (self.dir / "status").exists():
            self.returncode = int((self.dir / "status").read_text())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        _until(lambda: self.poll() is not None, timeout, self.args)
        return self.returncode

    def terminate(self) -> None:
        self._signal(os.kill, signal.SIGTERM)

    def kill(self) -> None:
        self._signal(os.killpg, signal.SIGKILL)   # with what it started

    def _signal(self, send, sig) -> None:
        if self.poll() is None:
            try:
                send(self.pid, sig)
            except ProcessLookupError:
                pass


class _Follow:
    """Lines of a file a running command writes, as from its pipe: the stream ends once the command has ended
    and every line is read."""

    def __init__(self, path: Path, proc: Process):
        self.path, self.proc, self.f = path, proc, None

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def readline(self) -> str:
        buf = ""
        while True:
            if self.f is None and self.path.exists():
                self.f = open(self.path, encoding="utf-8", errors="replace")
            done = self.proc.poll() is not None   # before reading: all it wrote is in the file by then
            if self.f is not None:
                buf += self.f.readline()
                if buf.endswith("\n"):
                    return buf
            if done:
                return buf
            time.sleep(0.05)

    def read(self) -> str:
        return "".join(self)


def _until(ready, timeout: float | None, args) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.005
    while not ready():
        if deadline is not None and time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(args, timeout)
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


_servers: dict[tuple, _Server] = {}


def _warm_server(env: dict) -> "_Server | None":
    """The server started with this start-up environment (started now if there is none)."""
    if os.environ.get("MLWARDEN_TEST_FRESH"):
        return None
    key = tuple(sorted(_startup_env(env).items()))
    server = _servers.pop(key, None) or _Server(env)
    _servers[key] = server   # most recently used last
    while len(_servers) > MAX_SERVERS:
        _servers.pop(next(iter(_servers))).close()
    return server if server.usable_for(env) else None


def popen(argv, cwd=None, env: dict | None = None) -> "Process | subprocess.Popen":
    """`python -m mlwarden ARGV` started with its stdout and stderr read as text while it runs: from the warm
    server where it can be, else as `subprocess.Popen`."""
    argv, cwd = [str(a) for a in argv], str(cwd or os.getcwd())
    env = dict(env if env is not None else os.environ)
    server = _warm_server(env)
    if server is not None:
        return server.start(argv, cwd, env)
    return subprocess.Popen([sys.executable, "-m", "mlwarden", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)


def run(argv, cwd=None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m mlwarden ARGV` with captured text output, as `subprocess.run(..., capture_output=True,
    text=True)` returns it, run from the warm server where it can be."""
    p = popen(argv, cwd, env)
    if isinstance(p, subprocess.Popen):
        with p:
            try:
                out, err = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                raise
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    out = subprocess.CompletedProcess([sys.executable, "-m", "mlwarden", *p.args[1:]], p.returncode,
                                      p.stdout.read(), p.stderr.read())
    shutil.rmtree(p.dir, ignore_errors=True)
    return out


if __name__ == "__main__":
    serve()
