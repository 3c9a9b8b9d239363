"""Fault injection for the kill and dead-rank tests, loaded at interpreter start by child processes
whose PYTHONPATH holds this folder (tests/child_process.py puts it there). The product holds no hook.

GANKIT_TEST_KILL_DURING_WRITE="PATTERN:N" makes the process, during its N-th atomic write of a file
whose name matches the fnmatch PATTERN, cut the temporary file to half its size (as an interrupted write
leaves it) and kill itself with SIGKILL, after the write callback and before the fsync and rename.

GANKIT_TEST_EXIT_AT_STEP="RANK:STEP" makes that torchrun rank exit abruptly (os._exit(3)) once it has
made STEP generator steps, as a crashed process would (tests/test_distributed.py).
"""

import fnmatch
import os
import signal
import sys
from pathlib import Path

KILL_HOOK_VARIABLE = "GANKIT_TEST_KILL_DURING_WRITE"  # also named in tests/child_process.py
EXIT_HOOK_VARIABLE = "GANKIT_TEST_EXIT_AT_STEP"  # also named in tests/child_process.py
_matches = 0


def _kill_if_chosen(path: Path, tmp: str) -> None:
    # Read at each write, not once here: the zygote's children get the variable after the fork, long
    # after this file ran, so the wrapper is always installed and does nothing while the variable is unset.
    spec = os.environ.get(KILL_HOOK_VARIABLE)
    if not spec:
        return
    global _matches
    pattern, _, count = spec.rpartition(":")
    if fnmatch.fnmatch(path.name, pattern):
        _matches += 1
        if _matches == int(count):
            os.truncate(tmp, os.path.getsize(tmp) // 2)
            sys.stderr.write(f"test hook: SIGKILL during the write of {path}\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)


def _install() -> None:
    """Replaces gankit.files.atomic_write by a wrapper whose write callback may end in the kill."""
    import gankit.files

    original = gankit.files.atomic_write

    def atomic_write(path, write):
        def write_then_maybe_kill(tmp: str) -> None:
            write(tmp)
            _kill_if_chosen(Path(path), tmp)

        original(path, write_then_maybe_kill)

    # Replaced in the module before anything else of gankit is imported (site runs this file before the
    # program starts): modules that do `from gankit.files import atomic_write`, at import time or lazily
    # in a function, all take the wrapper. Wrapping the callback keeps the original's order of steps
    # (temporary file, write, [kill], fsync, rename) without copying it.
    gankit.files.atomic_write = atomic_write


def _install_rank_exit(spec: str) -> None:
    """Wraps Replica.agreed_signal, which every rank calls once after each generator step."""
    from gankit.training import distributed  # imports torch: only in the children that asked for the exit

    rank_to_exit, exit_step = (int(part) for part in spec.split(":"))
    original = distributed.Replica.agreed_signal

    def agreed_signal(self, signum, step):
        if self.rank == rank_to_exit and step == exit_step:
            sys.stderr.write(f"test hook: rank {self.rank} exits at step {step}\n")
            sys.stderr.flush()
            os._exit(3)
        return original(self, signum, step)

    distributed.Replica.agreed_signal = agreed_signal


_install()
# torchrun's workers inherit their environment at start, so this variable can be read once here.
if os.environ.get(EXIT_HOOK_VARIABLE):
    _install_rank_exit(os.environ[EXIT_HOOK_VARIABLE])
