"""One `gankit train` per run folder: an exclusive lock on RUN/.lock, held for the whole run.

The lock is `flock` on an open file, so the kernel releases it when the process ends, however it
ends: a lock file left behind by a killed run never blocks the next one. The file only tells a
refused run who holds the lock. flock is reliable on local file systems; on NFS it depends on the
server (see docs/reliability.md).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from gankit.errors import GankitError

LOCK_NAME = ".lock"


class RunLock:
    """Context manager: holds RUN/.lock or raises GankitError naming the process that holds it."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        # Under torchrun only rank 0 writes the run folder; the other ranks must not compete for it.
        if int(os.environ.get("RANK", "0")) != 0:
            return self
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise GankitError(f"cannot use {self.run_dir} as a run folder: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise GankitError(
                f"run folder {self.run_dir} is in use by another `gankit train` ({holder}): wait for it to "
                "finish or stop it, or choose another --out; two runs writing one folder would corrupt it"
            ) from None
        except OSError as err:  # a file system without flock
            os.close(fd)
            raise GankitError(f"cannot lock {self.path}: {err.strerror or err}; use a run folder on a local "
                              "file system") from None
        # Who holds it, for the message of a refused run; written after locking, so never by a loser.
        holder = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        try:
            os.ftruncate(fd, 0)
            os.write(fd, holder.encode())
        except OSError:  # only informational: a full disk must not stop the run here
            pass
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the file stays, removing it would race a new locker
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "process unknown"
