"""Runs `gankit train` in child processes that start in milliseconds, so tests can kill -9 many runs.

A "zygote" process imports torch and gankit once and then, on request, forks a child that runs
`gankit.cli.main(argv)` exactly as the console script does, with its output in a file. The zygote
never runs a torch operation, so forking it is safe (a process whose OpenMP pool is running is not).
The zygote also sends the SIGKILL (a child it has not reaped yet cannot have its pid reused), then
reaps the child and reports how it ended.

Run as a script, this file is the zygote; tests use `Zygote.shared()`. The zygote and its children
load the kill-during-write fault injection of tests/fault_injection/ (inert unless KILL_HOOK_VARIABLE
is set in a child's env).
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Everything a training run imports, so that children import nothing.
PRELOAD = ["torch", "gankit.cli", "gankit.training.loop", "gankit.training.rundir", "gankit.data",
           "gankit.data.idx", "gankit.data.transforms", "gankit.viz.grid", "torch.utils.tensorboard",
           "safetensors.torch", "PIL.PngImagePlugin"]

FAULT_INJECTION = Path(__file__).parent / "fault_injection"
KILL_HOOK_VARIABLE = "GANKIT_TEST_KILL_DURING_WRITE"  # "PATTERN:N", read by fault_injection/sitecustomize.py
EXIT_HOOK_VARIABLE = "GANKIT_TEST_EXIT_AT_STEP"  # "RANK:STEP", read by fault_injection/sitecustomize.py


def with_fault_injection(env: dict[str, str]) -> dict[str, str]:
    """env with tests/fault_injection first on PYTHONPATH, so a Python started with it loads the hook."""
    paths = [str(FAULT_INJECTION), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


@dataclass
class Child:
    pid: int
    output: Path
    started: float

    def text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.is_file() else ""


class Zygote:
    _shared: "Zygote | None" = None

    @classmethod
    def shared(cls) -> "Zygote":
        """One zygote per test session, stopped when the session ends."""
        if cls._shared is None or cls._shared.process.poll() is not None:
            cls._shared = cls()
            atexit.register(cls._shared.close)
        return cls._shared

    def __init__(self):
        env = with_fault_injection({**os.environ, "PYTHONUNBUFFERED": "1"})
        self.process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, bufsize=1, env=env)
        ready = self.process.stdout.readline()
        if ready.strip() != "ready":
            raise RuntimeError(f"the zygote did not start: {ready!r}")

    def start(self, argv: list[str], output: Path, env: dict[str, str] | None = None,
              file_size_limit: int | None = None) -> Child:
        """Forks a child running `gankit <argv>`; its stdout and stderr go to output."""
        request = {"argv": [str(a) for a in argv], "output": str(output), "env": env or {},
                   "file_size_limit": file_size_limit}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline().split()
        if reply[:1] != ["started"]:
            raise RuntimeError(f"the zygote did not start a child: {reply}")
        return Child(int(reply[1]), Path(output), time.monotonic())

    def wait(self, child: Child) -> int:
        """The child's exit code, or -signal if a signal ended it (as subprocess reports it)."""
        return self._end(child, "wait")

    def kill(self, child: Child) -> int:
        """Sends SIGKILL to the child (if it still runs) and returns how it ended."""
        return self._end(child, "kill")

    def _end(self, child: Child, command: str) -> int:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline().split()
        if reply[:2] != ["ended", str(child.pid)]:
            raise RuntimeError(f"unexpected reply from the zygote: {reply}")
        return int(reply[2])

    def run(self, argv: list[str], output: Path, **kwargs) -> tuple[int, str]:
        child = self.start(argv, output, **kwargs)
        return self.wait(child), child.text()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


def _child(request: dict) -> None:
    """In the forked child: redirect output, apply limits, run the CLI and exit with its code."""
    import resource
    import signal

    import torch

    fd = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.environ.update(request["env"])
    # One thread: identical arithmetic in every child, and no oversubscription of a shared machine.
    torch.set_num_threads(1)
    if request["file_size_limit"]:
        # A write past the limit fails with EFBIG, as a full disk fails with ENOSPC: a real failing write.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (request["file_size_limit"], request["file_size_limit"]))
    from gankit.cli import main

    try:
        code = main(request["argv"])
    except SystemExit as exit_:  # argparse
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _serve() -> None:
    import importlib
    import signal

    for name in PRELOAD:
        importlib.import_module(name)
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(f"started {pid}", flush=True)
        if sys.stdin.readline().strip() == "kill":
            os.kill(pid, signal.SIGKILL)  # not reaped yet: the pid is still this child's
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(f"ended {pid} {code}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    _serve()
